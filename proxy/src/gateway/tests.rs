//! The request path in memory (as linkerd2-proxy's inbound tests): the real gateway service
//! on an in-memory client connection, its upstream pools dialling in-memory pods through a
//! connector that counts dials and can refuse. Routing, splits, header rules, error mapping,
//! and the pool's reuse and retry; no sockets.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use knoxy_edge::{ConnLimit, Edge, Limits, Proto};
use knoxy_upstream::{Connect, Connecting, Endpoint};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{Gateway, Listener, Parts};
use crate::metrics::Metrics;
use crate::upstreams::{table_of, Served};

// === Pods in memory ===

/// Pods by address: each connection is a fresh in-memory hyper server echoing what it saw.
#[derive(Default)]
struct Pods {
    dials: Mutex<HashMap<SocketAddr, usize>>,
    refused: HashSet<SocketAddr>,
    /// Each connection serves one request, then the pod drops it without saying so.
    one_request_per_connection: bool,
}

impl Connect for Pods {
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> Connecting<'a> {
        Box::pin(async move {
            let Endpoint::Addr(addr) = endpoint else {
                return Err(std::io::ErrorKind::NotFound.into());
            };
            if self.refused.contains(addr) {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            *self.dials.lock().entry(*addr).or_default() += 1;
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (pod, once) = (*addr, self.one_request_per_connection);
            tokio::spawn(async move {
                let served = Arc::new(tokio::sync::Notify::new());
                let notify = Arc::clone(&served);
                let svc = service_fn(move |req: Request<Incoming>| {
                    let notify = Arc::clone(&notify);
                    async move {
                        let seen = echo(pod, &req);
                        notify.notify_one();
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(seen)))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), svc);
                if once {
                    tokio::select! {
                        _ = conn => {}
                        _ = async { served.notified().await; tokio::task::yield_now().await; } => {}
                    }
                } else {
                    let _ = conn.await;
                }
            });
            Ok(Box::new(client) as Box<dyn knoxy_upstream::Io>)
        })
    }
}

fn echo(pod: SocketAddr, req: &Request<Incoming>) -> Bytes {
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    Bytes::from(
        json!({"pod": pod.to_string(), "uri": req.uri().to_string(), "headers": headers})
            .to_string(),
    )
}

// === The gateway in memory ===

/// A KIngress of Knoxy's class routing `host` (and `prefix`) to weighted revisions, each a
/// Service whose endpoints are `pods`, with the split's `Knative-Serving-Revision` header.
fn objects(host: &str, splits: &[(&str, u32, &[&str])]) -> String {
    let mut yaml = String::new();
    let mut split_yaml = String::new();
    for (rev, percent, pods) in splits {
        split_yaml.push_str(&format!("        - {{serviceNamespace: default, serviceName: {rev}, servicePort: 80, percent: {percent}, appendHeaders: {{Knative-Serving-Revision: {rev}}}}}\n"));
        let addresses = pods.join(", ");
        yaml.push_str(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {rev}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80, targetPort: 8012}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {rev}-x, namespace: default, labels: {{kubernetes.io/service-name: {rev}}}}}\nendpoints: [{{addresses: [{addresses}]}}]\nports: [{{name: http, port: 8012}}]\n---\n"));
    }
    yaml.push_str(&format!("apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata: {{name: hello, namespace: default, annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}}}\nspec:\n  rules:\n  - hosts: [{host}]\n    http:\n      paths:\n      - path: /special\n        headers: {{X-Canary: {{exact: \"yes\"}}}}\n        splits: [{{serviceNamespace: default, serviceName: {first}, servicePort: 80, appendHeaders: {{X-Rule: special}}}}]\n      - appendHeaders: {{X-Rule: base}}\n        splits:\n{split_yaml}", first = splits[0].0));
    yaml
}

fn gateway(yaml: &str, pods: Pods) -> (Arc<Gateway>, Arc<Pods>) {
    let pods = Arc::new(pods);
    let connector: Arc<dyn Connect> = Arc::clone(&pods) as Arc<dyn Connect>;
    let served = Served::new(table_of(yaml), &Served::connecting_with(connector));
    let parts = Parts {
        served: Arc::new(ArcSwap::from_pointee(served)),
        draining: Arc::default(),
        metrics: Arc::new(Metrics::new().expect("metrics")),
        connections: Arc::default(),
        access_log: false,
        edge: Arc::new(Edge::new(Limits::default())),
        conn_limit: ConnLimit::new(100),
    };
    (Arc::new(Gateway::new(&parts, Listener::Public, None)), pods)
}

/// A client connection to the gateway, from 192.0.2.1 over plain HTTP/1.1.
async fn connect(gw: &Arc<Gateway>) -> http1::SendRequest<Full<Bytes>> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let gw = Arc::clone(gw);
    tokio::spawn(async move {
        let ip = Some(HeaderValue::from_static("192.0.2.1"));
        gw.serve_io(server, Proto::Sniff, ip, "http", std::future::pending())
            .await
    });
    let (send, conn) = http1::handshake(TokioIo::new(client))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send
}

async fn get(
    client: &mut http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client.ready().await.expect("client ready");
    let response = client
        .send_request(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("a response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn seen(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

// === Tests ===

#[tokio::test]
async fn routes_by_host_path_and_headers_and_says_so_to_the_upstream() {
    let (gw, _) = gateway(
        &objects("hello.example.com", &[("rev-1", 100, &["10.0.0.1"])]),
        Pods::default(),
    );
    let mut c = connect(&gw).await;
    let (status, body) = get(
        &mut c,
        "hello.example.com",
        "/",
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = seen(&body);
    assert_eq!(s["pod"], "10.0.0.1:8012");
    assert_eq!(s["headers"]["x-rule"], "base", "path-level appendHeaders");
    assert_eq!(
        s["headers"]["knative-serving-revision"], "rev-1",
        "split-level appendHeaders"
    );
    assert_eq!(s["headers"]["x-forwarded-for"], "203.0.113.9, 192.0.2.1");
    assert_eq!(s["headers"]["x-forwarded-proto"], "http");
    assert_eq!(
        s["headers"]["x-request-id"].as_str().map(str::len),
        Some(36)
    );
    assert_eq!(s["headers"]["host"], "hello.example.com");
    // The first path rule asks for a header: without it the base rule answers.
    let (_, body) = get(&mut c, "hello.example.com", "/special", &[]).await;
    assert_eq!(seen(&body)["headers"]["x-rule"], "base");
    let (_, body) = get(
        &mut c,
        "HELLO.example.com:80",
        "/special/x",
        &[("x-canary", "yes")],
    )
    .await;
    assert_eq!(seen(&body)["headers"]["x-rule"], "special");
    let (status, body) = get(&mut c, "other.example.com", "/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no such host\n")
    );
}

#[tokio::test]
async fn splits_share_requests_by_percent_and_each_backend_turns_over_its_pods() {
    fastrand::seed(7);
    let (gw, pods) = gateway(
        &objects(
            "hello.example.com",
            &[
                ("rev-1", 80, &["10.0.0.1", "10.0.0.2"]),
                ("rev-2", 20, &["10.0.1.1", "10.0.1.2"]),
            ],
        ),
        Pods::default(),
    );
    let mut c = connect(&gw).await;
    let mut by_pod: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let (_, body) = get(&mut c, "hello.example.com", "/", &[]).await;
        *by_pod
            .entry(seen(&body)["pod"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    let rev = |a: &str, b: &str| {
        by_pod.get(a).copied().unwrap_or(0) + by_pod.get(b).copied().unwrap_or(0)
    };
    let (one, two) = (
        rev("10.0.0.1:8012", "10.0.0.2:8012"),
        rev("10.0.1.1:8012", "10.0.1.2:8012"),
    );
    assert_eq!(one + two, 1000);
    assert!((740..=860).contains(&one), "80%: {by_pod:?}");
    // Round robin per backend: its pods share its requests evenly, whatever the other does.
    for (a, b) in [
        ("10.0.0.1:8012", "10.0.0.2:8012"),
        ("10.0.1.1:8012", "10.0.1.2:8012"),
    ] {
        assert!(by_pod[a].abs_diff(by_pod[b]) <= 1, "{by_pod:?}");
    }
    // One keep-alive connection per pod carried all of it.
    assert!(
        pods.dials.lock().values().all(|n| *n == 1),
        "{:?}",
        pods.dials.lock()
    );
}

#[tokio::test]
async fn a_refused_pod_is_a_short_502_and_a_backend_without_endpoints_is_not_served() {
    let pods = Pods {
        refused: ["10.0.0.1:8012".parse().expect("addr")].into(),
        ..Pods::default()
    };
    let (gw, _) = gateway(
        &objects("hello.example.com", &[("rev-1", 100, &["10.0.0.1"])]),
        pods,
    );
    let mut c = connect(&gw).await;
    let (status, body) = get(&mut c, "hello.example.com", "/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream connect error\n")
    );
    let (gw, _) = gateway(
        &objects("hello.example.com", &[("rev-1", 100, &[])])
            .replace("endpoints: [{addresses: []}]", "endpoints: []"),
        Pods::default(),
    );
    let mut c = connect(&gw).await;
    let (status, body) = get(&mut c, "hello.example.com", "/", &[]).await;
    // A backend without endpoints is not ready, so the KIngress is not served at all.
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no such host\n")
    );
}

#[tokio::test]
async fn the_pool_reuses_one_connection_for_requests_in_turn() {
    let (gw, pods) = gateway(
        &objects("hello.example.com", &[("rev-1", 100, &["10.0.0.1"])]),
        Pods::default(),
    );
    let mut c = connect(&gw).await;
    for _ in 0..5 {
        assert_eq!(
            get(&mut c, "hello.example.com", "/", &[]).await.0,
            StatusCode::OK
        );
    }
    let mut other = connect(&gw).await;
    assert_eq!(
        get(&mut other, "hello.example.com", "/", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        pods.dials.lock().values().sum::<usize>(),
        1,
        "clients share the pool"
    );
}

#[tokio::test]
async fn a_connection_the_pod_dropped_is_not_reused_and_no_request_fails() {
    let pods = Pods {
        one_request_per_connection: true,
        ..Pods::default()
    };
    let (gw, pods) = gateway(
        &objects("hello.example.com", &[("rev-1", 100, &["10.0.0.1"])]),
        pods,
    );
    let mut c = connect(&gw).await;
    for i in 0..5 {
        let (status, body) = get(&mut c, "hello.example.com", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    assert_eq!(
        pods.dials.lock().values().sum::<usize>(),
        5,
        "a new connection each time"
    );
}

// === Revisions (the activator role) ===

/// A KIngress whose split names the revision `rev`: a Revision object, its public Service
/// pointing at `public` (in Proxy mode, the activators), and its private Service's pods.
fn revision_objects(rev: &str, public: &str, pods: &[&str]) -> String {
    revision_objects_with(rev, public, pods, "containerConcurrency: 0")
}

/// [`revision_objects`] with more of the Revision's spec (`timeoutSeconds: 1`, say).
fn revision_objects_with(rev: &str, public: &str, pods: &[&str], spec: &str) -> String {
    let endpoints = pods
        .iter()
        .map(|p| format!("{{addresses: [{p}]}}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: serving.knative.dev/v1\nkind: Revision\nmetadata: {{name: {rev}, namespace: default}}\nspec: {{{spec}, containers: [{{image: x}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {rev}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80, targetPort: 8012}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {rev}-x, namespace: default, labels: {{kubernetes.io/service-name: {rev}}}}}\nendpoints: [{{addresses: [{public}]}}]\nports: [{{name: http, port: 8012}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {rev}-private-x, namespace: default, labels: {{kubernetes.io/service-name: {rev}-private}}}}\nendpoints: [{endpoints}]\nports: [{{name: http-queueadm, port: 8022}}, {{name: http, port: 8012}}]\n---\napiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata: {{name: hello, namespace: default, annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}}}\nspec: {{rules: [{{hosts: [hello.example.com], http: {{paths: [{{splits: [{{serviceNamespace: default, serviceName: {rev}, servicePort: 80, appendHeaders: {{Knative-Serving-Revision: {rev}, Knative-Serving-Namespace: default}}}}]}}]}}}}]}}\n"
    )
}

#[tokio::test]
async fn a_revision_split_goes_to_the_revisions_pods_in_turn_not_its_public_endpoints() {
    // containerConcurrency above 3: Knative's round robin.
    let (gw, pods) = gateway(
        &revision_objects_with(
            "hello-00001",
            "10.9.9.9",
            &["10.0.0.1", "10.0.0.2"],
            "containerConcurrency: 10",
        ),
        Pods::default(),
    );
    let mut c = connect(&gw).await;
    let mut answered = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(&mut c, "hello.example.com", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        answered.push(seen(&body)["pod"].as_str().unwrap_or("?").to_owned());
    }
    answered.sort();
    // What Knative's activator sends a pod; a client's K-Original-Host is not believed.
    let (_, body) = get(
        &mut c,
        "hello.example.com",
        "/",
        &[
            ("k-original-host", "evil.example.com"),
            ("k-proxy-request", "no"),
        ],
    )
    .await;
    let s = seen(&body);
    let pod = s["pod"].as_str().unwrap_or("?");
    assert_eq!(s["headers"]["host"], pod);
    assert_eq!(s["headers"]["k-original-host"], "hello.example.com");
    assert_eq!(s["headers"]["k-proxy-request"], "activator");
    assert!(
        s["headers"].get("knative-serving-revision").is_none(),
        "{s}"
    );
    assert!(
        s["headers"].get("knative-serving-namespace").is_none(),
        "{s}"
    );
    assert_eq!(
        answered,
        [
            "10.0.0.1:8012",
            "10.0.0.1:8012",
            "10.0.0.2:8012",
            "10.0.0.2:8012"
        ]
    );
    let public: SocketAddr = "10.9.9.9:8012".parse().expect("addr");
    assert!(
        !pods.dials.lock().contains_key(&public),
        "not via the public Service"
    );
}

#[tokio::test]
async fn a_revision_with_no_pods_holds_the_request_and_answers_504_at_its_timeout() {
    let objects = revision_objects_with("hello-00001", "10.9.9.9", &[], "timeoutSeconds: 1");
    let (gw, pods) = gateway(&objects, Pods::default());
    let mut c = connect(&gw).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&mut c, "hello.example.com", "/", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "activator request timeout")
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert!(pods.dials.lock().is_empty(), "nothing dialled");
}

#[tokio::test]
async fn a_held_request_goes_to_the_first_pod_that_appears() {
    let (gw, pods) = gateway(
        &revision_objects("hello-00001", "10.9.9.9", &[]),
        Pods::default(),
    );
    let mut c = connect(&gw).await;
    let held = tokio::spawn(async move { get(&mut c, "hello.example.com", "/", &[]).await });
    // Wait until the request is held, then give the revision a pod, as a reload would.
    let throttler = {
        let served = gw.served.load();
        let (_, vhost) = served
            .table
            .public
            .find_named("hello.example.com")
            .expect("host");
        match &vhost.routes[0].splits[0].backend.target {
            knoxy_control::route::Target::Revision(rev) => {
                served.throttler(rev).expect("a throttler")
            }
            other => panic!("not a revision: {other:?}"),
        }
    };
    while throttler.load().waiting == 0 {
        tokio::task::yield_now().await;
    }
    let next = Served::new(
        table_of(&revision_objects("hello-00001", "10.9.9.9", &["10.0.0.5"])),
        &gw.served.load(),
    );
    gw.served.store(Arc::new(next));
    let (status, body) = held.await.expect("task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen(&body)["pod"], "10.0.0.5:8012");
    assert_eq!(pods.dials.lock().len(), 1);
}
