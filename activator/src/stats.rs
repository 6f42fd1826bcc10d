//! Demand to Knative's autoscaler (contract §4.9): the throttlers' messages go out as
//! protobuf `WireStatMessages` in binary websocket frames, over one connection that is
//! dialled again with backoff whenever it drops. Nothing here ever makes a request wait:
//! a frame that finds the outbox full, or no connection, is dropped (as Knative's are).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use knoxy_concurrency::{WireStatMessage, WireStatMessages};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Knative's autoscaler, as the activator finds it in a cluster.
pub const DEFAULT_AUTOSCALER_URL: &str = "ws://autoscaler.knative-serving.svc.cluster.local:8080";
/// How often the throttlers' windows are closed into a batch (Knative's `reportInterval`).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Knative's websocket dial: a 3 s handshake, then 100 ms × 1.3 backoff (jittered), forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Frames waiting for the connection; more are dropped.
const OUTBOX: usize = 64;
/// A ping keeps the connection known to be alive (Knative pings every 10 s / 3).
const PING_EVERY: Duration = Duration::from_millis(3333);

/// Where throttlers put their messages; cheap to clone, never blocks.
#[derive(Clone)]
pub struct StatSink {
    pod_name: Arc<str>,
    outbox: mpsc::Sender<Bytes>,
}

/// The receiving end of a [`StatSink`], for [`run`].
pub struct Outbox(mpsc::Receiver<Bytes>);

impl Outbox {
    /// The next frame queued, if any (for tests).
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.0.try_recv().ok()
    }
}

impl StatSink {
    /// A sink whose messages name `pod_name` (this gateway's pod) as the reporter.
    pub fn new(pod_name: &str) -> (StatSink, Outbox) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let sink = StatSink {
            pod_name: pod_name.into(),
            outbox: tx,
        };
        (sink, Outbox(rx))
    }

    pub fn pod_name(&self) -> &str {
        &self.pod_name
    }

    /// Queues one frame of `messages`; dropped when the outbox is full or closed.
    pub fn send(&self, messages: Vec<WireStatMessage>) {
        if messages.is_empty() {
            return;
        }
        let frame = WireStatMessages { messages }.encode_to_vec();
        let _ = self.outbox.try_send(Bytes::from(frame));
    }
}

/// Keeps a websocket to `url` and sends the outbox's frames on it, until the sinks are
/// gone. It first dials when there is a first frame to send (a gateway that is nobody's
/// activator never dials), then keeps the connection. `connected` says whether it is up.
pub async fn run(url: String, mut outbox: Outbox, connected: Arc<AtomicBool>) {
    let Some(first) = outbox.0.recv().await else {
        return;
    };
    let mut pending = Some(first);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let dial = tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(&url));
        let socket = match dial.await {
            Ok(Ok((socket, _))) => socket,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "handshake timed out".to_owned(),
                };
                if backoff == BACKOFF_FIRST {
                    eprintln!("knoxy: autoscaler {url}: {why}; retrying");
                }
                // Frames of the time without a connection are stale: drop them.
                pending = None;
                while outbox.0.try_recv().is_ok() {}
                let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
                tokio::time::sleep(backoff + jitter).await;
                backoff = backoff.mul_f64(1.3).min(BACKOFF_MAX);
                if outbox.0.is_closed() {
                    return;
                }
                continue;
            }
        };
        connected.store(true, Ordering::Release);
        eprintln!("knoxy: autoscaler {url}: connected");
        backoff = BACKOFF_FIRST;
        let (mut tx, mut rx) = socket.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        if let Some(frame) = pending.take() {
            let _ = tx.send(Message::Binary(frame)).await;
        }
        let ended = loop {
            tokio::select! {
                frame = outbox.0.recv() => match frame {
                    Some(frame) => {
                        if let Err(e) = tx.send(Message::Binary(frame)).await {
                            break Some(e.to_string());
                        }
                    }
                    None => break None,
                },
                _ = ping.tick() => {
                    if let Err(e) = tx.send(Message::Ping(Bytes::new())).await {
                        break Some(e.to_string());
                    }
                }
                // The autoscaler sends nothing but control frames; a close or an error ends it.
                incoming = rx.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None => break Some("closed by the autoscaler".to_owned()),
                    Some(Err(e)) => break Some(e.to_string()),
                    Some(Ok(_)) => {}
                },
            }
        };
        connected.store(false, Ordering::Release);
        match ended {
            Some(why) => eprintln!("knoxy: autoscaler {url}: {why}; reconnecting"),
            None => return,
        }
    }
}
