//! knoxy-queue as a proxy (contract §3.3, §3.4): what the user container sees, protocols
//! end to end (HTTP/1.1, h2c, WebSocket, gRPC), streaming both ways, and upstream errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use knoxy_tests::grpc::{PingReply, PingRequest};
use knoxy_tests::{
    backend, closed_port, empty, fetch, get, get_h2c, h2c_client, http1_client, json, peak_rss_kib,
    queue, request_with, send, within, within_for, BoxError, Proc,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn start() -> (Proc, Proc) {
    let b = backend();
    let q = queue(b.addr("backend").port()).spawn();
    (b, q)
}

async fn echo(q: &Proc, path: &str, headers: &[(&str, &str)]) -> Value {
    let (status, _, body) = fetch(
        &http1_client(),
        request_with(Method::GET, &q.url("main", path), headers, empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    json(&body)
}

#[tokio::test]
async fn http1_request_reaches_the_user_with_host_uri_and_forwarded_for() {
    let (_b, q) = start();
    let seen = echo(
        &q,
        "/foo?x=1",
        &[("host", "example.com"), ("user-agent", "curl/8")],
    )
    .await;
    assert_eq!(seen["host"], "example.com");
    assert_eq!(seen["uri"], "/foo?x=1");
    assert_eq!(seen["proto"], "HTTP/1.1");
    assert_eq!(seen["headers"]["user-agent"][0], "curl/8");
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "127.0.0.1");
}

#[tokio::test]
async fn h2c_request_goes_upstream_as_h2c() {
    let (_b, q) = start();
    let (status, _, body) = get_h2c(&q.url("main", "/h2?y=2")).await;
    assert_eq!(status, StatusCode::OK);
    let seen = json(&body);
    assert_eq!(seen["proto"], "HTTP/2.0");
    assert_eq!(seen["uri"], "/h2?y=2");
    assert_eq!(seen["host"], q.addr("main").to_string());
}

#[tokio::test]
async fn original_host_replaces_the_host_and_is_removed() {
    let (_b, q) = start();
    let seen = echo(&q, "/", &[("k-original-host", "orig.example.com")]).await;
    assert_eq!(seen["host"], "orig.example.com");
    assert!(seen["headers"].get("k-original-host").is_none(), "{seen}");
    let req = request_with(
        Method::GET,
        &q.url("main", "/"),
        &[("k-original-host", "orig.example.com")],
        empty(),
    );
    let (_, _, body) = fetch(&h2c_client(), req).await;
    assert_eq!(json(&body)["host"], "orig.example.com");
}

#[tokio::test]
async fn internal_headers_are_stripped_and_routing_headers_kept() {
    let (_b, q) = start();
    let seen = echo(
        &q,
        "/",
        &[
            ("knative-serving-revision", "r"),
            ("knative-serving-namespace", "n"),
            ("k-proxy-request", "activator"),
            ("knative-serving-tag", "blue"),
            ("knative-serving-default-route", "true"),
        ],
    )
    .await;
    let h = &seen["headers"];
    assert!(
        h.get("knative-serving-revision").is_none() && h.get("knative-serving-namespace").is_none(),
        "{h}"
    );
    assert_eq!(h["k-proxy-request"][0], "activator");
    assert_eq!(h["knative-serving-tag"][0], "blue");
    assert_eq!(h["knative-serving-default-route"][0], "true");
}

#[tokio::test]
async fn forwarded_is_derived_from_x_forwarded_headers_and_the_peer_appended() {
    let (_b, q) = start();
    let seen = echo(
        &q,
        "/",
        &[
            ("x-forwarded-for", "1.2.3.4, 2001:db8::1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "fw.example"),
        ],
    )
    .await;
    assert_eq!(
        seen["headers"]["forwarded"][0],
        "for=1.2.3.4;host=fw.example;proto=https, for=\"[2001:db8::1]\""
    );
    assert_eq!(
        seen["headers"]["x-forwarded-for"][0],
        "1.2.3.4, 2001:db8::1, 127.0.0.1"
    );
    let seen = echo(&q, "/", &[("x-forwarded-proto", "http")]).await;
    assert_eq!(seen["headers"]["forwarded"][0], "proto=http");
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_b, q) = start();
    let seen = echo(
        &q,
        "/",
        &[
            ("connection", "keep-alive, X-Hop"),
            ("x-hop", "1"),
            ("proxy-authorization", "x"),
            ("te", "trailers"),
        ],
    )
    .await;
    let h = &seen["headers"];
    assert!(
        h.get("x-hop").is_none() && h.get("proxy-authorization").is_none(),
        "{h}"
    );
    assert_eq!(h["te"][0], "trailers");
}

#[tokio::test]
async fn trace_headers_pass_through_unchanged() {
    let (_b, q) = start();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen = echo(
        &q,
        "/",
        &[
            ("traceparent", tp),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("b3", "1-2-1"),
        ],
    )
    .await;
    let h = &seen["headers"];
    assert_eq!(h["traceparent"][0], tp);
    assert_eq!(h["x-b3-traceid"][0], "463ac35c9f6413ad");
    assert_eq!(h["x-b3-spanid"][0], "a2fb4a1d1a96d312");
    assert_eq!(h["b3"][0], "1-2-1");
}

#[tokio::test]
async fn refused_user_port_gives_a_prompt_502_in_gos_words() {
    let port = closed_port();
    let q = queue(port).spawn();
    let started = Instant::now();
    let (status, headers, body) = get(&q.url("main", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        format!("dial tcp 127.0.0.1:{port}: connect: connection refused\n")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a refusal is not retried"
    );
}

#[tokio::test]
async fn user_status_codes_and_bodies_pass_through() {
    let (_b, q) = start();
    let (status, _, body) = get(&q.url("main", "/?status=418&text=teapot")).await;
    assert_eq!((status, body.as_str()), (StatusCode::IM_A_TEAPOT, "teapot"));
}

#[tokio::test]
async fn upstream_connections_are_reused_across_requests() {
    let (_b, q) = start();
    let first = echo(&q, "/", &[]).await["remote_addr"].clone();
    for _ in 0..5 {
        assert_eq!(
            echo(&q, "/", &[]).await["remote_addr"],
            first,
            "sequential requests share one pooled connection"
        );
    }
}

/// Reads a streamed response, returning each chunk with the time it arrived.
async fn timed_chunks(q: &Proc, path: &str, h2: bool) -> (StatusCode, Vec<(Instant, Bytes)>) {
    let client = if h2 { h2c_client() } else { http1_client() };
    let response = send(
        &client,
        request_with(Method::GET, &q.url("main", path), &[], empty()),
    )
    .await;
    let status = response.status();
    let mut body = response.into_body();
    let mut chunks = Vec::new();
    while let Some(frame) = within("next chunk", body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            chunks.push((Instant::now(), data));
        }
    }
    (status, chunks)
}

#[tokio::test]
async fn chunks_are_relayed_as_they_arrive_over_http1_and_h2c() {
    let (_b, q) = start();
    for h2 in [false, true] {
        let started = Instant::now();
        let (status, chunks) = timed_chunks(&q, "/?stream=1&n=4&gap=400", h2).await;
        assert_eq!(status, StatusCode::OK);
        let text: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
        assert_eq!(text, b"chunk0\nchunk1\nchunk2\nchunk3\n");
        let first = chunks.first().unwrap().0.duration_since(started);
        let last = chunks.last().unwrap().0.duration_since(started);
        assert!(
            last - first >= Duration::from_millis(1000),
            "h2={h2}: chunks were buffered: first {first:?} last {last:?}"
        );
    }
}

#[tokio::test]
async fn server_sent_events_are_flushed_one_by_one() {
    let (_b, q) = start();
    let (status, chunks) = timed_chunks(&q, "/?sse=1&n=3&gap=400", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(chunks.len() >= 3, "events arrived together: {chunks:?}");
    assert!(chunks.last().unwrap().0.duration_since(chunks[0].0) >= Duration::from_millis(600));
}

#[tokio::test]
async fn a_one_gib_upload_streams_through_in_bounded_memory() {
    let (_b, q) = start();
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone()))),
    );
    let body = http_body_util::BodyExt::boxed_unsync(StreamBody::new(stream));
    let req = request_with(Method::POST, &q.url("main", "/upload"), &[], body);
    let (status, _, text) = within_for(
        Duration::from_secs(120),
        "1 GiB upload",
        fetch(&http1_client(), req),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&text)["body_bytes"], (CHUNK * CHUNKS) as u64);
    let peak = peak_rss_kib(q.pid());
    assert!(
        peak < 64 * 1024,
        "knoxy-queue peaked at {peak} KiB while relaying 1 GiB"
    );
}

#[tokio::test]
async fn a_large_download_streams_through_in_bounded_memory() {
    let (_b, q) = start();
    let (status, chunks) = timed_chunks(&q, "/?bytes=268435456", false).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        chunks.iter().map(|(_, c)| c.len()).sum::<usize>(),
        268_435_456
    );
    let peak = peak_rss_kib(q.pid());
    assert!(
        peak < 64 * 1024,
        "knoxy-queue peaked at {peak} KiB while relaying 256 MiB"
    );
}

#[tokio::test]
async fn websocket_messages_pass_through_both_ways() {
    let (_b, q) = start();
    let url = format!("ws://{}/ws", q.addr("main"));
    let (mut ws, response) = within("websocket handshake", tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "knative"] {
        within("send", ws.send(Message::text(text))).await.unwrap();
        let reply = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(reply, Message::text(text));
    }
    within("send binary", ws.send(Message::binary(vec![1u8, 2, 3])))
        .await
        .unwrap();
    assert_eq!(
        within("binary echo", ws.next()).await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    within("close", ws.close(None)).await.unwrap();
}

#[tokio::test]
async fn grpc_unary_and_bidirectional_streams_pass_through_h2c() {
    let (_b, q) = start();
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", q.addr("main"))).unwrap();
    assert_eq!(common::ping(channel.clone(), "hi").await, "pong: hi");
    let mut grpc =
        tonic::client::Grpc::new(within("gRPC connect", channel.connect()).await.unwrap());

    // Each reply must arrive before the next message is sent: nothing is buffered.
    let (tx, rx) = tokio::sync::mpsc::channel::<PingRequest>(1);
    within("ready", grpc.ready()).await.unwrap();
    let response: tonic::Response<tonic::Streaming<PingReply>> = within(
        "open PingStream",
        grpc.streaming(
            tonic::Request::new(tokio_stream_from(rx)),
            PathAndQuery::from_static("/knoxy.test.Ping/PingStream"),
            tonic_prost::ProstCodec::default(),
        ),
    )
    .await
    .unwrap();
    let mut replies = response.into_inner();
    for i in 0..3 {
        tx.send(PingRequest {
            message: format!("m{i}"),
        })
        .await
        .unwrap();
        let reply = within("stream reply", replies.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.message, format!("pong: m{i}"));
    }
    drop(tx);
    assert!(within("stream end", replies.message())
        .await
        .unwrap()
        .is_none());
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
