//! Pod health, as Knative's activator judges it (contract §4.5): a pod is used once
//! `GET /healthz` with `K-Network-Probe: queue` answers 200 `queue`. A new pod is probed at
//! once, then again every few milliseconds while requests wait for it (Knative waits for a
//! 200 ms tick), every 200 ms otherwise; a healthy pod is not probed again.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Throttler;

/// Knative's probe timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Between rounds while requests wait for a pod, and while none does.
const EAGER: Duration = Duration::from_millis(5);
const IDLE: Duration = Duration::from_millis(200);

/// Probes the throttler's unprobed pods until it is dropped, marking those that pass.
pub async fn keep_probing(throttler: Weak<Throttler>) {
    let Some(wanted) = throttler.upgrade().map(|t| Arc::clone(&t.probe_wanted)) else {
        return;
    };
    loop {
        let Some((pods, waiting)) = throttler.upgrade().map(|t| t.unprobed()) else {
            return;
        };
        if pods.is_empty() {
            wanted.notified().await;
            continue;
        }
        let results = futures_util::future::join_all(pods.iter().map(|&pod| probe(pod))).await;
        let Some(t) = throttler.upgrade() else {
            return;
        };
        for (&pod, ok) in pods.iter().zip(results) {
            if ok {
                t.passed(pod);
            }
        }
        drop(t);
        let pause = if waiting { EAGER } else { IDLE };
        // A new pod is probed at once, not after the pause.
        let _ = tokio::time::timeout(pause, wanted.notified()).await;
    }
}

/// One probe: 200 with the body `queue` within [`PROBE_TIMEOUT`].
pub async fn probe(pod: SocketAddr) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, try_probe(pod))
        .await
        .unwrap_or(false)
}

async fn try_probe(pod: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect(pod).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let req = Request::get("/healthz")
        .header(header::HOST, pod.to_string())
        .header("k-network-probe", "queue")
        .header(header::USER_AGENT, "Knative-Activator-Probe")
        .body(Empty::<Bytes>::new());
    let ok = match req {
        Ok(req) => match send.send_request(req).await {
            Ok(response) if response.status() == StatusCode::OK => response
                .into_body()
                .collect()
                .await
                .is_ok_and(|b| b.to_bytes() == "queue"),
            _ => false,
        },
        Err(_) => false,
    };
    conn.abort();
    ok
}
