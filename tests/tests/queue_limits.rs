//! knoxy-queue's limits: the breaker (contract §4) and the revision timeouts (§5).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use http::{Method, StatusCode};
use knoxy_tests::{
    backend, backend_stats, empty, fetch, get, h2c_client, http1_client, queue, request_with,
    within, within_for, Proc,
};

fn start(env: &[(&str, &str)]) -> (Proc, Proc) {
    let b = backend();
    let mut builder = queue(b.addr("backend").port());
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    (b, builder.spawn())
}

/// Fires `n` concurrent GETs and returns (status, body, seconds from start) sorted by finish time.
async fn concurrent(url: &str, n: usize) -> Vec<(StatusCode, String, f64)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let (status, _, body) = get(&url).await;
                (status, body, started.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            within_for(Duration::from_secs(30), "concurrent request", t)
                .await
                .unwrap(),
        );
    }
    out.sort_by(|a, b| a.2.total_cmp(&b.2));
    out
}

#[tokio::test]
async fn with_cc_one_two_slow_requests_are_served_one_after_the_other() {
    let (b, q) = start(&[("CONTAINER_CONCURRENCY", "1")]);
    let results = concurrent(&q.url("main", "/?sleep=500"), 2).await;
    assert!(results.iter().all(|r| r.0 == StatusCode::OK), "{results:?}");
    assert!(
        results[1].2 >= 0.95,
        "the second waited for the first: {results:?}"
    );
    assert_eq!(backend_stats(&b).await["peak_in_flight"], 1);
}

#[tokio::test]
async fn beyond_eleven_times_cc_requests_overflow_at_once() {
    let (b, q) = start(&[("CONTAINER_CONCURRENCY", "1")]);
    let results = concurrent(&q.url("main", "/?sleep=300"), 14).await;
    let overflow: Vec<_> = results
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!((ok, overflow.len()), (11, 3), "{results:?}");
    assert!(
        overflow
            .iter()
            .all(|r| r.1 == "pending request queue full\n" && r.2 < 0.3),
        "{overflow:?}"
    );
    assert_eq!(backend_stats(&b).await["peak_in_flight"], 1);
}

#[tokio::test]
async fn cc_zero_means_no_limit() {
    let (b, q) = start(&[("CONTAINER_CONCURRENCY", "0")]);
    let results = concurrent(&q.url("main", "/?sleep=500"), 14).await;
    assert!(results.iter().all(|r| r.0 == StatusCode::OK), "{results:?}");
    assert_eq!(backend_stats(&b).await["peak_in_flight"], 14);
}

#[tokio::test]
async fn cc_n_caps_in_flight_at_n() {
    let (b, q) = start(&[("CONTAINER_CONCURRENCY", "3")]);
    let results = concurrent(&q.url("main", "/?sleep=200"), 12).await;
    assert!(results.iter().all(|r| r.0 == StatusCode::OK), "{results:?}");
    assert_eq!(backend_stats(&b).await["peak_in_flight"], 3);
}

#[tokio::test]
async fn revision_timeout_answers_504_request_timeout() {
    let (_b, q) = start(&[("REVISION_TIMEOUT_SECONDS", "1")]);
    let started = Instant::now();
    let (status, headers, body) = get(&q.url("main", "/?sleep=3000")).await;
    let took = started.elapsed();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "request timeout")
    );
    assert_eq!(headers["content-length"], "15");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[tokio::test]
async fn revision_timeout_cuts_a_started_response_and_appends_the_message() {
    let (_b, q) = start(&[("REVISION_TIMEOUT_SECONDS", "2")]);
    let url = q.url("main", "/?stream=1&n=10&gap=700");
    for client in [http1_client(), h2c_client()] {
        let started = Instant::now();
        let (status, _, body) = fetch(&client, request_with(Method::GET, &url, &[], empty())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "chunk0\nchunk1\nchunk2\nrequest timeout");
        assert!(
            started.elapsed() < Duration::from_millis(2700),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn response_start_timeout_only_applies_before_the_headers() {
    let (_b, q) = start(&[("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "1")]);
    let started = Instant::now();
    let (status, _, body) = get(&q.url("main", "/?sleep=1500")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "request timeout")
    );
    assert!(started.elapsed() < Duration::from_millis(1450));
    let (status, _, body) = get(&q.url("main", "/?stream=1&n=2&gap=1500")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "chunk0\nchunk1\n")
    );
}

#[tokio::test]
async fn idle_timeout_fires_without_writes_before_and_after_the_headers() {
    let (_b, q) = start(&[("REVISION_IDLE_TIMEOUT_SECONDS", "1")]);
    let (status, _, body) = get(&q.url("main", "/?sleep=2000")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "request timeout")
    );
    let (status, _, body) = get(&q.url("main", "/?stream=1&n=3&gap=1500")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "chunk0\nrequest timeout")
    );
    // Writes closer together than the idle timeout keep the response alive.
    let (status, _, body) = get(&q.url("main", "/?stream=1&n=4&gap=400")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "chunk0\nchunk1\nchunk2\nchunk3\n")
    );
}

#[tokio::test]
async fn zero_revision_timeout_fails_every_request() {
    let (b, q) = start(&[("REVISION_TIMEOUT_SECONDS", "0")]);
    let (status, _, body) = get(&q.url("main", "/")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "request timeout")
    );
    assert_eq!(backend_stats(&b).await["requests"], 0);
}

#[tokio::test]
async fn time_waiting_in_the_breaker_counts_against_the_timeout() {
    let (_b, q) = start(&[
        ("CONTAINER_CONCURRENCY", "1"),
        ("REVISION_TIMEOUT_SECONDS", "3"),
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "1"),
    ]);
    // The first response starts at once and streams for 2 s, holding the only slot.
    let first = tokio::spawn({
        let url = q.url("main", "/?stream=1&n=5&gap=500");
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, _, body) = get(&q.url("main", "/")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "request timeout")
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    let (status, _, body) = within("first request", first).await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n")
    );
}

#[tokio::test]
async fn websocket_tunnels_close_at_the_revision_timeout() {
    let (_b, q) = start(&[("REVISION_TIMEOUT_SECONDS", "1")]);
    let url = format!("ws://{}/ws", q.addr("main"));
    let (mut ws, _) = within("handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    let started = Instant::now();
    // The stream ends (or errors) when the queue cuts the tunnel.
    loop {
        match within_for(Duration::from_secs(5), "tunnel close", ws.next()).await {
            None | Some(Err(_)) => break,
            Some(Ok(m)) if m.is_close() => break,
            Some(Ok(_)) => {}
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "tunnel lived {took:?}");
}

/// User+system CPU seconds the process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test]
async fn part_of_an_h2_preface_then_eof_is_closed_at_once_without_spinning() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_b, q) = start(&[]);
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(q.addr("main"))
            .await
            .unwrap();
        c.write_all(b"PRI * HTTP/2").await.unwrap();
        c.shutdown().await.unwrap();
        held.push(c);
    }
    let before = cpu_seconds(q.pid());
    for c in &mut held {
        let mut buf = [0u8; 64];
        let n = within("the queue to close after the EOF", c.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "closed without an answer: {n:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_seconds(q.pid()) - before;
    // Busy-polling the 100 half-open connections cost ~0.2 CPU-s per 2 s (0.9 per 10 s).
    assert!(
        used < 0.1,
        "the queue used {used:.2} CPU-s on closed connections"
    );
}
