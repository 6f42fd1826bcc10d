//! knoxy-queue's probes (contract §3.2, §6): what it answers itself, and how it checks the
//! user container's readiness. Real binaries on loopback.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use knoxy_tests::{
    backend, backend_stats, closed_port, empty, fetch, get, http1_client, json, post, queue,
    request_with, within, within_for, Proc,
};
use serde_json::Value;

const KUBE_PROBE: [(&str, &str); 2] = [
    ("user-agent", "kube-probe/1.30"),
    ("k-network-probe", "queue"),
];

async fn call(
    q: &Proc,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    fetch(
        &http1_client(),
        request_with(Method::GET, &q.url("main", path), headers, empty()),
    )
    .await
}

fn port_of(p: &Proc) -> u16 {
    p.addr("backend").port()
}

fn probes(stats: &Value) -> Vec<Value> {
    stats["probes"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn kubelet_probe_reports_ready_when_the_user_container_listens() {
    let b = backend();
    let q = queue(port_of(&b))
        .env(
            "SERVING_READINESS_PROBE",
            format!(
                r#"{{"tcpSocket":{{"port":{},"host":"127.0.0.1"}}}}"#,
                port_of(&b)
            ),
        )
        .spawn();
    let (status, headers, body) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "queue"));
    assert!(
        headers.get("x-content-type-options").is_none(),
        "the queue body is not an http.Error"
    );
    assert_eq!(
        backend_stats(&b).await["requests"],
        0,
        "probes answered by the queue never reach the user"
    );
}

#[tokio::test]
async fn activator_probe_on_healthz_gets_queue() {
    let b = backend();
    let q = queue(port_of(&b))
        .env("SERVING_READINESS_PROBE", r#"{"tcpSocket":{}}"#)
        .spawn();
    let (status, _, body) = call(
        &q,
        "/healthz",
        &[
            ("user-agent", "Knative-Activator-Probe"),
            ("k-network-probe", "queue"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "queue"));
}

#[tokio::test]
async fn probe_user_agents_with_other_probe_values_are_rejected() {
    let b = backend();
    let q = queue(port_of(&b)).spawn();
    let (status, headers, body) = call(&q, "/", &[("user-agent", "kube-probe/1.30")]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "unexpected probe header value: \n")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (status, _, body) = call(
        &q,
        "/",
        &[
            ("user-agent", "Knative-Autoscaling-Probe"),
            ("k-network-probe", "activator"),
        ],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "unexpected probe header value: activator\n"
        )
    );
    let (status, _, body) = call(
        &q,
        "/",
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "probe"),
        ],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "unexpected probe header value: probe\n"
        )
    );
}

#[tokio::test]
async fn ingress_probe_echoes_the_hash_and_never_reaches_the_user() {
    let b = backend();
    let q = queue(port_of(&b)).spawn();
    let (status, headers, body) = call(
        &q,
        "/",
        &[("k-network-probe", "probe"), ("k-network-hash", "abc")],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(headers["k-network-hash"], "abc");
    let (status, _, body) = call(&q, "/", &[("k-network-probe", "probe")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        "a probe request must contain a non-empty \"K-Network-Hash\" header\n"
    );
    assert_eq!(backend_stats(&b).await["requests"], 0);
}

#[tokio::test]
async fn network_probe_queue_without_a_probe_user_agent_is_proxied() {
    let b = backend();
    let q = queue(port_of(&b)).spawn();
    let (status, _, body) = call(
        &q,
        "/x",
        &[("user-agent", "curl/8"), ("k-network-probe", "queue")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["headers"]["k-network-probe"][0], "queue");
}

#[tokio::test]
async fn unready_user_container_gives_503_after_the_aggressive_window() {
    let port = closed_port();
    let q = queue(port)
        .env(
            "SERVING_READINESS_PROBE",
            format!(r#"{{"tcpSocket":{{"port":{port},"host":"127.0.0.1"}}}}"#),
        )
        .spawn();
    let started = Instant::now();
    // Bounded here, not by `fetch`'s 10 s: the answer comes after Knative's 10 s of retries.
    let req = request_with(Method::GET, &q.url("main", "/"), &KUBE_PROBE, empty());
    let response = within_for(
        Duration::from_secs(20),
        "aggressive probe",
        http1_client().request(req),
    )
    .await
    .expect("a response");
    let status = response.status();
    let body = knoxy_tests::read_body(response).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b""[..])
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9),
        "gave up after {took:?}, Knative retries for 10 s"
    );
    assert!(
        q.wait_for_output("aggressive probe error", Duration::from_secs(2)),
        "{}",
        q.stderr_text()
    );
}

#[tokio::test]
async fn probe_passes_soon_after_the_app_starts_listening() {
    let port = closed_port();
    let q = queue(port)
        .env("SERVING_READINESS_PROBE", r#"{"tcpSocket":{}}"#)
        .spawn();
    let url = q.url("main", "/");
    let probe = tokio::spawn(async move {
        let r = fetch(
            &http1_client(),
            request_with(Method::GET, &url, &KUBE_PROBE, empty()),
        )
        .await;
        (r.0, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = Proc::builder("knoxy-testbackend")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .wait_for(&["backend"])
        .spawn();
    let listening = Instant::now();
    let (status, answered) = within("probe answer", probe).await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "the probe keeps polling until the app listens"
    );
    // Only an upper bound that cannot flake: Knative's aggressive probe polls every 50 ms.
    assert!(answered.duration_since(listening) < Duration::from_secs(2));
    drop(b);
}

#[tokio::test]
async fn http_probe_follows_the_user_health_and_sends_knatives_headers() {
    let b = backend();
    let port = port_of(&b);
    let q = queue(port)
        .env(
            "SERVING_READINESS_PROBE",
            format!(
                r#"{{"httpGet":{{"path":"/healthz","port":{port},"host":"127.0.0.1","scheme":"HTTP","httpHeaders":[{{"name":"X-Custom","value":"v"}}]}},"timeoutSeconds":1,"periodSeconds":5,"successThreshold":1,"failureThreshold":3}}"#
            ),
        )
        .spawn();
    post(&b.url("backend", "/-/health?status=503"), "").await;
    let started = Instant::now();
    let (status, _, _) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "standard mode makes one attempt"
    );
    post(&b.url("backend", "/-/health?status=200"), "").await;
    let (status, _, body) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "queue"));

    let seen = probes(&backend_stats(&b).await);
    let last = seen.last().expect("the backend saw the probe");
    assert_eq!(last["path"], "/healthz");
    assert_eq!(last["proto"], "HTTP/1.1");
    assert_eq!(last["headers"]["user-agent"][0], "kube-probe//");
    assert_eq!(last["headers"]["x-custom"][0], "v");
    assert_eq!(last["headers"]["connection"][0], "close");
    assert_eq!(last["headers"]["accept-encoding"][0], "gzip");
}

#[tokio::test]
async fn http2_auto_detection_probes_over_h2c() {
    let b = backend();
    let port = port_of(&b);
    let q = queue(port)
        .env("ENABLE_HTTP2_AUTO_DETECTION", "true")
        .env(
            "SERVING_READINESS_PROBE",
            format!(r#"{{"httpGet":{{"path":"/healthz","port":{port},"httpHeaders":[{{"name":"X-Custom","value":"v"}}]}}}}"#),
        )
        .spawn();
    let (status, _, _) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!(status, StatusCode::OK);
    let seen = probes(&backend_stats(&b).await);
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(seen.iter().all(|p| p["proto"] == "HTTP/2.0"), "{seen:?}");
    assert!(
        seen.last().unwrap()["headers"]["x-custom"][0] == "v",
        "the real probe carries the custom headers"
    );
}

#[tokio::test]
async fn grpc_probe_follows_the_health_service() {
    let b = backend();
    let port = port_of(&b);
    let q = queue(port)
        .env(
            "SERVING_READINESS_PROBE",
            format!(r#"{{"grpc":{{"port":{port},"service":""}},"periodSeconds":1}}"#),
        )
        .spawn();
    let (status, _, body) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "queue"));
    post(&b.url("backend", "/-/health?status=503"), "").await;
    let (status, _, _) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "NOT_SERVING fails the probe"
    );
}

#[tokio::test]
async fn empty_readiness_probe_is_always_ready() {
    let q = queue(closed_port())
        .env("SERVING_READINESS_PROBE", "")
        .spawn();
    let (status, _, body) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "queue"));
}

#[tokio::test]
async fn multi_container_probes_must_all_pass() {
    let b = backend();
    let (open, closed) = (port_of(&b), closed_port());
    let probe = |second: u16| {
        format!(
            r#"[{{"tcpSocket":{{"port":{open}}},"periodSeconds":1}},{{"tcpSocket":{{"port":{second}}},"periodSeconds":1}}]"#
        )
    };
    let q = queue(open)
        .env("ENABLE_MULTI_CONTAINER_PROBES", "true")
        .env("SERVING_READINESS_PROBE", probe(closed))
        .spawn();
    assert_eq!(
        call(&q, "/", &KUBE_PROBE).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let q = queue(open)
        .env("ENABLE_MULTI_CONTAINER_PROBES", "true")
        .env("SERVING_READINESS_PROBE", probe(open))
        .spawn();
    assert_eq!(call(&q, "/", &KUBE_PROBE).await.0, StatusCode::OK);
}

#[tokio::test]
async fn success_threshold_counts_consecutive_successes_for_the_process_lifetime() {
    let b = backend();
    let port = port_of(&b);
    let q = queue(port)
        .env(
            "SERVING_READINESS_PROBE",
            format!(r#"{{"httpGet":{{"path":"/healthz","port":{port}}},"successThreshold":3}}"#),
        )
        .spawn();
    assert_eq!(call(&q, "/", &KUBE_PROBE).await.0, StatusCode::OK);
    assert_eq!(
        probes(&backend_stats(&b).await).len(),
        3,
        "the first check needs 3 successes"
    );
    assert_eq!(call(&q, "/", &KUBE_PROBE).await.0, StatusCode::OK);
    assert_eq!(
        probes(&backend_stats(&b).await).len(),
        4,
        "later checks need one more"
    );
}

#[tokio::test]
async fn probes_are_answered_while_the_breaker_is_full() {
    let b = backend();
    let q = queue(port_of(&b)).env("CONTAINER_CONCURRENCY", "1").spawn();
    let url = q.url("main", "/?sleep=3000");
    let slow: Vec<_> = (0..11)
        .map(|_| tokio::spawn(get_owned(url.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, _, body) = call(&q, "/", &KUBE_PROBE).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "queue"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "probes skip the breaker"
    );
    for s in slow {
        s.abort();
    }
}

async fn get_owned(url: String) -> StatusCode {
    get(&url).await.0
}
