//! The gateway as a public edge: each attack a hostile client can make is made here, against
//! the real binary, and the gateway closes that connection and keeps serving. Also what the
//! upstream sees (`X-Forwarded-*`, `X-Request-Id`), what a stranger reads in an error, and
//! HTTP/1.1's rules as RFC 9112 and Go's server agree.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixture::one_host_with;
use http::{Method, StatusCode};
use knoxy_tests::{empty, exchange, fetch, http1_client, json, request_with, within, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "hello.example.com";

async fn assert_still_serving(gw: &Proc, after: &str) {
    let (status, _, body) = knoxy_tests::get_host(gw, "public", HOST, "/").await;
    assert_eq!(status, StatusCode::OK, "a request after {after}: {body}");
}

/// Reads until the server closes; what it sent and how long that took.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    within(&format!("the gateway to close within {limit:?}"), async {
        tokio::time::timeout(limit, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .expect("the connection must be closed by the gateway")
    })
    .await;
    (got, started.elapsed())
}

async fn connect(addr: SocketAddr) -> TcpStream {
    within("connect", TcpStream::connect(addr)).await.unwrap()
}

// === Timeouts ===

#[tokio::test]
async fn a_head_that_never_ends_is_cut_at_the_header_read_timeout() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &["--header-read-timeout", "1"]);
    let mut slow = connect(gw.addr("public")).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: hello.example.com\r\n")
        .await
        .unwrap();
    // Slowloris: a header line every 200 ms keeps bytes coming, never the end of the head.
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    within("the slow head to be cut", async {
        while !matches!(reader.read(&mut buf).await, Ok(0) | Err(_)) {}
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
    trickle.abort();
    assert_still_serving(&gw, "a slow head").await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_read_timeout() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &["--header-read-timeout", "1"]);
    let mut silent = connect(gw.addr("public")).await;
    let (_, took) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
    assert_still_serving(&gw, "a silent connection").await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_not_the_header_timeout() {
    let (_pod, _dir, gw) = one_host_with(
        "hello",
        HOST,
        &["--idle-timeout", "1", "--header-read-timeout", "30"],
    );
    let mut conn = connect(gw.addr("public")).await;
    conn.write_all(b"GET / HTTP/1.1\r\nHost: hello.example.com\r\n\r\n")
        .await
        .unwrap();
    let (got, took) = until_closed(&mut conn, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.200}");
    assert!(took < Duration::from_secs(5), "idle for {took:?}");
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_cut_at_its_timeout() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &["--tls-handshake-timeout", "1"]);
    let handshakes_cut = || async {
        let metrics = knoxy_tests::get(&gw.url("admin", "/metrics")).await.2;
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "knoxy_connections_closed_total{listener=\"https\",reason=\"tls_handshake_timeout\"} ",
                )
            })
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let before = handshakes_cut().await;
    let mut stalled = connect(gw.addr("https")).await;
    // The first bytes of a ClientHello record, then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let (_, took) = until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed early: {took:?}");
    // At least: a stray connection from a parallel test to a reused port may be cut too.
    let after = handshakes_cut().await;
    assert!(
        after > before,
        "not counted as a cut handshake: {before} -> {after}"
    );
    assert_still_serving(&gw, "a stalled handshake").await;
}

#[tokio::test]
async fn a_backend_slower_than_every_client_timeout_is_not_cut() {
    let (_pod, _dir, gw) = one_host_with(
        "hello",
        HOST,
        &["--idle-timeout", "1", "--header-read-timeout", "1"],
    );
    let req = request_with(
        Method::GET,
        &gw.url("public", "/?sleep=2500"),
        &[("host", HOST)],
        empty(),
    );
    let (status, _, body) = fetch(&http1_client(), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// === Limits ===

#[tokio::test]
async fn past_max_connections_a_client_gets_a_503_and_the_gateway_recovers() {
    let (_pod, _dir, gw) = one_host_with(
        "hello",
        HOST,
        &["--max-connections", "3", "--header-read-timeout", "60"],
    );
    let open_public = || async {
        let metrics = knoxy_tests::get(&gw.url("admin", "/metrics")).await.2;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("knoxy_open_connections{listener=\"public\"} "))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    // Three connections hold every place, each with an unfinished head. The cap counts every
    // listener, so a place may still be taken by the start-up check's connections: retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = connect(gw.addr("public")).await;
            c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(c);
        }
        let counted = Instant::now() + Duration::from_secs(2);
        while open_public().await < 3 && Instant::now() < counted {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if open_public().await == 3 {
            break held;
        }
        assert!(Instant::now() < deadline, "three connections must be held");
    };
    // The three are counted once the gateway has accepted them: poll for the refusal.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = exchange(
            gw.addr("public"),
            b"GET / HTTP/1.1\r\nHost: hello.example.com\r\nConnection: close\r\n\r\n".to_vec(),
        )
        .await;
        if answer.starts_with("HTTP/1.1 503") || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics = knoxy_tests::get(&gw.url("admin", "/metrics")).await.2;
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "{refused:.300}\n{metrics}"
    );
    assert!(refused.contains("too many connections"), "{refused:.300}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = request_with(
            Method::GET,
            &gw.url("public", "/"),
            &[("host", HOST)],
            empty(),
        );
        if knoxy_tests::try_send(&http1_client(), req)
            .await
            .map(|r| r.status())
            .ok()
            == Some(StatusCode::OK)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway must recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === HTTP/2 ===

/// A raw HTTP/2 client: frames written by hand, so the test can do what a real client won't.
mod h2raw {
    use super::*;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK for `GET http://<authority>/`: indexed :method, :scheme, :path, then :authority
    /// as a literal with an indexed name (RFC 7541 §6.2.2).
    pub fn get(authority: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
        block.extend_from_slice(authority.as_bytes());
        block
    }

    /// A literal header (new name, not indexed) of `size` bytes of value, size < 16 Ki.
    pub fn filler(size: usize) -> Vec<u8> {
        let mut block = vec![0x00, 0x01, b'x'];
        // The value length as an HPACK integer with a 7-bit prefix.
        let mut n = size;
        if n < 127 {
            block.push(n as u8);
        } else {
            block.push(127);
            n -= 127;
            while n >= 128 {
                block.push((n % 128 + 128) as u8);
                n /= 128;
            }
            block.push(n as u8);
        }
        block.extend(std::iter::repeat_n(b'a', size));
        block
    }

    pub async fn open(addr: SocketAddr) -> TcpStream {
        let mut c = connect(addr).await;
        c.write_all(PREFACE).await.unwrap();
        c.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        c
    }

    /// Reads frames until one of `kind` arrives (its payload), or None if the server closed.
    pub async fn read_until(stream: &mut TcpStream, kind: u8) -> Option<(u8, Vec<u8>)> {
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.ok()?;
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.ok()?;
            if head[3] == kind {
                return Some((head[4], payload));
            }
        }
    }
}

#[tokio::test]
async fn h2_advertises_its_stream_limit() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &["--h2-max-concurrent-streams", "7"]);
    let mut c = h2raw::open(gw.addr("public")).await;
    let (_, settings) = within(
        "the server's SETTINGS",
        h2raw::read_until(&mut c, h2raw::SETTINGS),
    )
    .await
    .expect("SETTINGS");
    let advertised: Vec<(u16, u32)> = settings
        .chunks(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    assert!(
        advertised.contains(&(0x3, 7)),
        "SETTINGS_MAX_CONCURRENT_STREAMS: {advertised:?}"
    );
}

#[tokio::test]
async fn h2_rapid_reset_gets_goaway_and_the_gateway_keeps_serving() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &[]);
    let c = h2raw::open(gw.addr("public")).await;
    // CVE-2023-44487: open and at once cancel a thousand streams.
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        burst.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &h2raw::get(HOST),
        ));
        burst.extend(h2raw::frame(h2raw::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let (reader, mut writer) = c.into_split();
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(&burst).await;
        writer
    });
    let mut read = reader.reunite(sender.await.unwrap()).unwrap();
    let goaway = within("GOAWAY", h2raw::read_until(&mut read, h2raw::GOAWAY)).await;
    if let Some((_, payload)) = goaway {
        // ENHANCE_YOUR_CALM (0xb): the server's verdict on the flood.
        assert_eq!(
            u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
            0xb
        );
    }
    assert_still_serving(&gw, "a rapid-reset flood").await;
}

#[tokio::test]
async fn h2_continuation_flood_is_cut_and_the_gateway_keeps_serving() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &["--max-header-bytes", "65536"]);
    let c = h2raw::open(gw.addr("public")).await;
    let (mut reader, mut writer) = c.into_split();
    // A head that never ends: HEADERS without END_HEADERS, then CONTINUATION after
    // CONTINUATION, far past the header limit (64 MiB if nobody stops it).
    let flood = tokio::spawn(async move {
        let _ = writer
            .write_all(&h2raw::frame(h2raw::HEADERS, 0, 1, &h2raw::get(HOST)))
            .await;
        for _ in 0..4096 {
            let block = h2raw::filler(16 * 1024 - 8);
            if writer
                .write_all(&h2raw::frame(h2raw::CONTINUATION, 0, 1, &block))
                .await
                .is_err()
            {
                return true;
            }
        }
        false
    });
    let mut buf = [0u8; 4096];
    within("the flood to be cut", async {
        while !matches!(reader.read(&mut buf).await, Ok(0) | Err(_)) {}
    })
    .await;
    flood.abort();
    assert_still_serving(&gw, "a CONTINUATION flood").await;
}

#[tokio::test]
async fn h2_headers_over_the_limit_refuse_the_stream_not_the_connection() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &["--max-header-bytes", "65536"]);
    let mut c = h2raw::open(gw.addr("public")).await;
    // 96 KiB of headers on stream 1, in a HEADERS frame and CONTINUATIONs of 16 KiB.
    let mut block = h2raw::get(HOST);
    for _ in 0..6 {
        block.extend(h2raw::filler(16 * 1024 - 8));
    }
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let (kind, flags) = match (i, last) {
            (0, _) => (
                h2raw::HEADERS,
                h2raw::END_STREAM | if last { h2raw::END_HEADERS } else { 0 },
            ),
            (_, true) => (h2raw::CONTINUATION, h2raw::END_HEADERS),
            _ => (h2raw::CONTINUATION, 0),
        };
        c.write_all(&h2raw::frame(kind, flags, 1, chunk))
            .await
            .unwrap();
    }
    // Then an ordinary request on the same connection.
    c.write_all(&h2raw::frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        3,
        &h2raw::get(HOST),
    ))
    .await
    .unwrap();
    let mut answered = Vec::new();
    within("answers on both streams", async {
        while answered.len() < 2 {
            let mut head = [0u8; 9];
            c.read_exact(&mut head)
                .await
                .expect("the connection stays open");
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            c.read_exact(&mut payload).await.unwrap();
            assert_ne!(
                head[3],
                h2raw::GOAWAY,
                "GOAWAY for the connection: {payload:?}"
            );
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if head[3] == h2raw::HEADERS || head[3] == h2raw::RST_STREAM {
                // HPACK 0x88 is `:status: 200` from the static table.
                answered.push((stream, head[3], payload.first() == Some(&0x88)));
            }
        }
    })
    .await;
    assert!(
        answered.contains(&(1, h2raw::HEADERS, false)),
        "stream 1 gets an answer that is not 200 (431): {answered:?}"
    );
    assert!(
        answered.contains(&(3, h2raw::HEADERS, true)),
        "stream 3 is served: {answered:?}"
    );
}

// === What the upstream sees, what a stranger reads ===

#[tokio::test]
async fn the_upstream_sees_forwarded_headers_and_a_request_id() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &[]);
    let echo = |extra: &'static [(&'static str, &'static str)]| {
        let gw = &gw;
        async move {
            let mut headers = vec![("host", HOST)];
            headers.extend_from_slice(extra);
            let req = request_with(Method::GET, &gw.url("public", "/"), &headers, empty());
            let (status, _, body) = fetch(&http1_client(), req).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            json(&body)["headers"].clone()
        }
    };
    let seen = echo(&[]).await;
    assert_eq!(seen["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"][0], "http");
    let id = seen["x-request-id"][0].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(&id[14..15], "4", "version 4: {id}");
    let seen = echo(&[
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "abc-123"),
        ("k-kubelet-probe", "queue"),
    ])
    .await;
    assert_eq!(seen["x-forwarded-for"][0], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        seen["x-forwarded-proto"][0], "http",
        "the gateway's own scheme"
    );
    assert_eq!(seen["x-request-id"][0], "abc-123", "kept");
    assert!(seen.get("k-kubelet-probe").is_none(), "{seen}");
    // A client naming in `Connection` what the gateway adds (or routes on) must not remove it.
    let seen = echo(&[(
        "connection",
        "x-forwarded-proto, x-forwarded-for, x-request-id, host",
    )])
    .await;
    assert_eq!(seen["x-forwarded-proto"][0], "http");
    assert_eq!(seen["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(
        seen["x-request-id"][0].as_str().map(str::len),
        Some(36),
        "{seen}"
    );
    assert_eq!(seen["host"][0], HOST);
}

#[tokio::test]
async fn a_refused_backend_gets_a_short_502_that_names_no_address() {
    let (pod, _dir, gw) = one_host_with("hello", HOST, &[]);
    let port = pod.addr("backend").port();
    drop(pod);
    let req = request_with(
        Method::GET,
        &gw.url("public", "/"),
        &[("host", HOST), ("x-request-id", "trace-me-1")],
        empty(),
    );
    let (status, _, body) = fetch(&http1_client(), req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&port.to_string()),
        "{body}"
    );
    assert!(body.len() < 40, "{body}");
    assert!(
        gw.wait_for_output("trace-me-1", Duration::from_secs(5)),
        "the details are logged under the request id: {}",
        gw.stderr_text()
    );
    assert!(
        gw.stderr_text().contains(&port.to_string()),
        "{}",
        gw.stderr_text()
    );
}

// === HTTP/1.1 as RFC 9112 and Go's server agree ===

#[tokio::test]
async fn http1_requests_are_judged_as_go_judges_them() {
    let (_pod, _dir, gw) = one_host_with("hello", HOST, &[]);
    let cases: [(&str, &str, &str); 7] = [
        ("no Host", "GET / HTTP/1.1\r\n\r\n", "400 Bad Request: missing required Host header"),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: hello.example.com\r\nHost: other\r\n\r\n",
            "400 Bad Request: too many Host headers",
        ),
        (
            "a coding other than chunked",
            "POST / HTTP/1.1\r\nHost: hello.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "501 Not Implemented",
        ),
        ("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: hello.example.com\r\nConnection: close\r\n\r\n", "200 OK"),
        ("HTTP/2.0 on an HTTP/1 line", "GET / HTTP/2.0\r\nHost: hello.example.com\r\n\r\n", "505 HTTP Version Not Supported: unsupported protocol version"),
        ("HTTP/1.2, served as 1.1", "GET / HTTP/1.2\r\nHost: hello.example.com\r\nConnection: close\r\n\r\n", "200 OK"),
        (
            "a broken chunk",
            "POST / HTTP/1.1\r\nHost: hello.example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "400 ",
        ),
    ];
    for (what, raw, want) in cases {
        let answer = exchange(gw.addr("public"), raw.as_bytes().to_vec()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "{what}: {answer:.300}"
        );
        assert_still_serving(&gw, what).await;
    }
    // An absolute-form target: its authority is the host, for routing and for the app.
    let answer = exchange(
        gw.addr("public"),
        b"GET http://hello.example.com/abs?q=1 HTTP/1.1\r\nHost: elsewhere.example.com\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.300}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let seen = json(body);
    assert_eq!(seen["host"], HOST, "{seen}");
    assert_eq!(seen["uri"], "/abs?q=1", "origin-form upstream: {seen}");
}
