//! knoxy-queue's metrics (contract §8): the autoscaler's `metrics.Stat` protobuf on the metrics
//! port, reported once a second, and the user-facing Prometheus metrics of `requestMetrics`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use knoxy_tests::{
    backend, backend_stats, closed_port, empty, fetch, get, http1_client, json, queue, read_body,
    request_with, send, Proc,
};
use prost::Message as _;

/// `metrics.Stat` of `S/pkg/autoscaler/metrics/stat.proto`, as the autoscaler decodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct Stat {
    #[prost(string, tag = "1")]
    pod_name: String,
    #[prost(double, tag = "2")]
    average_concurrent_requests: f64,
    #[prost(double, tag = "3")]
    average_proxied_concurrent_requests: f64,
    #[prost(double, tag = "4")]
    request_count: f64,
    #[prost(double, tag = "5")]
    proxied_request_count: f64,
    #[prost(double, tag = "6")]
    process_uptime: f64,
    #[prost(int64, tag = "7")]
    timestamp: i64,
}

const PROMETHEUS: &str = r#"{"requestMetrics":{"protocol":"prometheus"}}"#;
const TOLERANCE: f64 = 0.15;

fn port(b: &Proc) -> u16 {
    b.addr("backend").port()
}

/// A request to the metrics port: (status, headers, raw body).
async fn metrics_call(
    q: &Proc,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let response = send(
        &http1_client(),
        request_with(method, &q.url("metrics", path), headers, empty()),
    )
    .await;
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, read_body(response).await)
}

fn decode(headers: &HeaderMap, body: &[u8], what: &str) -> Stat {
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/protobuf"[..]),
        "{what}: the autoscaler requires exactly application/protobuf"
    );
    Stat::decode(body).unwrap_or_else(|e| panic!("{what}: not a metrics.Stat ({e}): {body:?}"))
}

/// `GET /metrics` as the autoscaler sends it.
async fn scrape(q: &Proc) -> Stat {
    let (status, headers, body) = metrics_call(
        q,
        Method::GET,
        "/metrics",
        &[("accept", "application/protobuf")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "scrape: {body:?}");
    decode(&headers, &body, "scrape")
}

fn near(value: f64, want: f64) -> bool {
    (value - want).abs() < TOLERANCE
}

/// Reports scraped so far, keyed by their `process_uptime`: one report closes each 1 s window.
struct Reports<'a> {
    q: &'a Proc,
    seen: BTreeMap<u64, Stat>,
}

impl<'a> Reports<'a> {
    fn new(q: &'a Proc) -> Self {
        Self {
            q,
            seen: BTreeMap::new(),
        }
    }

    async fn scrape(&mut self) -> Stat {
        let stat = scrape(self.q).await;
        self.seen.insert(uptime(&stat), stat.clone());
        stat
    }

    /// Scrapes every 100 ms until a report satisfies `pred`; panics with every report seen.
    async fn until(&mut self, what: &str, limit: Duration, pred: impl Fn(&Stat) -> bool) -> Stat {
        let deadline = Instant::now() + limit;
        loop {
            let stat = self.scrape().await;
            if pred(&stat) {
                return stat;
            }
            assert!(
                Instant::now() < deadline,
                "no report {what} within {limit:?}; reports by uptime: {:#?}",
                self.seen
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Uptime of the latest report: the window closed then ended before now.
    async fn latest(&mut self) -> u64 {
        uptime(&self.scrape().await)
    }

    /// Waits for the report of the window open now; returns its uptime.
    async fn close_window(&mut self) -> u64 {
        let open = self.latest().await;
        let stat = self
            .until("closing the open window", Duration::from_secs(3), |s| {
                uptime(s) > open
            })
            .await;
        uptime(&stat)
    }

    /// Sum of `field` over the windows after `after` up to `upto`, each of which must have been seen.
    fn sum(&self, after: u64, upto: u64, field: impl Fn(&Stat) -> f64) -> f64 {
        (after + 1..=upto)
            .map(|u| {
                let stat = self.seen.get(&u).unwrap_or_else(|| {
                    panic!(
                        "missed the report of uptime {u}; seen: {:?}",
                        self.seen.keys()
                    )
                });
                field(stat)
            })
            .sum()
    }
}

fn uptime(stat: &Stat) -> u64 {
    assert!(
        stat.process_uptime >= 0.0 && stat.process_uptime.fract() == 0.0,
        "process_uptime counts whole seconds: {stat:?}"
    );
    stat.process_uptime as u64
}

async fn get_with(q: &Proc, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let (status, _, body) = fetch(
        &http1_client(),
        request_with(Method::GET, &q.url("main", path), headers, empty()),
    )
    .await;
    (status, body)
}

/// Values of the samples of `name` in Prometheus text: (labels, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
                let end = rest.rfind('}')?;
                (rest[..end].to_owned(), rest[end + 1..].trim())
            } else if rest.starts_with(' ') {
                (String::new(), rest.trim())
            } else {
                return None;
            };
            Some((
                labels,
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {l:?}: {e}")),
            ))
        })
        .collect()
}

/// Sum of the samples of `name` whose labels contain every one of `labels`.
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name)
        .iter()
        .filter(|(l, _)| labels.iter().all(|want| l.contains(want)))
        .map(|(_, v)| v)
        .sum()
}

// === The autoscaler endpoint ===

#[tokio::test]
async fn metrics_port_serves_a_protobuf_stat_with_the_pod_name_and_a_growing_uptime() {
    let b = backend();
    let q = queue(port(&b))
        .env("SERVING_POD", "metrics-pod-7f9c")
        .spawn();
    let mut reports = Reports::new(&q);
    let first = reports
        .until("after the first tick", Duration::from_secs(3), |s| {
            s.process_uptime >= 1.0
        })
        .await;
    assert_eq!(first.pod_name, "metrics-pod-7f9c");
    assert_eq!(first.timestamp, 0, "the queue never sets timestamp");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = reports.scrape().await;
    assert_eq!(later.pod_name, "metrics-pod-7f9c");
    let grown = later.process_uptime - first.process_uptime;
    assert!(
        (1.0..=4.0).contains(&grown),
        "process_uptime went from {} to {} in about 2 s",
        first.process_uptime,
        later.process_uptime
    );
}

#[tokio::test]
async fn post_and_an_accept_of_protobuf_get_protobuf_too() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    for (method, headers) in [
        (Method::POST, &[][..]),
        (Method::GET, &[("accept", "application/protobuf")][..]),
        (Method::GET, &[][..]),
        (
            Method::GET,
            &[("accept", "application/protobuf, text/plain;q=0.5")][..],
        ),
    ] {
        let what = format!("{method} /metrics with {headers:?}");
        let (status, response_headers, body) =
            metrics_call(&q, method.clone(), "/metrics", headers).await;
        assert_eq!(status, StatusCode::OK, "{what}");
        let stat = decode(&response_headers, &body, &what);
        assert_eq!(stat.pod_name, "hello-00001-deployment-1", "{what}");
    }
}

/// A documented Knoxy extension: Knative's queue answers protobuf whatever `Accept` says.
#[tokio::test]
async fn accept_text_plain_gets_prometheus_text_with_the_same_numbers() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    let slow_url = q.url("main", "/slow?sleep=3500");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    let mut reports = Reports::new(&q);
    reports
        .until(
            "with the slow request in flight for a window",
            Duration::from_secs(4),
            |s| s.average_concurrent_requests > 0.5,
        )
        .await;

    // The report changes once a second: compare text with protobuf scraped on both sides of it.
    let mut compared = false;
    for _ in 0..5 {
        let before = reports.scrape().await;
        let (status, headers, body) =
            metrics_call(&q, Method::GET, "/metrics", &[("accept", "text/plain")]).await;
        let after = reports.scrape().await;
        assert_eq!(status, StatusCode::OK);
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain"),
            "Content-Type {content_type}"
        );
        if before != after {
            continue;
        }
        let text = String::from_utf8(body.to_vec()).unwrap();
        for (name, want) in [
            (
                "queue_average_concurrent_requests",
                before.average_concurrent_requests,
            ),
            (
                "queue_average_proxied_concurrent_requests",
                before.average_proxied_concurrent_requests,
            ),
            ("queue_requests_per_second", before.request_count),
            (
                "queue_proxied_operations_per_second",
                before.proxied_request_count,
            ),
            ("process_uptime", before.process_uptime),
        ] {
            let found = samples(&text, name);
            assert_eq!(found.len(), 1, "one sample of {name} in\n{text}");
            assert_eq!(found[0].1, want, "{name} in\n{text}\nprotobuf: {before:?}");
            assert!(
                text.contains(&format!("# TYPE {name} gauge")),
                "{name} is a gauge:\n{text}"
            );
        }
        assert!(before.average_concurrent_requests > 0.5, "{before:?}");
        compared = true;
        break;
    }
    assert!(compared, "the report changed during every comparison");
    slow.abort();
}

#[tokio::test]
async fn other_paths_on_the_metrics_port_get_404() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    for path in ["/other", "/metrics/x", "/"] {
        let (status, _, body) = metrics_call(&q, Method::GET, path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(&body[..], b"404 page not found\n", "{path}");
    }
}

#[tokio::test]
async fn two_overlapping_requests_one_from_the_activator_average_two_and_one_concurrent() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    let mut reports = Reports::new(&q);
    let before = reports.latest().await;

    let plain_url = q.url("main", "/plain?sleep=2500");
    let proxied_url = q.url("main", "/proxied?sleep=2500");
    let plain = tokio::spawn(async move { get(&plain_url).await });
    let proxied = tokio::spawn(async move {
        fetch(
            &http1_client(),
            request_with(
                Method::GET,
                &proxied_url,
                &[("k-proxy-request", "activator")],
                empty(),
            ),
        )
        .await
    });
    let full = reports
        .until(
            "of a full window with both requests in flight",
            Duration::from_secs(4),
            |s| {
                near(s.average_concurrent_requests, 2.0)
                    && near(s.average_proxied_concurrent_requests, 1.0)
            },
        )
        .await;
    assert_eq!(full.pod_name, "hello-00001-deployment-1");

    for task in [plain, proxied] {
        let (status, _, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The window open now saw the requests end; the next one has nothing in flight.
    reports.close_window().await;
    let after = reports.close_window().await;
    let requests = reports.sum(before, after, |s| s.request_count);
    let proxied = reports.sum(before, after, |s| s.proxied_request_count);
    assert_eq!(
        (requests, proxied),
        (2.0, 1.0),
        "arrivals over the windows {before}..={after}: {:#?}",
        reports.seen
    );
    let last = &reports.seen[&after];
    assert!(
        last.average_concurrent_requests < TOLERANCE,
        "nothing in flight in the last window: {last:?}"
    );
}

#[tokio::test]
async fn three_quick_requests_give_a_request_count_of_three_in_one_window() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    let mut reports = Reports::new(&q);
    // Send right after a tick so the three land in the same window.
    let before = reports.close_window().await;
    for i in 0..3 {
        let (status, body) = get_with(&q, &format!("/quick/{i}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let window = reports
        .until("counting three requests", Duration::from_secs(3), |s| {
            s.request_count == 3.0
        })
        .await;
    assert_eq!(window.proxied_request_count, 0.0, "{window:?}");
    let after = reports.close_window().await;
    assert_eq!(
        reports.sum(before, after, |s| s.request_count),
        3.0,
        "{:#?}",
        reports.seen
    );
}

#[tokio::test]
async fn probes_and_kubelet_probe_header_requests_are_not_counted() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    let mut reports = Reports::new(&q);
    let before = reports.latest().await;

    for _ in 0..3 {
        let answer = get_with(
            &q,
            "/",
            &[
                ("user-agent", "kube-probe/1.30"),
                ("k-network-probe", "queue"),
            ],
        )
        .await;
        assert_eq!(answer, (StatusCode::OK, "queue".to_owned()));
    }
    for _ in 0..2 {
        let answer = get_with(
            &q,
            "/",
            &[("k-network-probe", "probe"), ("k-network-hash", "h")],
        )
        .await;
        assert_eq!(answer, (StatusCode::OK, String::new()));
    }
    for _ in 0..2 {
        let (status, body) = get_with(&q, "/kubelet", &[("k-kubelet-probe", "1")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            json(&body)["uri"],
            "/kubelet",
            "K-Kubelet-Probe is proxied to the user container"
        );
    }
    // One ordinary request shows that this window does count.
    let (status, body) = get_with(&q, "/counted", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let after = reports.close_window().await;
    assert_eq!(
        reports.sum(before, after, |s| s.request_count),
        1.0,
        "only the ordinary request counts: {:#?}",
        reports.seen
    );
    assert_eq!(backend_stats(&b).await["requests"], 3);
}

#[tokio::test]
async fn network_probe_queue_without_a_probe_user_agent_is_proxied_and_counted() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    let mut reports = Reports::new(&q);
    let before = reports.latest().await;
    for _ in 0..2 {
        let (status, body) = get_with(
            &q,
            "/looks-like-a-probe",
            &[("user-agent", "curl/8.5.0"), ("k-network-probe", "queue")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let seen = json(&body);
        assert_eq!(seen["uri"], "/looks-like-a-probe");
        assert_eq!(seen["headers"]["k-network-probe"][0], "queue");
    }
    let after = reports.close_window().await;
    assert_eq!(
        reports.sum(before, after, |s| s.request_count),
        2.0,
        "{:#?}",
        reports.seen
    );
}

#[tokio::test]
async fn waiting_requests_count_in_the_average_concurrency_with_one_slot() {
    let b = backend();
    let q = queue(port(&b)).env("CONTAINER_CONCURRENCY", "1").spawn();
    let mut reports = Reports::new(&q);
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let url = q.url("main", &format!("/wait/{i}?sleep=3000"));
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let full = reports
        .until(
            "averaging four concurrent requests",
            Duration::from_secs(4),
            |s| near(s.average_concurrent_requests, 4.0),
        )
        .await;
    assert_eq!(full.average_proxied_concurrent_requests, 0.0, "{full:?}");
    assert_eq!(
        backend_stats(&b).await["peak_in_flight"],
        1,
        "the breaker let one request through at a time"
    );
    for task in tasks {
        task.abort();
    }
}

// === User metrics ===

async fn user_metrics_text(q: &Proc) -> String {
    let (status, headers, body) = get(&q.url("usermetrics", "/metrics")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content_type = headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain"),
        "Content-Type {content_type}"
    );
    body
}

/// A request to send: path, headers and the status it must get.
type Sent<'a> = (&'a str, &'a [(&'a str, &'a str)], StatusCode);

fn with_user_metrics(b: &Proc) -> knoxy_tests::ProcBuilder {
    queue(port(b))
        .env("OBSERVABILITY_CONFIG", PROMETHEUS)
        .wait_for(&["usermetrics"])
}

#[tokio::test]
async fn user_metrics_count_requests_by_route_tag_and_leave_out_probes() {
    let b = backend();
    let q = with_user_metrics(&b).spawn();
    let before = user_metrics_text(&q).await;
    assert_eq!(
        total(&before, "http_server_request_duration_seconds_count", &[]),
        0.0,
        "{before}"
    );

    let blue = [("knative-serving-tag", "blue")];
    let default_route = [("knative-serving-default-route", "true")];
    let requests: [Sent; 5] = [
        ("/tagged", &blue, StatusCode::OK),
        ("/tagged", &blue, StatusCode::OK),
        ("/plain", &[], StatusCode::OK),
        ("/plain?status=404", &[], StatusCode::NOT_FOUND),
        ("/default", &default_route, StatusCode::OK),
    ];
    for (path, headers, want) in requests {
        let (status, body) = get_with(&q, path, headers).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    let probes: [&[(&str, &str)]; 4] = [
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
        &[("k-network-probe", "probe"), ("k-network-hash", "h")],
        &[("k-kubelet-probe", "1")],
        &[("k-network-probe", "queue")],
    ];
    for headers in probes {
        let (status, body) = get_with(&q, "/probe", headers).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
    }

    // A request is recorded when its response ends, which may be just after the client has it.
    let deadline = Instant::now() + Duration::from_secs(3);
    let text = loop {
        let text = user_metrics_text(&q).await;
        let server = total(&text, "http_server_request_duration_seconds_count", &[]);
        if server >= 5.0 || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let server = "http_server_request_duration_seconds_count";
    let invocation = "kn_serving_invocation_duration_seconds_count";
    assert_eq!(total(&text, server, &[]), 5.0, "no probes counted:\n{text}");
    assert_eq!(
        total(&text, invocation, &[]),
        5.0,
        "no probes counted:\n{text}"
    );
    assert_eq!(
        total(&text, server, &[r#"kn_route_tag="blue""#]),
        2.0,
        "{text}"
    );
    assert_eq!(
        total(&text, server, &[r#"kn_route_tag="kn:disabled""#]),
        2.0,
        "{text}"
    );
    assert_eq!(
        total(&text, server, &[r#"kn_route_tag="kn:default""#]),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(
            &text,
            server,
            &[
                r#"kn_route_tag="kn:disabled""#,
                r#"http_response_status_code="404""#,
                r#"http_request_method="GET""#,
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(&text, invocation, &[r#"http_response_status_code="404""#]),
        1.0,
        "{text}"
    );
    // Histograms: the +Inf bucket holds every observation.
    assert_eq!(
        total(
            &text,
            "http_server_request_duration_seconds_bucket",
            &[r#"le="+Inf""#]
        ),
        5.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE kn_serving_invocation_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        !text.contains("kn_serving_queue_depth"),
        "no queue depth without a breaker:\n{text}"
    );
}

#[tokio::test]
async fn user_metrics_show_the_queue_depth_only_with_a_breaker() {
    let b = backend();
    let q = with_user_metrics(&b)
        .env("CONTAINER_CONCURRENCY", "2")
        .spawn();
    let (status, body) = get_with(&q, "/one", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = user_metrics_text(&q).await;
    let depth = samples(&text, "kn_serving_queue_depth");
    assert_eq!(depth.len(), 1, "one queue depth sample with CC=2:\n{text}");
    assert!(depth[0].1 >= 0.0, "{text}");
}

#[tokio::test]
async fn user_metrics_answer_405_to_post() {
    let b = backend();
    let q = with_user_metrics(&b).spawn();
    let (status, _, body) = fetch(
        &http1_client(),
        request_with(
            Method::POST,
            &q.url("usermetrics", "/metrics"),
            &[],
            empty(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    user_metrics_text(&q).await;
}

#[tokio::test]
async fn without_prometheus_request_metrics_nothing_listens_for_user_metrics() {
    let b = backend();
    for config in [
        None,
        Some(r#"{"requestMetrics":{"protocol":"none"}}"#),
        Some(r#"{"tracing":{},"metrics":{},"runtime":{},"requestMetrics":{}}"#),
    ] {
        let user_port = closed_port();
        let mut builder = queue(port(&b)).env("METRICS_PROMETHEUS_PORT", user_port.to_string());
        if let Some(config) = config {
            builder = builder.env("OBSERVABILITY_CONFIG", config);
        }
        let q = builder.spawn();
        assert!(
            !q.wait_for_output("listening on usermetrics", Duration::from_millis(500)),
            "OBSERVABILITY_CONFIG {config:?} started user metrics"
        );
        let refused = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], user_port).into(),
            Duration::from_secs(1),
        );
        assert!(
            refused.is_err(),
            "OBSERVABILITY_CONFIG {config:?}: something listens on METRICS_PROMETHEUS_PORT {user_port}"
        );
        let (status, _) = get_with(&q, "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "the queue serves");
    }
}
