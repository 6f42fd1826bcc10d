//! The connection's deadlines and drain, over an in-memory duplex with paused time.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
        ..Limits::default()
    }
}

/// Serves one in-memory connection; the service sleeps `?sleep=<secs>` before answering.
/// The connection drains when the returned sender sends (or is dropped).
fn start() -> (DuplexStream, JoinHandle<Closed>, oneshot::Sender<()>) {
    let (tx, drain) = oneshot::channel();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let edge = Edge::new(limits());
        edge.serve(server, Proto::Sniff, answer, async {
            let _ = drain.await;
        })
        .await
    });
    (client, task, tx)
}

async fn answer(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let secs = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("sleep="))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

async fn get(client: &mut DuplexStream, target: &str) -> String {
    send(client, &format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n")).await
}

/// Writes a raw request and reads until the test service's `ok` body.
async fn send(client: &mut DuplexStream, raw: &str) -> String {
    client.write_all(raw.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok") {
        let n = client.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn ended(task: JoinHandle<Closed>) -> (Closed, Duration) {
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3600), task)
        .await
        .expect("the connection must end")
        .expect("no panic");
    (closed, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_closes_at_the_header_timeout() {
    let (_client, task, _drain) = start();
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::HeaderTimeout);
    assert_eq!(took, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_head_that_never_ends_closes_at_the_header_timeout_even_while_bytes_trickle() {
    let (mut client, task, _drain) = start();
    client
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if client.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::HeaderTimeout);
    assert_eq!(took, Duration::from_secs(10));
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_idles_for_the_idle_timeout_not_the_header_timeout() {
    let (mut client, task, _drain) = start();
    assert!(get(&mut client, "/").await.starts_with("HTTP/1.1 200"));
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::IdleTimeout);
    assert_eq!(took, Duration::from_secs(75));
}

#[tokio::test(start_paused = true)]
async fn the_second_request_head_is_timed_from_its_first_byte() {
    let (mut client, task, _drain) = start();
    get(&mut client, "/").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    client.write_all(b"GET / HT").await.expect("write");
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::HeaderTimeout);
    assert_eq!(took, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_takes_longer_than_every_timeout_is_not_cut() {
    let (mut client, task, _drain) = start();
    let response = get(&mut client, "/?sleep=600").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(!task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_drain_closes_an_idle_connection_after_a_grace_for_a_request_on_its_way() {
    let (mut client, task, tx) = start();
    get(&mut client, "/").await;
    tx.send(()).expect("drain");
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::Drained);
    assert_eq!(took, DRAIN_IDLE_GRACE);
}

#[tokio::test(start_paused = true)]
async fn a_drain_lets_the_request_in_flight_finish_and_says_connection_close() {
    let (mut client, task, tx) = start();
    let response = tokio::spawn(async move { (get(&mut client, "/?sleep=5").await, client) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(()).expect("drain");
    let (response, _client) = response.await.expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    let (closed, _) = ended(task).await;
    assert_eq!(
        closed,
        Closed::Finished,
        "closed after the response, as it said"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_during_the_drain_grace_is_answered_with_connection_close() {
    let (mut client, task, tx) = start();
    get(&mut client, "/").await;
    tx.send(()).expect("drain");
    tokio::time::sleep(DRAIN_IDLE_GRACE / 2).await;
    let response = get(&mut client, "/").await;
    assert!(response.contains("connection: close"), "{response}");
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::Finished);
    assert_eq!(took, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn part_of_the_h2_preface_then_eof_ends_the_connection_at_once() {
    let (mut client, task, _drain) = start();
    client.write_all(b"PRI * HTTP/2").await.expect("write");
    client.shutdown().await.expect("eof");
    drop(client);
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::Finished);
    assert_eq!(took, Duration::ZERO, "no waiting, no polling after EOF");
}

#[tokio::test(start_paused = true)]
async fn an_h2c_connection_is_served_and_idles_out() {
    let (client, task, _drain) = start();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let response = send
        .send_request(
            Request::get("http://a/")
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(response);
    let (closed, _) = ended(task).await;
    assert_eq!(closed, Closed::IdleTimeout);
    conn.abort();
}

#[allow(dead_code)]
fn serve_is_send(edge: &'static Edge, io: DuplexStream) {
    fn send<T: Send>(_: T) {}
    send(edge.serve(io, Proto::Sniff, answer, std::future::pending::<()>()));
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_shorter_than_the_header_timeout_is_met() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let edge = Edge::new(Limits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        });
        edge.serve(server, Proto::Sniff, answer, std::future::pending())
            .await
    });
    let mut client = client;
    get(&mut client, "/").await;
    let (closed, took) = ended(task).await;
    assert_eq!(closed, Closed::IdleTimeout);
    assert_eq!(took, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_unsupported_http_version_gets_505_and_http_1_2_is_served_as_1_1() {
    let (mut client, task, _drain) = start();
    let got = send(&mut client, "GET /v HTTP/1.2\r\nHost: a\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    client
        .write_all(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (mut got, mut buf) = (Vec::new(), [0u8; 1024]);
    loop {
        let n = client.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with(
            "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version\r\n"
        ),
        "{text}"
    );
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        text.ends_with("505 HTTP Version Not Supported: unsupported protocol version"),
        "{text}"
    );
    assert_eq!(ended(task).await.0, Closed::Finished);
}
