//! The gateway as a revision's activator, so far: a split that names a Knative Revision goes
//! to the pods of the revision's private Service, never to its public Service's endpoints
//! (in Knative's Proxy mode those are the activators), and follows them as they change; with
//! no pod, requests are held until one appears, or answered 504 at the revision's timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use knoxy_tests::{
    backend_stats, backend_with, closed_port, empty, fetch, gateway, gateway_with, http1_client,
    json, queue, request_with, Proc, TempDir,
};
use serde_json::json;

const HOST: &str = "hello.example.com";

/// The KIngress, the Revision `hello-00001`, its public Service (its endpoint: a closed port)
/// and its private Service's EndpointSlice with `pods` (test backends) on the `http` port.
fn objects(pods: &[u16], spec: &str) -> String {
    let ready: Vec<(u16, bool)> = pods.iter().map(|&p| (p, true)).collect();
    objects_with(&ready, spec)
}

/// [`objects`] with each pod ready or not, as Kubernetes lists it.
fn objects_with(pods: &[(u16, bool)], spec: &str) -> String {
    knoxy_tests::revision_objects(HOST, pods, spec)
}

/// A test backend's port: a pod's queue port, as far as the gateway can tell.
fn port(backend: &Proc) -> u16 {
    backend.addr("backend").port()
}

async fn get(gw: &Proc) -> (StatusCode, String) {
    let (status, _, body) = knoxy_tests::get_host(gw, "public", HOST, "/").await;
    (status, body)
}

async fn metric(gw: &Proc, name: &str) -> Option<String> {
    knoxy_tests::admin_metric(gw, name).await
}

/// `n` requests at once to the revision's host: each answer (status, body) and its instant.
fn send_many(gw: &Proc, n: usize) -> Vec<tokio::task::JoinHandle<(StatusCode, String, Instant)>> {
    (0..n)
        .map(|_| {
            let url = gw.url("public", "/");
            tokio::spawn(async move {
                let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
                let (status, _, body) = fetch(&http1_client(), req).await;
                (status, body, Instant::now())
            })
        })
        .collect()
}

/// A gateway serving the revision (`spec`) with one test backend pod: (pod, config, gateway).
fn one_pod(spec: &str) -> (Proc, TempDir, Proc) {
    let pod = backend_with(&[]);
    let dir = TempDir::new("gw");
    dir.write("hello.yaml", &objects(&[port(&pod)], spec));
    let gw = gateway(&dir.0);
    (pod, dir, gw)
}

/// A pod 5 s late with its response head: the activator's 504 comes after about a second.
async fn a_slow_head_gets_504_after_a_second(gw: &Proc) {
    let started = Instant::now();
    let (status, _, body) = knoxy_tests::get_host(gw, "public", HOST, "/?sleep=5000").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "activator request timeout")
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

/// Polls the admin port until the series `name` reads `value`, for at most 10 s.
async fn until_metric(gw: &Proc, name: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(gw, name).await;
        if got.as_deref() == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: still {got:?}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the gateway's answer satisfies `done`, for at most 10 s.
async fn until(gw: &Proc, what: &str, done: impl Fn(StatusCode, &str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(gw).await;
        if done(status, &body) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_no_pod_a_request_waits_for_the_revision_timeout_then_gets_504() {
    let dir = TempDir::new("gw");
    dir.write("hello.yaml", &objects(&[], "timeoutSeconds: 1"));
    let gw = gateway(&dir.0);
    let started = Instant::now();
    let (status, body) = get(&gw).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "activator request timeout")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_response_head_later_than_the_response_start_timeout_gets_504() {
    let (_pod, _dir, gw) = one_pod("timeoutSeconds: 30, responseStartTimeoutSeconds: 1");
    a_slow_head_gets_504_after_a_second(&gw).await;
    // A quicker answer is not cut.
    let (status, _, _) = knoxy_tests::get_host(&gw, "public", HOST, "/?sleep=100").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_pod_silent_for_the_idle_timeout_gets_504_before_its_head_and_a_cut_body_after() {
    let (_pod, _dir, gw) = one_pod("timeoutSeconds: 30, idleTimeoutSeconds: 1");
    a_slow_head_gets_504_after_a_second(&gw).await;

    // After the head, a silence as long ends the body with an error, not a clean end.
    let streamed = |gap: u32| {
        let url = gw.url("public", &format!("/?stream&n=3&gap={gap}"));
        request_with(Method::GET, &url, &[("host", HOST)], empty())
    };
    let response = knoxy_tests::send(&http1_client(), streamed(3000)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let read = knoxy_tests::within("the cut body", response.into_body().collect()).await;
    assert!(read.is_err(), "the body was cut, and the client knows it");
    // Chunks closer together than the idle timeout all arrive.
    let (status, _, body) = fetch(&http1_client(), streamed(300)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "chunk0\nchunk1\nchunk2\n");
}

#[tokio::test]
async fn a_pod_killed_under_load_fails_only_the_requests_it_had_and_the_rest_go_to_the_other() {
    let (a, mut b) = (
        backend_with(&["--suffix", "pod-a"]),
        backend_with(&["--suffix", "pod-b"]),
    );
    let dir = TempDir::new("gw");
    let spec = "containerConcurrency: 0, timeoutSeconds: 30";
    dir.write("hello.yaml", &objects(&[port(&a), port(&b)], spec));
    let gw = gateway(&dir.0);
    until(&gw, "pod b in use", |s, body| {
        s == StatusCode::OK && body.contains("pod-b")
    })
    .await;

    // 8 clients in a loop of short requests; pod b dies under them, still listed as ready.
    const CLIENTS: usize = 8;
    let killed = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = gw.url("public", "/?sleep=5");
            let killed = std::sync::Arc::clone(&killed);
            tokio::spawn(async move {
                let client = http1_client();
                let (mut failed, mut after_kill) = (Vec::new(), 0);
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until {
                    let started = Instant::now();
                    let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
                    let (status, _, body) = fetch(&client, req).await;
                    if status != StatusCode::OK {
                        failed.push((started, status, body));
                    } else if killed.get().is_some_and(|k| started > *k) {
                        after_kill += 1;
                    }
                }
                (failed, after_kill)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.signal(knoxy_tests::Signal::SIGKILL);
    killed.set(Instant::now()).unwrap();
    b.wait_exit(Duration::from_secs(5)).expect("pod b gone");
    let (mut failed, mut after_kill) = (Vec::new(), 0);
    for client in clients {
        let (f, n) = client.await.unwrap();
        failed.extend(f);
        after_kill += n;
    }
    let killed = *killed.get().unwrap();
    // Only a request already on pod b when it died may fail: one per client at most, each
    // started before the kill.
    assert!(failed.len() <= CLIENTS, "{failed:?}");
    for (started, status, body) in &failed {
        assert!(*started < killed, "sent after the kill: {status} {body}");
        assert_eq!(*status, StatusCode::BAD_GATEWAY, "{body}");
    }
    assert!(after_kill > 50, "pod a answered the rest: {after_kill}");
}

#[tokio::test]
async fn held_requests_keep_the_gateway_under_its_held_bytes_budget() {
    // 200 requests a second for 60 s to a CC=2 revision whose one pod answers in 50 ms (40 a
    // second): the rest are held until the budget is full, and past it get 503 at once.
    const BUDGET: usize = 16 << 20;
    const RATE: u64 = 200;
    const FOR: Duration = Duration::from_secs(60);
    let pod = backend_with(&[]);
    let dir = TempDir::new("gw");
    let spec = "containerConcurrency: 2, timeoutSeconds: 300";
    dir.write("hello.yaml", &objects(&[port(&pod)], spec));
    let budget = BUDGET.to_string();
    let gw = gateway_with(&dir.0, &["--activator-held-bytes", &budget]);
    until(&gw, "the pod in use", |s, _| s == StatusCode::OK).await;
    let before = knoxy_tests::rss_kib(gw.pid());

    let client = http1_client();
    let url = gw.url("public", "/?sleep=50");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut sent = Vec::new();
    let started = Instant::now();
    while started.elapsed() < FOR {
        tick.tick().await;
        let (client, req) = (
            client.clone(),
            request_with(Method::GET, &url, &[("host", HOST)], empty()),
        );
        sent.push(tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(60), client.request(req)).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    status.as_u16()
                }
                Ok(Err(_)) => 1,
                Err(_) => 2,
            }
        }));
    }
    let mut seen = std::collections::BTreeMap::new();
    for request in sent {
        *seen.entry(request.await.unwrap()).or_insert(0u32) += 1;
    }
    let peak = knoxy_tests::peak_rss_kib(gw.pid());
    let grew = peak.saturating_sub(before);
    eprintln!("statuses {seen:?}; RSS {before} KiB before, peak {peak} KiB (+{grew} KiB)");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [200, 503],
        "served or refused, nothing else: {seen:?}"
    );
    assert!(seen[&200] as u64 > 30 * FOR.as_secs(), "{seen:?}");
    let refused = "knoxy_activator_refused_total{namespace_name=\"default\",reason=\"held_bytes\",revision_name=\"hello-00001\"}";
    assert_eq!(
        metric(&gw, refused).await.as_deref(),
        Some(seen[&503].to_string().as_str())
    );
    assert!(
        grew * 1024 < BUDGET as u64,
        "RSS grew {grew} KiB, past the budget"
    );
}

#[tokio::test]
async fn past_the_queue_depth_a_request_gets_503_at_once() {
    let dir = TempDir::new("gw");
    dir.write("hello.yaml", &objects(&[], "timeoutSeconds: 2"));
    let gw = gateway_with(&dir.0, &["--activator-queue-depth", "1"]);
    // Three at once into one place: whichever comes first waits its 2 s, the others are refused.
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = gw.url("public", "/");
            tokio::spawn(async move {
                let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
                let (status, _, body) = fetch(&http1_client(), req).await;
                (status, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.unwrap());
    }
    answers.sort();
    let refused = |reason: &str| {
        format!("knoxy_activator_refused_total{{namespace_name=\"default\",reason=\"{reason}\",revision_name=\"hello-00001\"}}")
    };
    assert_eq!(
        metric(&gw, &refused("queue_full")).await.as_deref(),
        Some("2")
    );
    assert_eq!(metric(&gw, &refused("timeout")).await.as_deref(), Some("1"));
    assert_eq!(
        answers,
        [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "pending request queue full\n".to_owned()
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "pending request queue full\n".to_owned()
            ),
            (
                StatusCode::GATEWAY_TIMEOUT,
                "activator request timeout".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn requests_held_at_zero_pods_all_succeed_when_a_pod_appears_and_then_go_round_robin() {
    let (a, b) = (
        backend_with(&["--suffix", "pod-a"]),
        backend_with(&["--suffix", "pod-b"]),
    );
    let dir = TempDir::new("gw");
    // containerConcurrency above 3: Knative's round robin, so the turns can be counted.
    let spec = "containerConcurrency: 10, timeoutSeconds: 30";
    dir.write("hello.yaml", &objects(&[], spec));
    let gw = gateway(&dir.0);
    let held = send_many(&gw, 20);
    // Once all 20 are held, the revision gets its first pod.
    until_metric(&gw, "knoxy_activator_waiting_requests", "20").await;
    assert_eq!(
        metric(&gw, "activator_request_concurrency")
            .await
            .as_deref(),
        Some("20")
    );
    assert_eq!(
        metric(&gw, "knoxy_activator_pods").await.as_deref(),
        Some("0")
    );
    let appeared = Instant::now();
    dir.write("hello.yaml", &objects(&[port(&a)], spec));
    for request in held {
        let (status, body, answered) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("pod-a"), "{body}");
        assert!(
            answered >= appeared,
            "answered before the pod appeared: held, not failed"
        );
    }

    dir.write("hello.yaml", &objects(&[port(&a), port(&b)], spec));
    until(&gw, "pod b too", |s, body| {
        s == StatusCode::OK && body.contains("pod-b")
    })
    .await;
    let mut seen = (0, 0);
    for _ in 0..10 {
        let (status, body) = get(&gw).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match json(&body)["suffix"].as_str().unwrap_or_default() {
            "pod-a" => seen.0 += 1,
            "pod-b" => seen.1 += 1,
            other => panic!("answered by {other:?}: {body}"),
        }
    }
    assert_eq!(seen, (5, 5), "the pods in turn");
}

#[tokio::test]
async fn through_a_real_queue_the_app_sees_its_host_and_the_queue_counts_the_request_proxied() {
    let app = backend_with(&[]);
    let pod = queue(port(&app)).spawn();
    let dir = TempDir::new("gw");
    dir.write(
        "hello.yaml",
        &objects(&[pod.addr("main").port()], "timeoutSeconds: 30"),
    );
    let gw = gateway(&dir.0);
    let (status, body) = get(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = json(&body);
    assert_eq!(
        seen["host"], HOST,
        "the queue put the original Host back: {seen}"
    );
    for gone in [
        "k-original-host",
        "knative-serving-revision",
        "knative-serving-namespace",
    ] {
        assert!(seen["headers"].get(gone).is_none(), "{gone}: {seen}");
    }
    // The queue counted it as the activator's, so the autoscaler does not count it twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The autoscaler's scrape: a protobuf Stat.
        let req = request_with(Method::GET, &pod.url("metrics", "/metrics"), &[], empty());
        let body = knoxy_tests::read_body(knoxy_tests::send(&http1_client(), req).await).await;
        let stat = <knoxy_concurrency::Stat as prost::Message>::decode(body).expect("a Stat");
        if stat.proxied_request_count > 0.0 {
            assert_eq!(stat.proxied_request_count, stat.request_count, "{stat:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not counted as proxied: {stat:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // One report a second: keep a request in each window until it shows.
        let _ = get(&gw).await;
    }
}

#[tokio::test]
async fn a_pod_is_used_once_its_queue_answers_the_probe_not_before() {
    // The pod's queue is up but its app is not: Kubernetes lists it, not ready yet.
    let app_port = closed_port();
    let probe = format!(r#"{{"tcpSocket":{{"port":{app_port},"host":"127.0.0.1"}}}}"#);
    let pod = queue(app_port)
        .env("SERVING_READINESS_PROBE", probe)
        .spawn();
    let dir = TempDir::new("gw");
    let listed = [(pod.addr("main").port(), false)];
    dir.write("hello.yaml", &objects_with(&listed, "timeoutSeconds: 30"));
    let gw = gateway(&dir.0);
    let held = {
        let url = gw.url("public", "/");
        tokio::spawn(async move {
            let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
            fetch(&http1_client(), req).await
        })
    };
    until_metric(&gw, "knoxy_activator_waiting_requests", "1").await;
    assert_eq!(
        metric(&gw, "knoxy_activator_pods").await.as_deref(),
        Some("0")
    );
    // The app starts: the queue's probe passes, then the gateway's, and the request goes,
    // though Kubernetes still lists the pod as not ready.
    let _app = backend_with(&["--listen", &format!("127.0.0.1:{app_port}")]);
    let (status, _, body) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["host"], HOST);
    assert_eq!(
        metric(&gw, "knoxy_activator_pods").await.as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn cc_one_on_four_threads_never_puts_two_requests_on_one_pod() {
    let (a, b) = (backend_with(&[]), backend_with(&[]));
    let dir = TempDir::new("gw");
    let spec = "containerConcurrency: 1, timeoutSeconds: 60";
    dir.write("hello.yaml", &objects(&[port(&a), port(&b)], spec));
    let gw = gateway_with(&dir.0, &["--threads", "4"]);
    // 40 clients at once, each on its own connection (so on any of the 4 threads).
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let url = gw.url("public", "/?sleep=20");
            tokio::spawn(async move {
                let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
                fetch(&http1_client(), req).await.0
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    for pod in [&a, &b] {
        let stats = backend_stats(pod).await;
        assert_eq!(stats["peak_in_flight"], 1, "{stats}");
        assert!(
            stats["requests"].as_u64().unwrap_or(0) > 0,
            "both pods serve: {stats}"
        );
    }
}

// === The activator's own ports ===

#[tokio::test]
async fn the_activator_port_serves_a_revision_named_by_headers_or_host_and_answers_probes() {
    let pod = backend_with(&["--suffix", "pod-a"]);
    let dir = TempDir::new("gw");
    dir.write("hello.yaml", &objects(&[port(&pod)], "timeoutSeconds: 30"));
    let gw = gateway_with(
        &dir.0,
        &[
            "--activator-http",
            "127.0.0.1:0",
            "--activator-h2c",
            "127.0.0.1:0",
        ],
    );
    let call = |listener: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let url = gw.url(listener, "/");
        async move {
            let req = request_with(Method::GET, &url, &headers, empty());
            fetch(&http1_client(), req).await
        }
    };
    // Named by Knative-Serving-* (as an ingress sends them), or by the revision's Host.
    let by_headers = vec![
        ("host", "hello.default.example.com"),
        ("knative-serving-namespace", "default"),
        ("knative-serving-revision", "hello-00001"),
    ];
    for listener in ["activator", "activator-h2c"] {
        let (status, _, body) = call(listener, by_headers.clone()).await;
        assert_eq!(status, StatusCode::OK, "{listener}: {body}");
        let seen = json(&body);
        assert_eq!(seen["suffix"], "pod-a");
        assert_eq!(
            seen["headers"]["k-original-host"],
            json!(["hello.default.example.com"])
        );
        assert_eq!(seen["headers"]["k-proxy-request"], json!(["activator"]));
        assert!(
            seen["headers"].get("knative-serving-revision").is_none(),
            "{seen}"
        );
    }
    let by_host = vec![("host", "hello-00001.default.svc.cluster.local:80")];
    let (status, _, body) = call("activator", by_host).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An ingress in front already moved the Host: it stays (on a public port it would not).
    let mut moved = by_headers.clone();
    moved.push(("k-original-host", "first.example.com"));
    let (status, _, body) = call("activator", moved).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        json(&body)["headers"]["k-original-host"],
        json!(["first.example.com"])
    );
    let req = request_with(
        Method::GET,
        &gw.url("public", "/"),
        &[("host", HOST), ("k-original-host", "spoofed.example.com")],
        empty(),
    );
    let (_, _, body) = fetch(&http1_client(), req).await;
    assert_eq!(json(&body)["headers"]["k-original-host"], json!([HOST]));
    // A revision it does not know: Knative's 404.
    let unknown = vec![
        ("knative-serving-namespace", "default"),
        ("knative-serving-revision", "nope-00001"),
    ];
    let (status, _, body) = call("activator", unknown).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "Error getting active endpoint: revision not found\n"
        )
    );
    // Probes are answered here and wake nothing: the pod sees none of them.
    let before = backend_stats(&pod).await["requests"].clone();
    type Headers = Vec<(&'static str, &'static str)>;
    let probes: [(Headers, StatusCode, &str); 4] = [
        (
            vec![("k-network-probe", "activator")],
            StatusCode::OK,
            "activator",
        ),
        (vec![("user-agent", "kube-probe/1.30")], StatusCode::OK, ""),
        (
            vec![("k-network-probe", "queue")],
            StatusCode::BAD_REQUEST,
            "unexpected probe header value\n",
        ),
        (
            vec![("k-network-probe", "probe"), ("k-network-hash", "abc")],
            StatusCode::OK,
            "",
        ),
    ];
    for (headers, want_status, want_body) in probes {
        let (status, answer_headers, body) = call("activator", headers.clone()).await;
        assert_eq!(
            (status, body.as_str()),
            (want_status, want_body),
            "{headers:?}"
        );
        if headers.contains(&("k-network-hash", "abc")) {
            assert_eq!(answer_headers["k-network-hash"], "abc");
        }
    }
    assert_eq!(
        backend_stats(&pod).await["requests"],
        before,
        "no probe reached the pod"
    );
    assert_eq!(
        metric(&gw, "knoxy_activator_wait_seconds_count").await,
        None,
        "no probe waited for a pod"
    );
}

// === Demand to the autoscaler ===

#[tokio::test]
async fn the_activator_tls_port_serves_with_its_certificate_files_and_follows_their_rotation() {
    const SVC: &str = "hello-00001.default.svc.cluster.local";
    let pod = backend_with(&["--suffix", "pod-a"]);
    let dir = TempDir::new("gw");
    dir.write("hello.yaml", &objects(&[port(&pod)], "timeoutSeconds: 30"));
    let certs = TempDir::new("certs");
    let (cert, key, root) = common::certificate(&[SVC]);
    certs.write("tls.crt", &cert);
    certs.write("tls.key", &key);
    let (cert_path, key_path) = (certs.0.join("tls.crt"), certs.0.join("tls.key"));
    let gw = gateway_with(
        &dir.0,
        &[
            "--activator-tls",
            "127.0.0.1:0",
            "--activator-tls-cert",
            cert_path.to_str().unwrap(),
            "--activator-tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let addr = gw.addr("activator-tls");
    // The revision is named by its Host, over h2 and over HTTP/1.1.
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let tls = common::tls_connector(&root, alpn);
        let (status, _, body) = common::get_tls(addr, SVC, "/", &tls).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(json(&body)["suffix"], "pod-a");
        assert_eq!(
            json(&body)["headers"]["k-proxy-request"],
            json!(["activator"])
        );
    }

    // A rotated Secret: the next handshakes present the new certificate.
    let (cert, key, new_root) = common::certificate(&[SVC]);
    certs.write("tls.key", &key);
    certs.write("tls.crt", &cert);
    let tls = common::tls_connector(&new_root, b"h2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::get_tls(addr, SVC, "/", &tls).await.is_err() {
        assert!(Instant::now() < deadline, "still the old certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stand-in for Knative's autoscaler stat server on `listener`: each binary frame decoded
/// as `WireStatMessages`, its messages sent on; it stops when the listener task is aborted.
fn stat_server(
    listener: tokio::net::TcpListener,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<knoxy_concurrency::WireStatMessage>,
) {
    use futures_util::StreamExt;
    use prost::Message as _;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            connections.spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(frame)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = frame {
                        let msgs = knoxy_concurrency::WireStatMessages::decode(bytes)
                            .expect("WireStatMessages");
                        for m in msgs.messages {
                            let _ = tx.send(m);
                        }
                    }
                }
            });
        }
    });
    (server, rx)
}

async fn next_stat(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<knoxy_concurrency::WireStatMessage>,
) -> (String, String, knoxy_concurrency::Stat) {
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a stat within 10 s")
        .expect("the server runs");
    (m.namespace, m.name, m.stat.expect("a stat"))
}

#[tokio::test]
async fn the_autoscaler_hears_of_the_first_request_before_any_pod_and_the_socket_comes_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, mut stats) = stat_server(listener);
    let pod = backend_with(&["--suffix", "pod-a"]);
    let dir = TempDir::new("gw");
    let spec = "containerConcurrency: 0, timeoutSeconds: 30";
    dir.write("hello.yaml", &objects(&[], spec));
    let url = format!("ws://{addr}");
    let gw = gateway_with(
        &dir.0,
        &[
            "--autoscaler-url",
            &url,
            "--pod-name",
            "gw-test",
            "--activator-http",
            "127.0.0.1:0",
        ],
    );

    // Probes on the activator's port are no demand: nothing is reported for them.
    for probe in [
        ("k-network-probe", "activator"),
        ("user-agent", "kube-probe/1.31"),
    ] {
        let headers = [
            ("knative-serving-namespace", "default"),
            ("knative-serving-revision", "hello-00001"),
            probe,
        ];
        let req = request_with(Method::GET, &gw.url("activator", "/"), &headers, empty());
        assert_eq!(fetch(&http1_client(), req).await.0, StatusCode::OK);
    }
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stats.recv()).await;
    assert!(quiet.is_err(), "a probe was reported: {quiet:?}");

    let held = {
        let url = gw.url("public", "/");
        tokio::spawn(async move {
            let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
            fetch(&http1_client(), req).await.0
        })
    };
    // The first request is reported at once, while the revision has no pod.
    let (ns, name, stat) = next_stat(&mut stats).await;
    assert_eq!((ns.as_str(), name.as_str()), ("default", "hello-00001"));
    assert_eq!(stat.pod_name, "gw-test");
    assert_eq!(
        (stat.average_concurrent_requests, stat.request_count),
        (1.0, 1.0)
    );
    // Then a batch a second: the held request keeps its revision's demand at 1.
    let (_, _, stat) = next_stat(&mut stats).await;
    assert_eq!(
        stat.request_count, 0.0,
        "the first request was reported already"
    );
    let (_, _, stat) = next_stat(&mut stats).await;
    assert_eq!(stat.average_concurrent_requests, 1.0, "{stat:?}");
    dir.write("hello.yaml", &objects(&[port(&pod)], spec));
    assert_eq!(held.await.unwrap(), StatusCode::OK);

    // The autoscaler restarts on the same address: the gateway dials again, and reports.
    server.abort();
    let _ = server.await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (_server, mut stats) = stat_server(listener);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "no report after the autoscaler came back"
        );
        assert_eq!(get(&gw).await.0, StatusCode::OK);
        let got = tokio::time::timeout(Duration::from_millis(500), stats.recv()).await;
        if let Ok(Some(m)) = got {
            assert_eq!(m.name, "hello-00001");
            break;
        }
    }
}

#[tokio::test]
async fn two_hundred_requests_held_at_zero_all_succeed_through_a_queue_that_appears_2s_later() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (_server, mut stats) = stat_server(listener);
    let dir = TempDir::new("gw");
    let spec = "containerConcurrency: 0, timeoutSeconds: 60";
    dir.write("hello.yaml", &objects(&[], spec));
    let gw = gateway_with(&dir.0, &["--autoscaler-url", &url]);

    let held = send_many(&gw, 200);
    // The autoscaler hears of the revision's first request while it has no pod at all.
    let (_, name, stat) = next_stat(&mut stats).await;
    let reported = Instant::now();
    assert_eq!((name.as_str(), stat.request_count), ("hello-00001", 1.0));
    until_metric(&gw, "knoxy_activator_waiting_requests", "200").await;

    // 2 s later the revision gets its first pod: a real knoxy-queue before the app.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app = backend_with(&["--suffix", "app"]);
    let pod = queue(port(&app)).spawn();
    let appeared = Instant::now();
    dir.write("hello.yaml", &objects(&[pod.addr("main").port()], spec));
    assert!(reported < appeared);
    for request in held {
        let (status, body, answered) = request.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(json(&body)["suffix"], "app");
        assert!(answered > appeared, "held, not failed");
    }
    assert_eq!(
        metric(&gw, "knoxy_activator_waiting_requests")
            .await
            .as_deref(),
        Some("0")
    );
}
