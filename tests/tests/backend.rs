//! Tests of the test backend itself, started as a real process through the harness.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::uri::PathAndQuery;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use knoxy_tests::grpc::{
    HealthCheckRequest, HealthCheckResponse, PingReply, PingRequest, ServingStatus,
};
use knoxy_tests::{
    backend, backend_stats, empty, fetch, full, get, get_h2c, h2c_client, http1_client, json, post,
    request, send, within, within_for, BoxError, Proc,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// Polls `/-/stats` until `check` accepts it, returning that document.
async fn stats_until(backend: &Proc, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = backend_stats(backend).await;
        if check(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}; last stats: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn grpc_client(addr: SocketAddr) -> Grpc<Channel> {
    let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
    let channel = within("gRPC connect", endpoint.connect()).await.unwrap();
    Grpc::new(channel)
}

async fn health_check(grpc: &mut Grpc<Channel>) -> ServingStatus {
    within("gRPC ready", grpc.ready()).await.unwrap();
    let response: tonic::Response<HealthCheckResponse> = within(
        "health Check",
        grpc.unary(
            tonic::Request::new(HealthCheckRequest::default()),
            PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            ProstCodec::default(),
        ),
    )
    .await
    .unwrap();
    ServingStatus::try_from(response.into_inner().status).unwrap()
}

#[tokio::test]
async fn json_echo_describes_an_http1_request() {
    let backend = backend();
    let req = Request::builder()
        .method(Method::POST)
        .uri(backend.url("backend", "/some/path?a=1"))
        .header("x-test", "one")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(full("hello"))
        .unwrap();
    let (status, headers, body) = fetch(&http1_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let echo = json(&body);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/some/path?a=1");
    assert_eq!(echo["proto"], "HTTP/1.1");
    assert_eq!(echo["host"], backend.addr("backend").to_string());
    assert_eq!(echo["headers"]["x-test"], json!(["one"]));
    assert_eq!(echo["headers"]["x-multi"], json!(["a", "b"]));
    assert_eq!(echo["body_bytes"], 5);
}

#[tokio::test]
async fn json_echo_reports_http2_over_h2c() {
    let backend = backend();
    let (status, _, body) = get_h2c(&backend.url("backend", "/h2?x=y")).await;
    assert_eq!(status, StatusCode::OK);
    let echo = json(&body);
    assert_eq!(echo["proto"], "HTTP/2.0");
    assert_eq!(echo["uri"], "/h2?x=y");
    assert_eq!(echo["host"], backend.addr("backend").to_string());
    assert_eq!(echo["body_bytes"], 0);
}

#[tokio::test]
async fn sleep_delays_the_response() {
    let backend = backend();
    let start = Instant::now();
    let (status, _, _) = get(&backend.url("backend", "/?sleep=300")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn status_parameter_sets_the_response_status() {
    let backend = backend();
    let (status, _, body) = get(&backend.url("backend", "/?status=418")).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(json(&body)["method"], "GET");
    let (status, _, body) = get(&backend.url("backend", "/?status=204")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, "");
    let (status, _, _) = get(&backend.url("backend", "/?status=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn streamed_chunks_arrive_spaced_in_time() {
    let backend = backend();
    let client = http1_client();
    let response = send(
        &client,
        request(
            Method::GET,
            &backend.url("backend", "/?stream=1&n=3&gap=500"),
            empty(),
        ),
    )
    .await;
    let start = Instant::now();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = String::new();
    let mut first_chunk_at = None;
    while let Some(frame) = within("next chunk", body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            received.push_str(std::str::from_utf8(&data).unwrap());
            if first_chunk_at.is_none() && received.contains("chunk0\n") {
                first_chunk_at = Some(start.elapsed());
            }
        }
    }
    let total = start.elapsed();
    assert_eq!(received, "chunk0\nchunk1\nchunk2\n");
    let first = first_chunk_at.unwrap();
    // The last chunk leaves 1 s after the headers; the first must not wait for it.
    assert!(
        first < Duration::from_millis(600),
        "first chunk after {first:?}"
    );
    assert!(
        total >= Duration::from_millis(900),
        "all chunks after {total:?}"
    );
}

#[tokio::test]
async fn server_sent_events_are_streamed() {
    let backend = backend();
    let (status, headers, body) = get(&backend.url("backend", "/?sse=1&n=3&gap=10")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
}

#[tokio::test]
async fn generated_bodies_have_the_requested_length() {
    let backend = backend();
    let (status, headers, body) = get(&backend.url("backend", "/?bytes=200000")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::CONTENT_LENGTH).is_none(), "{headers:?}");
    assert_eq!(body.len(), 200_000);

    let (status, headers, body) = get(&backend.url("backend", "/?size=150000")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "150000");
    assert_eq!(body.len(), 150_000);
}

#[tokio::test]
async fn text_parameter_is_answered_literally() {
    let backend = backend();
    let (status, headers, body) = get(&backend.url("backend", "/?text=Hello%2C%20World!")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(body, "Hello, World!");
}

#[tokio::test]
async fn health_switch_drives_healthz_and_probes_are_recorded() {
    let backend = backend();
    let healthz = backend.url("backend", "/healthz");
    let (status, _, body) = get(&healthz).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

    let (status, _, _) = post(&backend.url("backend", "/-/health?status=503"), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&healthz).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let probe = Request::builder()
        .uri(backend.url("backend", "/ready"))
        .header(header::USER_AGENT, "kube-probe/1.30")
        .header("k-network-probe", "queue")
        .body(empty())
        .unwrap();
    fetch(&h2c_client(), probe).await;

    let stats = backend_stats(&backend).await;
    assert_eq!(stats["requests"], 3, "{stats}");
    let probes = stats["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 3, "{stats}");
    assert_eq!(probes[0]["path"], "/healthz");
    assert_eq!(probes[0]["proto"], "HTTP/1.1");
    assert_eq!(probes[2]["path"], "/ready");
    assert_eq!(probes[2]["proto"], "HTTP/2.0");
    assert_eq!(probes[2]["headers"]["k-network-probe"], json!(["queue"]));

    let (status, _, _) = post(&backend.url("backend", "/-/reset"), "").await;
    assert_eq!(status, StatusCode::OK);
    let stats = backend_stats(&backend).await;
    assert_eq!(stats["requests"], 0, "{stats}");
    assert_eq!(stats["probes"], json!([]), "{stats}");
}

#[tokio::test]
async fn network_probes_are_answered_with_their_hash_as_knatives_images_do() {
    let backend = backend();
    let client = http1_client();
    let probe = |hash: Option<&str>| {
        let mut req = Request::builder()
            .uri(backend.url("backend", "/any/path"))
            .header("k-network-probe", "probe");
        if let Some(hash) = hash {
            req = req.header("k-network-hash", hash);
        }
        req.body(empty()).unwrap()
    };

    let (status, headers, body) = fetch(&client, probe(Some("abc123"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["k-network-hash"], "abc123");
    assert_eq!(body, "", "a probe is not echoed");
    for hash in [None, Some("")] {
        let (status, headers, body) = fetch(&client, probe(hash)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "hash {hash:?}");
        assert!(headers.get("k-network-hash").is_none());
        assert_eq!(
            body,
            "a probe request must contain a non-empty \"K-Network-Hash\" header\n"
        );
    }

    // Any other request: the hash is taken off before the application sees it.
    let other = Request::builder()
        .uri(backend.url("backend", "/"))
        .header("k-network-probe", "queue")
        .header("k-network-hash", "abc123")
        .body(empty())
        .unwrap();
    let (status, headers, body) = fetch(&client, other).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("k-network-hash").is_none(), "{headers:?}");
    let echo = json(&body);
    assert_eq!(echo["headers"]["k-network-probe"], json!(["queue"]));
    assert!(echo["headers"].get("k-network-hash").is_none(), "{echo}");

    let stats = backend_stats(&backend).await;
    let probes = stats["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 3, "the network probes are recorded: {stats}");
    assert_eq!(probes[0]["path"], "/any/path");
    assert_eq!(probes[0]["headers"]["k-network-hash"], json!(["abc123"]));
}

#[tokio::test]
async fn pause_sends_the_head_then_holds_the_body_back() {
    let backend = backend();
    for client in [http1_client(), h2c_client()] {
        let start = Instant::now();
        let response = send(
            &client,
            request(
                Method::GET,
                &backend.url("backend", "/?pause=1000"),
                empty(),
            ),
        )
        .await;
        let head = start.elapsed();
        assert_eq!(response.status(), StatusCode::OK);
        let body = within("the paused body", response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let total = start.elapsed();
        assert_eq!(json(std::str::from_utf8(&body).unwrap())["method"], "GET");
        assert!(head < Duration::from_millis(500), "head after {head:?}");
        assert!(total >= Duration::from_millis(1000), "body after {total:?}");
    }
}

#[tokio::test]
async fn peak_in_flight_counts_concurrent_requests() {
    let backend = backend();
    get(&backend.url("backend", "/warm-up")).await;
    post(&backend.url("backend", "/-/reset"), "").await;

    let client = http1_client();
    let url = backend.url("backend", "/?sleep=1500");
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { fetch(&client, request(Method::GET, &url, empty())).await })
        })
        .collect();
    stats_until(&backend, "5 requests in flight", |s| s["in_flight"] == 5).await;
    for task in tasks {
        let (status, _, _) = within("sleeping request", task).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let stats = stats_until(&backend, "no request in flight", |s| s["in_flight"] == 0).await;
    assert_eq!(stats["peak_in_flight"], 5, "{stats}");
    assert_eq!(stats["requests"], 5, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_is_counted_in_bounded_memory() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let backend = backend();
    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    let chunks = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    let upload = request(
        Method::PUT,
        &backend.url("backend", "/upload"),
        StreamBody::new(chunks).boxed_unsync(),
    );
    let (status, _, body) = within_for(
        Duration::from_secs(60),
        "1 GiB upload",
        fetch(&http1_client(), upload),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["body_bytes"], CHUNK * CHUNKS);

    let status = std::fs::read_to_string(format!("/proc/{}/status", backend.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 128 * 1024, "backend peaked at {peak_kib} KiB");
}

#[tokio::test]
async fn websocket_messages_are_echoed() {
    let backend = backend();
    let url = format!("ws://{}/socket", backend.addr("backend"));
    let (mut socket, response) =
        within("WebSocket handshake", tokio_tungstenite::connect_async(url))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    within("send text", socket.send(Message::text("hello")))
        .await
        .unwrap();
    let echoed = within("text echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello"));

    within("send binary", socket.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .unwrap();
    let echoed = within("binary echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(vec![1u8, 2, 3]));

    // An open socket is a request in flight until it closes.
    stats_until(&backend, "open socket in flight", |s| s["in_flight"] == 1).await;
    within("close", socket.close(None)).await.unwrap();
    stats_until(&backend, "closed socket done", |s| s["in_flight"] == 0).await;
}

#[tokio::test]
async fn grpc_unary_ping_replies_pong() {
    let backend = backend();
    let mut grpc = grpc_client(backend.addr("backend")).await;
    within("gRPC ready", grpc.ready()).await.unwrap();
    let response: tonic::Response<PingReply> = within(
        "Ping",
        grpc.unary(
            tonic::Request::new(PingRequest {
                message: "hi".to_owned(),
            }),
            PathAndQuery::from_static("/knoxy.test.Ping/Ping"),
            ProstCodec::default(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.into_inner().message, "pong: hi");
}

#[tokio::test]
async fn grpc_bidi_stream_answers_each_message_before_the_next_is_sent() {
    let backend = backend();
    let endpoint = Channel::from_shared(format!("http://{}", backend.addr("backend"))).unwrap();
    let mut stream = common::PingStream::open(endpoint).await;
    for i in 0..3 {
        assert_eq!(
            stream.round_trip(&format!("m{i}")).await,
            format!("pong: m{i}")
        );
    }
    stream.finish().await;
}

#[tokio::test]
async fn grpc_health_check_follows_the_health_switch() {
    let backend = backend();
    let mut grpc = grpc_client(backend.addr("backend")).await;
    assert_eq!(health_check(&mut grpc).await, ServingStatus::Serving);
    post(&backend.url("backend", "/-/health?status=500"), "").await;
    assert_eq!(health_check(&mut grpc).await, ServingStatus::NotServing);
    post(&backend.url("backend", "/-/health?status=200"), "").await;
    assert_eq!(health_check(&mut grpc).await, ServingStatus::Serving);
}

#[tokio::test]
async fn unknown_grpc_method_is_unimplemented() {
    let backend = backend();
    let mut grpc = grpc_client(backend.addr("backend")).await;
    within("gRPC ready", grpc.ready()).await.unwrap();
    let status = within(
        "unknown method",
        grpc.unary(
            tonic::Request::new(PingRequest::default()),
            PathAndQuery::from_static("/knoxy.test.Ping/Nope"),
            ProstCodec::<PingRequest, PingReply>::default(),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
}

#[test]
fn bad_arguments_exit_with_usage() {
    let (status, _, stderr) = Proc::builder("knoxy-testbackend")
        .arg("--bogus")
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("usage:"), "{stderr}");
}
