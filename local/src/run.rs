//! `knoxy local`'s loop, on a thread of its own: it reads the inputs (again whenever a file
//! changes; a bad file is reported and what runs keeps running), steps the controller each
//! second and at once when the gateway's activator reports demand, and hands each new
//! snapshot to the gateway. It hears the activator as Knative's autoscaler does, over a
//! loopback websocket of `WireStatMessages`, so the gateway runs as it would in a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use knoxy_concurrency::WireStatMessages;
use knoxy_control::derive::Snapshot;
use knoxy_control::kpa::Sample;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::controller::Controller;
use crate::input;

/// What `knoxy local` runs.
pub struct Options {
    /// Service YAML files or directories.
    pub paths: Vec<PathBuf>,
    /// The `knoxy-queue` binary.
    pub queue: PathBuf,
    /// Where bare command names are looked for first.
    pub search: Vec<PathBuf>,
}

/// The running loop.
pub struct Running {
    /// The websocket the gateway reports demand to (`--autoscaler-url`).
    pub autoscaler_url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the loop; `on_snapshot` gets every snapshot that differs from the last.
pub fn start(
    options: Options,
    on_snapshot: impl FnMut(Snapshot) + Send + 'static,
) -> std::io::Result<Running> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("knoxy-local".into())
        .spawn(move || runtime.block_on(run(options, listener, stopped, on_snapshot)))?;
    Ok(Running {
        autoscaler_url: format!("ws://{addr}"),
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Running {
    /// Stops every instance and the loop, and waits for them.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn run(
    options: Options,
    listener: std::net::TcpListener,
    mut stopped: oneshot::Receiver<()>,
    mut on_snapshot: impl FnMut(Snapshot),
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => {
            tokio::spawn(hear_activators(listener, tx));
        }
        Err(e) => eprintln!("knoxy local: the autoscaler socket: {e}"),
    }
    let mut controller = Controller::new(options.queue.clone(), options.search.clone());
    let started = Instant::now();
    let mut stamps = BTreeMap::new();
    let mut last: Option<Snapshot> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
            Some(first) = rx.recv() => reported.push(first),
        }
        while let Ok(more) = rx.try_recv() {
            reported.push(more);
        }
        let now = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let current = stamps_of(&options.paths);
        if current != stamps {
            stamps = current;
            let read = input::read(&options.paths);
            for e in &read.errors {
                eprintln!("knoxy local: {e} (what runs keeps running)");
            }
            controller.load(read, now);
            for (service, e) in &controller.service_errors {
                eprintln!("knoxy local: Service {service}: {e}");
            }
        }
        controller.step(now, &reported);
        reported.clear();
        let (snapshot, _traffic) = controller.snapshot();
        if last.as_ref() != Some(&snapshot) {
            on_snapshot(snapshot.clone());
            last = Some(snapshot);
        }
    }
    controller.shutdown();
}

/// Accepts the gateway's stat websockets; each message becomes (revision key, sample).
async fn hear_activators(
    listener: tokio::net::TcpListener,
    tx: mpsc::UnboundedSender<(String, Sample)>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Binary(bytes) = frame else {
                    continue;
                };
                let Ok(batch) = WireStatMessages::decode(bytes) else {
                    continue;
                };
                for m in batch.messages {
                    let Some(stat) = m.stat else { continue };
                    let sample = Sample {
                        average_concurrent_requests: stat.average_concurrent_requests,
                        average_proxied_concurrent_requests: stat
                            .average_proxied_concurrent_requests,
                        request_count: stat.request_count,
                        proxied_request_count: stat.proxied_request_count,
                    };
                    let _ = tx.send((format!("{}/{}", m.namespace, m.name), sample));
                }
            }
        });
    }
}

/// Each input file's modification time: a change in any means reading again.
fn stamps_of(paths: &[PathBuf]) -> BTreeMap<PathBuf, Option<SystemTime>> {
    let mut out = BTreeMap::new();
    for path in paths {
        let files = std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_else(|_| vec![path.clone()]);
        for f in files {
            let stamp = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            out.insert(f, stamp);
        }
    }
    out
}

/// For tests: the socket address of a `ws://` URL.
pub fn socket_of(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("ws://")?.parse().ok()
}
