//! The gateway beyond Knative's conformance suite (contract §7): live reload, broken files,
//! conflicts and deletions with the status the admin port reports, metrics, SIGTERM, a
//! refused backend and the access log. KIngress YAML in a directory, the real binary on
//! loopback, the test backend as the revisions' pods.
#![allow(clippy::unwrap_used)]

mod common;

use common::fixture::{kingress, one_host, one_host_with, rule};

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use knoxy_tests::{
    backend, empty, fetch, gateway, http1_client, json, request_with, Proc, TempDir,
};

async fn get_host(
    gw: &Proc,
    listener: &str,
    host: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap, String) {
    fetch(
        &http1_client(),
        request_with(
            Method::GET,
            &gw.url(listener, path),
            &[("host", host), ("x-path", "client")],
            empty(),
        ),
    )
    .await
}

#[tokio::test]
async fn changes_go_live_while_a_broken_file_or_an_invalid_kingress_holds_back_only_its_own() {
    let (_pod, dir, gw) = one_host("a", "Enabled", "a.example.com");
    assert_eq!(
        get_host(&gw, "public", "a.example.com", "/").await.0,
        StatusCode::OK
    );

    dir.write(
        "b.yaml",
        &kingress(
            "b",
            "Enabled",
            &rule("b.example.com", "ExternalIP", &[("hello-00001", 100)]),
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&gw, "public", "b.example.com", "/").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "b.example.com was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    dir.write("c.yaml", "apiVersion: v1\nkind: [broken\n");
    assert!(
        gw.wait_for_output(
            "keeping the last good version of its objects",
            Duration::from_secs(10)
        ),
        "{}",
        gw.stderr_text()
    );
    assert!(
        gw.stderr_text().contains("c.yaml"),
        "the error names the file: {}",
        gw.stderr_text()
    );
    assert_eq!(
        get_host(&gw, "public", "a.example.com", "/").await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_host(&gw, "public", "b.example.com", "/").await.0,
        StatusCode::OK
    );

    // One tenant's invalid edit (a percent over 100) keeps its last valid version served,
    // with /status naming the field; another tenant's new KIngress goes live meanwhile.
    dir.write(
        "b.yaml",
        &kingress(
            "b",
            "Enabled",
            &rule("b.example.com", "ExternalIP", &[("hello-00001", 150)]),
        ),
    );
    dir.write(
        "d.yaml",
        &kingress(
            "d",
            "Enabled",
            &rule("d.example.com", "ExternalIP", &[("hello-00001", 100)]),
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&gw, "public", "d.example.com", "/").await.0 != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "another tenant's change must go live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get_host(&gw, "public", "b.example.com", "/").await.0,
        StatusCode::OK,
        "the invalid KIngress keeps its last valid version"
    );
    let status = json(&knoxy_tests::get(&gw.url("admin", "/status")).await.2);
    let b = &status["ingresses"]["default/b"];
    assert_eq!(b["reason"], "Invalid", "{status}");
    assert!(
        b["message"].as_str().unwrap().contains("percent"),
        "{status}"
    );
    assert!(b["serving"].is_string(), "the hash still served: {status}");
    assert!(
        status["errors"].to_string().contains("c.yaml"),
        "the broken file is listed: {status}"
    );
}

#[tokio::test]
async fn behind_the_gateway_the_queue_builds_forwarded_from_its_headers() {
    let app = knoxy_tests::backend();
    let queue = knoxy_tests::queue(app.addr("backend").port()).spawn();
    let dir = knoxy_tests::TempDir::new("gw-queue");
    let port = queue.addr("main").port();
    dir.write(
        "rev.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: rev, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: rev-x, namespace: default, labels: {{kubernetes.io/service-name: rev}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n"),
    );
    dir.write(
        "fwd.yaml",
        &kingress(
            "fwd",
            "Enabled",
            &rule("fwd.example.com", "ExternalIP", &[("rev", 100)]),
        ),
    );
    let gw = gateway(&dir.0);
    let req = request_with(
        Method::GET,
        &gw.url("public", "/"),
        &[
            ("host", "fwd.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
        empty(),
    );
    let (status, _, body) = fetch(&http1_client(), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = &json(&body)["headers"];
    assert_eq!(seen["x-forwarded-proto"][0], "http", "{seen}");
    let xff = seen["x-forwarded-for"][0].as_str().unwrap();
    assert!(xff.starts_with("203.0.113.7, 127.0.0.1"), "{xff}");
    let forwarded = seen["forwarded"][0].as_str().unwrap();
    assert!(
        forwarded.contains("for=203.0.113.7") && forwarded.contains("proto=http"),
        "{forwarded}"
    );
    assert_eq!(
        seen["x-request-id"][0].as_str().map(str::len),
        Some(36),
        "{seen}"
    );
}

#[tokio::test]
async fn the_admin_port_serves_prometheus_metrics_health_and_readiness() {
    let (_pod, _dir, gw) = one_host("hello", "Enabled", "hello.example.com");
    for _ in 0..3 {
        assert_eq!(
            get_host(&gw, "public", "hello.example.com", "/").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_host(&gw, "public", "nope.example.com", "/").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, headers, text) = knoxy_tests::get(&gw.url("admin", "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        text.contains(
            r#"knoxy_requests_total{code="200",host="hello.example.com",ingress="default/hello",listener="public"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"knoxy_requests_total{code="404",host="",ingress="",listener="public"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("knoxy_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("knoxy_route_table_generation 1")
            || text.contains("knoxy_route_table_generation 2"),
        "{text}"
    );
    assert!(text.contains("knoxy_route_table_ingresses 1"), "{text}");
    assert!(text.contains("knoxy_open_connections"), "{text}");
    assert_eq!(
        knoxy_tests::get(&gw.url("admin", "/healthz")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        knoxy_tests::get(&gw.url("admin", "/ready")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        knoxy_tests::get(&gw.url("admin", "/other")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let (_pod, _dir, mut gw) = one_host("hello", "Enabled", "hello.example.com");
    let url = gw.url("public", "/?sleep=1500");
    let in_flight = tokio::spawn(async move {
        fetch(
            &http1_client(),
            request_with(Method::GET, &url, &[("host", "hello.example.com")], empty()),
        )
        .await
        .0
    });
    // An idle keep-alive connection must not hold the drain up.
    let idle = tokio::net::TcpStream::connect(gw.addr("public"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gw.signal(knoxy_tests::Signal::SIGTERM);
    assert_eq!(
        knoxy_tests::within("request in flight", in_flight)
            .await
            .unwrap(),
        StatusCode::OK
    );
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("knoxy exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "drained in {:?}, not at the 30 s bound",
        signalled.elapsed()
    );
    drop(idle);
}

#[tokio::test]
async fn a_refused_backend_gets_a_prompt_502() {
    let pod = backend();
    let dir = TempDir::new("gw");
    let port = pod.addr("backend").port();
    drop(pod);
    let text = kingress("hello", "Enabled", &rule("hello.example.com", "ExternalIP", &[("hello-00001", 100)]))
        + &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: hello-00001, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hello-00001-abc\n  namespace: default\n  labels: {{kubernetes.io/service-name: hello-00001}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n");
    dir.write("hello.yaml", &text);
    let gw = gateway(&dir.0);
    let started = Instant::now();
    assert_eq!(
        get_host(&gw, "public", "hello.example.com", "/").await.0,
        StatusCode::BAD_GATEWAY
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retries: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_one_json_line_per_request_when_on() {
    let (_pod, dir, quiet) = one_host("hello", "Enabled", "hello.example.com");
    assert_eq!(
        get_host(&quiet, "public", "hello.example.com", "/q")
            .await
            .0,
        StatusCode::OK
    );
    let logging = knoxy_tests::gateway_with(&dir.0, &["--access-log"]);
    assert_eq!(
        get_host(&logging, "public", "hello.example.com", "/a?b=1")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_host(&logging, "public", "nope.example.com", "/")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert!(
        logging.wait_for_output("nope.example.com", Duration::from_secs(5)),
        "{}",
        logging.stdout_text()
    );
    let lines: Vec<serde_json::Value> = logging
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(json)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["ingress"], "default/hello");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["host"], "hello.example.com");
    assert_eq!(lines[0]["uri"], "/a?b=1");
    assert_eq!(lines[0]["status"], 200);
    assert!(lines[0]["duration_ms"].as_f64().is_some());
    assert_eq!(lines[1]["status"], 404);
    assert!(
        !quiet.stdout_text().contains("\"uri\""),
        "off by default: {}",
        quiet.stdout_text()
    );
}

#[tokio::test]
async fn status_reports_conflicts_and_missing_backends_and_a_deletion_frees_the_host() {
    let (_pod, dir, gw) = one_host("first", "Enabled", "shared.example.com");
    let second = kingress(
        "second",
        "Enabled",
        &rule("shared.example.com", "ExternalIP", &[("hello-00001", 100)]),
    );
    let orphan = kingress(
        "orphan",
        "Enabled",
        &rule("orphan.example.com", "ExternalIP", &[("no-such-rev", 100)]),
    );
    dir.write("second.yaml", &second);
    dir.write("orphan.yaml", &orphan);
    let status = |gw: &Proc| {
        let url = gw.url("admin", "/status");
        async move { json(&knoxy_tests::get(&url).await.2) }
    };
    let deadline = Instant::now() + knoxy_tests::TIMEOUT;
    let mut seen = status(&gw).await;
    while seen["ingresses"]["default/orphan"].is_null()
        || seen["ingresses"]["default/second"].is_null()
    {
        assert!(Instant::now() < deadline, "{seen}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        seen = status(&gw).await;
    }
    let of = |name: &str| seen["ingresses"][format!("default/{name}")].clone();
    assert_eq!(of("first")["ready"], true, "{seen}");
    assert_eq!(of("second")["reason"], "DomainConflict", "{seen}");
    assert_eq!(of("orphan")["reason"], "ServiceNotFound", "{seen}");
    assert_eq!(
        get_host(&gw, "public", "shared.example.com", "/").await.0,
        StatusCode::OK,
        "the first KIngress keeps the host"
    );
    assert_eq!(
        get_host(&gw, "public", "orphan.example.com", "/").await.0,
        StatusCode::NOT_FOUND
    );

    std::fs::remove_file(dir.0.join("first.yaml")).unwrap();
    while status(&gw).await["ingresses"]["default/second"]["ready"] != true {
        assert!(
            Instant::now() < deadline,
            "second never took the freed host"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status(&gw).await["ingresses"]["default/first"],
        serde_json::Value::Null
    );
    assert_eq!(
        get_host(&gw, "public", "shared.example.com", "/").await.0,
        StatusCode::OK,
        "the second KIngress serves the host once the first is deleted"
    );
}

#[tokio::test]
async fn upstream_connections_are_reused_once_a_response_is_read() {
    // One worker thread: idle connections are kept per thread (no lock shared by threads).
    let (_pod, _dir, gw) = one_host_with("hello", "reuse.example.com", &["--threads", "1"]);
    let mut peers = std::collections::BTreeSet::new();
    for path in ["/", "/?bytes=200000", "/", "/?stream=1&n=3&gap=1", "/"] {
        let (status, _, body) = get_host(&gw, "public", "reuse.example.com", path).await;
        assert_eq!(status, StatusCode::OK);
        if path == "/" {
            peers.insert(json(&body)["remote_addr"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        peers.len(),
        1,
        "one upstream connection serves them all: {peers:?}"
    );
}

#[tokio::test]
async fn w3c_and_b3_trace_headers_reach_the_backend_unchanged() {
    let (_pod, _dir, gw) = one_host("hello", "Enabled", "trace.example.com");
    let trace = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-b3-sampled", "1"),
    ];
    let mut headers = vec![("host", "trace.example.com")];
    headers.extend_from_slice(&trace);
    let req = request_with(Method::GET, &gw.url("public", "/"), &headers, empty());
    let (status, _, body) = fetch(&http1_client(), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = json(&body);
    for (name, value) in trace {
        assert_eq!(seen["headers"][name], serde_json::json!([value]), "{name}");
    }
}

#[tokio::test]
async fn bodies_stream_both_ways_in_bounded_memory() {
    use http_body_util::{BodyExt as _, StreamBody};
    let (_pod, _dir, gw) = one_host("hello", "Enabled", "big.example.com");
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 256;
    let chunk = bytes::Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::iter(
        (0..CHUNKS)
            .map(move |_| Ok::<_, knoxy_tests::BoxError>(hyper::body::Frame::data(chunk.clone()))),
    );
    let upload = request_with(
        Method::POST,
        &gw.url("public", "/upload"),
        &[("host", "big.example.com")],
        StreamBody::new(stream).boxed_unsync(),
    );
    let (status, _, text) = knoxy_tests::within_for(
        Duration::from_secs(60),
        "256 MiB upload",
        fetch(&http1_client(), upload),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json(&text)["body_bytes"], (CHUNK * CHUNKS) as u64);

    // Down, with the client speaking h2c to the gateway.
    let download = request_with(
        Method::GET,
        &gw.url("public", &format!("/?bytes={}", CHUNK * CHUNKS)),
        &[("host", "big.example.com")],
        empty(),
    );
    let response = knoxy_tests::send(&knoxy_tests::h2c_client(), download).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(frame) = knoxy_tests::within("a frame", body.frame()).await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, CHUNK * CHUNKS);
    let peak = knoxy_tests::peak_rss_kib(gw.pid());
    assert!(
        peak < 64 * 1024,
        "the gateway peaked at {peak} KiB relaying 2 × 256 MiB"
    );
}

#[tokio::test]
async fn an_h2c_upgrade_is_a_hop_not_a_tunnel_and_hop_by_hop_headers_stop_here() {
    let (_pod, _dir, gw) = one_host("hello", "Enabled", "hop.example.com");
    // curl --http2 on a plain URL asks for h2c this way; the connection must stay HTTP/1.1
    // and routed, request after request.
    let raw = knoxy_tests::exchange(
        gw.addr("public"),
        b"GET /one HTTP/1.1\r\nHost: hop.example.com\r\nConnection: Upgrade, HTTP2-Settings, X-Secret\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\r\nGET /two HTTP/1.1\r\nHost: hop.example.com\r\nConnection: close\r\n\r\n"
            .to_vec(),
    )
    .await;
    // Length-delimited bodies: the second status line follows the first body directly.
    assert_eq!(raw.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{raw}");
    let first = &raw[raw.find('{').unwrap()..];
    let seen: serde_json::Value = serde_json::Deserializer::from_str(first)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(seen["uri"], "/one");
    for hop in ["upgrade", "http2-settings", "x-secret", "keep-alive"] {
        assert!(
            seen["headers"][hop].is_null(),
            "{hop} reached the backend: {seen}"
        );
    }
    assert!(
        raw.contains("\"uri\":\"/two\""),
        "the second request was routed too: {raw}"
    );
}

#[tokio::test]
async fn a_websocket_tunnel_holds_the_drain_until_it_closes() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let (_pod, _dir, mut gw) = one_host("hello", "Enabled", "ws.example.com");
    let mut ws = common::ws_dial(gw.addr("public"), "ws.example.com").await;
    gw.signal(knoxy_tests::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gw.is_running(),
        "the open tunnel keeps the gateway draining"
    );
    knoxy_tests::within("send", ws.send(Message::text("still here")))
        .await
        .unwrap();
    let echo = knoxy_tests::within("echo", ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("still here"));
    drop(ws);
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the tunnel closed");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn files_the_source_does_not_read_do_not_reload_it() {
    let (_pod, dir, gw) = one_host("hello", "Enabled", "hello.example.com");
    let generation = || async {
        let metrics = knoxy_tests::get(&gw.url("admin", "/metrics")).await.2;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("knoxy_route_table_generation "))
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap()
    };
    let before = generation().await;
    // A log written into the directory (each reload logging a line would reload forever).
    for i in 0..5 {
        dir.write("knoxy.log", &format!("line {i}\n"));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // A YAML change is seen: once it is, the log's changes would have been too.
    dir.write("other.yaml", "# nothing yet\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation().await == before {
        assert!(Instant::now() < deadline, "a YAML change reloads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        generation().await,
        before + 1,
        "only the YAML change reloaded"
    );
}
