//! First black-box tests of the `knoxy` gateway: KIngress YAML in a directory, the real
//! binary on loopback, the test backend as the revisions' pods.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use knoxy_tests::{
    backend, empty, fetch, gateway, h2c_client, http1_client, json, request_with, Proc, TempDir,
};

/// A KIngress of Knoxy's class; `rules` is YAML for `spec.rules`.
fn kingress(name: &str, http_option: &str, rules: &str) -> String {
    format!(
        "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n    networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev\nspec:\n  httpOption: {http_option}\n  rules:\n{rules}\n---\n"
    )
}

/// A revision's public Service and the EndpointSlice of its one pod (a test backend).
fn revision(name: &str, pod: &Proc) -> String {
    let port = pod.addr("backend").port();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\nports: [{{name: http, port: {port}}}]\n---\n"
    )
}

fn rule(hosts: &str, visibility: &str, splits: &[(&str, u32)]) -> String {
    let splits: String = splits
        .iter()
        .map(|(rev, pct)| format!("        - {{serviceNamespace: default, serviceName: {rev}, servicePort: 80, percent: {pct}, appendHeaders: {{Knative-Serving-Revision: {rev}}}}}\n"))
        .collect();
    format!("  - hosts: [{hosts}]\n    visibility: {visibility}\n    http:\n      paths:\n      - appendHeaders: {{X-Path: base}}\n        splits:\n{splits}")
}

/// One revision (a test backend) behind a KIngress `name` with one ExternalIP rule for
/// `host`, served by a fresh gateway; the backend and directory live as long as the tuple.
fn one_host(name: &str, http_option: &str, host: &str) -> (Proc, TempDir, Proc) {
    let pod = backend();
    let dir = TempDir::new("gw");
    let ingress = kingress(
        name,
        http_option,
        &rule(host, "ExternalIP", &[("hello-00001", 100)]),
    );
    dir.write("revision.yaml", &revision("hello-00001", &pod));
    dir.write(&format!("{name}.yaml"), &ingress);
    let gw = gateway(&dir.0);
    (pod, dir, gw)
}

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
async fn hosts_route_to_their_split_with_headers_set_and_unknown_hosts_get_404() {
    let pod = backend();
    let dir = TempDir::new("gw");
    dir.write(
        "hello.yaml",
        &(kingress(
            "hello",
            "Enabled",
            &rule(
                "hello.default.example.com",
                "ExternalIP",
                &[("hello-00001", 100)],
            ),
        ) + &revision("hello-00001", &pod)),
    );
    let gw = gateway(&dir.0);

    let (status, _, body) = get_host(&gw, "public", "hello.default.example.com", "/x?y=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = json(&body);
    assert_eq!(seen["uri"], "/x?y=1");
    assert_eq!(seen["host"], "hello.default.example.com");
    assert_eq!(
        seen["headers"]["x-path"],
        serde_json::json!(["base"]),
        "appendHeaders overwrite the client's value"
    );
    assert_eq!(
        seen["headers"]["knative-serving-revision"][0],
        "hello-00001"
    );

    assert_eq!(
        get_host(&gw, "public", "hello.default.example.com:80", "/")
            .await
            .0,
        StatusCode::OK,
        "host:port matches"
    );
    assert_eq!(
        get_host(&gw, "public", "nope.example.com", "/").await.0,
        StatusCode::NOT_FOUND
    );

    let req = request_with(
        Method::GET,
        &gw.url("public", "/h2"),
        &[("host", "hello.default.example.com")],
        empty(),
    );
    let (status, _, body) = fetch(&h2c_client(), req).await;
    assert_eq!(status, StatusCode::OK, "h2c from the client: {body}");
}

#[tokio::test]
async fn cluster_local_rules_are_served_only_on_the_private_listener() {
    let pod = backend();
    let dir = TempDir::new("gw");
    let rules = rule(
        "hello.default.svc.cluster.local",
        "ClusterLocal",
        &[("hello-00001", 100)],
    ) + &rule(
        "hello.default.example.com",
        "ExternalIP",
        &[("hello-00001", 100)],
    );
    dir.write(
        "hello.yaml",
        &(kingress("hello", "Enabled", &rules) + &revision("hello-00001", &pod)),
    );
    let gw = gateway(&dir.0);
    assert_eq!(
        get_host(&gw, "public", "hello.default.svc.cluster.local", "/")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get_host(&gw, "private", "hello.default.svc.cluster.local", "/")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get_host(&gw, "private", "hello.default.example.com", "/")
            .await
            .0,
        StatusCode::OK,
        "ExternalIP is private too"
    );
}

#[tokio::test]
async fn a_split_sends_each_revision_its_share_and_percent_zero_none() {
    let (a, b, c) = (backend(), backend(), backend());
    let dir = TempDir::new("gw");
    let text = kingress(
        "hello",
        "Enabled",
        &rule(
            "hello.example.com",
            "ExternalIP",
            &[("rev-a", 50), ("rev-b", 50), ("rev-c", 0)],
        ),
    ) + &revision("rev-a", &a)
        + &revision("rev-b", &b)
        + &revision("rev-c", &c);
    dir.write("hello.yaml", &text);
    let gw = gateway(&dir.0);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..200 {
        let (status, _, body) = get_host(&gw, "public", "hello.example.com", "/").await;
        assert_eq!(status, StatusCode::OK);
        *counts
            .entry(
                json(&body)["headers"]["knative-serving-revision"][0]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
            .or_insert(0) += 1;
    }
    assert!(counts["rev-a"] > 60 && counts["rev-b"] > 60, "{counts:?}");
    assert!(!counts.contains_key("rev-c"), "{counts:?}");
}

#[tokio::test]
async fn redirected_sends_public_plain_http_to_https() {
    let (_pod, _dir, gw) = one_host("hello", "Redirected", "hello.example.com");
    let (status, headers, _) = get_host(&gw, "public", "hello.example.com", "/a?b=1").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://hello.example.com/a?b=1");
    assert_eq!(
        get_host(&gw, "private", "hello.example.com", "/").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn changes_go_live_and_a_broken_file_keeps_the_last_good_table() {
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
            "keeping the last good configuration",
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
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_on_every_route() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, Message};
    let (_pod, _dir, gw) = one_host("hello", "Enabled", "ws.example.com");
    let mut req = format!("ws://{}/ws", gw.addr("public"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "ws.example.com".parse().unwrap());
    let (mut ws, response) =
        knoxy_tests::within("websocket handshake", tokio_tungstenite::connect_async(req))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["one", "two"] {
        knoxy_tests::within("send", ws.send(Message::text(text)))
            .await
            .unwrap();
        assert_eq!(
            knoxy_tests::within("echo", ws.next())
                .await
                .unwrap()
                .unwrap(),
            Message::text(text)
        );
    }
}

#[tokio::test]
async fn override_probes_come_back_with_the_kingress_hash_and_others_unchanged() {
    let pod = backend();
    let dir = TempDir::new("gw");
    let ingress = kingress(
        "hello",
        "Enabled",
        &rule("hello.example.com", "ExternalIP", &[("hello-00001", 100)]),
    );
    dir.write(
        "hello.yaml",
        &(ingress.clone() + &revision("hello-00001", &pod)),
    );
    let gw = gateway(&dir.0);
    // The hash Knative's prober computes from the stored (defaulted) object.
    let mut snap = knoxy_control::derive::Snapshot::default();
    let mut errors = Vec::new();
    knoxy_control::files::add_documents(
        std::path::Path::new("x.yaml"),
        &ingress,
        &mut snap,
        &mut errors,
    );
    let mut stored = (*snap.ingresses["default/hello"]).clone();
    knoxy_control::validate::set_defaults(&mut stored.spec);
    let want = knoxy_control::probe_hash::probe_hash(&stored);

    let probe = |hash: &'static str| {
        request_with(
            Method::GET,
            &gw.url("public", "/"),
            &[("host", "hello.example.com"), ("k-network-hash", hash)],
            empty(),
        )
    };
    let (_, _, body) = fetch(&http1_client(), probe("override")).await;
    assert_eq!(json(&body)["headers"]["k-network-hash"][0], want.as_str());
    let (_, _, body) = fetch(&http1_client(), probe("0123abcd")).await;
    assert_eq!(json(&body)["headers"]["k-network-hash"][0], "0123abcd");
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
            r#"knoxy_requests_total{code="200",ingress="default/hello",listener="public"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"knoxy_requests_total{code="404",ingress="",listener="public"} 1"#),
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

/// A revision whose Service port is named `http2`: the gateway speaks h2c to it.
fn h2c_revision(name: &str, pod: &Proc) -> String {
    revision(name, pod)
        .replace("name: http,", "name: http2,")
        .replace("name: http, port:", "name: http2, port:")
}

#[tokio::test]
async fn an_http2_service_port_gets_h2c_upstream_and_grpc_streams_pass() {
    let pod = backend();
    let dir = TempDir::new("gw");
    dir.write(
        "grpc.yaml",
        &(kingress(
            "grpc",
            "Enabled",
            &rule("grpc.example.com", "ExternalIP", &[("grpc-00001", 100)]),
        ) + &h2c_revision("grpc-00001", &pod)),
    );
    let gw = gateway(&dir.0);
    let (status, _, body) = get_host(&gw, "public", "grpc.example.com", "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        json(&body)["proto"],
        "HTTP/2.0",
        "basics/http2: the backend sees HTTP/2"
    );

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr("public")))
        .unwrap()
        .origin("http://grpc.example.com".parse().unwrap());
    assert_eq!(common::ping(channel, "hi").await, "pong: hi");
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
async fn there_is_no_gateway_timeout_before_the_headers_or_mid_body() {
    let (_pod, _dir, gw) = one_host("hello", "Enabled", "slow.example.com");
    let client = http1_client();
    // Bounded at 30 s, past the harness's usual 10 s.
    let slow = |path: &str| {
        let req = request_with(
            Method::GET,
            &gw.url("public", path),
            &[("host", "slow.example.com")],
            empty(),
        );
        let client = client.clone();
        async move {
            knoxy_tests::within_for(Duration::from_secs(30), "a slow response", async {
                let response = client.request(req).await.unwrap();
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            })
            .await
        }
    };
    let (before, mid) = tokio::join!(slow("/?sleep=10500"), slow("/?stream=1&n=2&gap=10500"));
    assert_eq!(
        before.0,
        StatusCode::OK,
        "10.5 s before the headers: {}",
        before.1
    );
    assert_eq!(
        (mid.0, mid.1.as_str()),
        (StatusCode::OK, "chunk0\nchunk1\n"),
        "10.5 s mid-body"
    );
}

#[tokio::test]
async fn table_updates_under_a_continuous_prober_fail_no_request() {
    let (_pod, dir, gw) = one_host("a", "Enabled", "a.example.com");
    let url = gw.url("public", "/");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn({
        let stop = std::sync::Arc::clone(&stop);
        async move {
            let client = http1_client();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = request_with(Method::GET, &url, &[("host", "a.example.com")], empty());
                match knoxy_tests::try_send(&client, req).await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }
    });
    for i in 0..20 {
        // Other ingresses come and go, and a.example.com's own object is rewritten.
        dir.write(
            &format!("other-{}.yaml", i % 3),
            &kingress(
                &format!("other-{i}"),
                "Enabled",
                &rule(
                    &format!("o{i}.example.com"),
                    "ExternalIP",
                    &[("hello-00001", 100)],
                ),
            ),
        );
        dir.write(
            "a.yaml",
            &kingress(
                "a",
                "Enabled",
                &rule("a.example.com", "ExternalIP", &[("hello-00001", 100)]),
            ),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = knoxy_tests::within("prober", prober).await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failures: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "the prober ran: {ok}");
    let metrics = knoxy_tests::get(&gw.url("admin", "/metrics")).await.2;
    assert!(
        !metrics.contains("knoxy_route_table_generation 1\n"),
        "the table was replaced: {metrics}"
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
