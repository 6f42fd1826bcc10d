//! What every conformance test builds on, in the shape of Knative's test utilities: backends
//! (the test backend, tagged with a suffix like Knative's runtime image) behind Services on a
//! Service port of 50-99 that maps to the pod's port, KIngresses written as JSON (which is
//! YAML) into the gateway's config directory, and waiting for the gateway to report a
//! KIngress Ready, as the tests wait for `IsReady`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use knoxy_tests::{backend_with, empty, fetch, get, http1_client, request_with, Proc, TempDir};
use serde_json::{json, Value};

pub const NS: &str = "default";

/// A directory of objects, the pods behind them and, once started, the gateway serving them.
pub struct Cluster {
    pub dir: TempDir,
    /// Each backend by its Service's name.
    pods: Vec<(String, Proc)>,
}

/// A Service of the cluster: a name and the Service port splits address.
#[derive(Clone, Debug)]
pub struct Svc {
    pub name: String,
    pub port: u16,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            dir: TempDir::new("conformance"),
            pods: Vec::new(),
        }
    }

    /// A backend answering with suffix `name`, behind Service `name` (port named `http`).
    pub fn service(&mut self, name: &str) -> Svc {
        self.service_with(name, "http", None)
    }

    /// As `service`, with the port named `http2` and appProtocol `kubernetes.io/h2c`: the
    /// gateway must speak h2c to it (Knative's `basics/http2`, `grpc`, `retry`).
    pub fn h2c_service(&mut self, name: &str) -> Svc {
        self.service_with(name, "http2", Some("kubernetes.io/h2c"))
    }

    fn service_with(&mut self, name: &str, port_name: &str, app_protocol: Option<&str>) -> Svc {
        let pod = backend_with(&["--suffix", name]);
        let target = pod.addr("backend").port();
        self.pods.push((name.to_owned(), pod));
        let port = service_port();
        let mut service_port = json!({"name": port_name, "port": port, "targetPort": target});
        if let Some(p) = app_protocol {
            service_port["appProtocol"] = json!(p);
        }
        self.write(
            &format!("svc-{name}.yaml"),
            &[
                json!({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": name, "namespace": NS},
                       "spec": {"ports": [service_port]}}),
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": format!("{name}-x7k2p"), "namespace": NS,
                                    "labels": {"kubernetes.io/service-name": name}},
                       "addressType": "IPv4",
                       "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
                       "ports": [{"name": port_name, "port": target}]}),
            ],
        );
        Svc {
            name: name.to_owned(),
            port,
        }
    }

    /// Writes KIngress `name` of Knoxy's class with `spec`.
    pub fn ingress(&self, name: &str, spec: Value) {
        self.ingress_with_annotations(
            name,
            json!({"networking.knative.dev/ingress.class": "knoxy.ingress.networking.knative.dev"}),
            spec,
        );
    }

    pub fn ingress_with_annotations(&self, name: &str, annotations: Value, spec: Value) {
        let mut metadata = json!({"name": name, "namespace": NS});
        if !annotations.is_null() {
            metadata["annotations"] = annotations;
        }
        self.write(
            &format!("ing-{name}.yaml"),
            &[
                json!({"apiVersion": "networking.internal.knative.dev/v1alpha1", "kind": "Ingress",
                     "metadata": metadata, "spec": spec}),
            ],
        );
    }

    /// Writes objects as one multi-document file (JSON is YAML).
    pub fn write(&self, file: &str, objects: &[Value]) {
        let text: Vec<String> = objects.iter().map(Value::to_string).collect();
        self.dir.write(file, &text.join("\n---\n"));
    }

    pub fn gateway(&self) -> Proc {
        knoxy_tests::gateway(&self.dir.0)
    }

    /// The `/-/stats` of the backend of Service `name`.
    pub async fn backend_stats(&self, name: &str) -> Value {
        knoxy_tests::backend_stats(self.pod(name)).await
    }

    /// How many requests the backend of Service `name` has served.
    pub async fn backend_requests(&self, name: &str) -> u64 {
        self.backend_stats(name).await["requests"].as_u64().unwrap()
    }

    fn pod(&self, name: &str) -> &Proc {
        let (_, pod) = self.pods.iter().find(|(n, _)| n == name).unwrap();
        pod
    }

    /// Deletes Service `name` as Knative's tests do (pod and Service): its objects (and so its
    /// endpoints) go first, the pod finishes what it has in flight, then its process is gone.
    pub async fn tear_down(&mut self, name: &str) {
        std::fs::remove_file(self.dir.0.join(format!("svc-{name}.yaml"))).unwrap();
        let deadline = std::time::Instant::now() + knoxy_tests::TIMEOUT;
        loop {
            let stats = self.backend_stats(name).await;
            if stats["in_flight"] == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} still busy: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let at = self.pods.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut pod) = self.pods.remove(at);
        pod.signal(knoxy_tests::Signal::SIGKILL);
        while pod.is_running() {
            assert!(std::time::Instant::now() < deadline, "{name} still running");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Knative's tests pick a random Service port in 50-99; these are distinct within a run.
fn service_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    50 + NEXT.fetch_add(7, Ordering::Relaxed) % 50
}

// === Spec builders ===

pub fn split(svc: &Svc, percent: u32) -> Value {
    json!({"serviceNamespace": NS, "serviceName": svc.name, "servicePort": svc.port,
           "percent": percent})
}

/// The split-level header Knative's tests append to tell which split answered.
pub const WHICH_BACKEND: &str = "Which-Backend";

/// A split to `svc` that appends `Which-Backend: <svc's name>`.
pub fn tagged_split(svc: &Svc, percent: u32) -> Value {
    split_with(svc, percent, json!({ WHICH_BACKEND: svc.name }))
}

/// The backend (suffix) that answered, checked against the split-level `Which-Backend` header
/// it was sent: the split that was picked is the backend that answered.
pub fn which_backend(seen: &Value) -> String {
    let suffix = seen["suffix"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        header_values(seen, &WHICH_BACKEND.to_ascii_lowercase()),
        [suffix.as_str()],
        "the split's header names the backend that answered: {seen}"
    );
    suffix
}

/// A split carrying `appendHeaders`.
pub fn split_with(svc: &Svc, percent: u32, headers: Value) -> Value {
    let mut s = split(svc, percent);
    s["appendHeaders"] = headers;
    s
}

/// One ExternalIP rule for `hosts` with `paths`.
pub fn rule(hosts: &[&str], paths: Value) -> Value {
    json!({"hosts": hosts, "visibility": "ExternalIP", "http": {"paths": paths}})
}

pub fn local_rule(hosts: &[&str], paths: Value) -> Value {
    json!({"hosts": hosts, "visibility": "ClusterLocal", "http": {"paths": paths}})
}

/// The common case: one ExternalIP host, one path, one split to `svc`.
pub fn simple(host: &str, svc: &Svc) -> Value {
    json!({"rules": [rule(&[host], json!([{"splits": [split(svc, 100)]}]))]})
}

/// Paths `/foo`, `/bar`, `/baz` and a catch-all, each to its own Service `<prefix>foo`, …,
/// `<prefix>all` with a `Which-Backend` split header (Knative's path dispatch); `PATH_CASES`
/// says where requests should land.
pub fn path_dispatch(c: &mut Cluster, prefix: &str) -> Value {
    let mut svc = |name: &str| tagged_split(&c.service(&format!("{prefix}{name}")), 100);
    json!([
        {"path": "/foo", "splits": [svc("foo")]},
        {"path": "/bar", "splits": [svc("bar")]},
        {"path": "/baz", "splits": [svc("baz")]},
        {"splits": [svc("all")]},
    ])
}

/// (request path, Service suffix after the prefix) for `path_dispatch`.
pub const PATH_CASES: [(&str, &str); 8] = [
    ("/foo", "foo"),
    ("/bar", "bar"),
    ("/baz", "baz"),
    ("/foo/x?y=1", "foo"),
    ("/foobar", "foo"), // a literal string prefix, not a path segment
    ("", "all"),
    ("/", "all"),
    ("/asdf", "all"),
];

/// Knative's `dispatch/percentage` and `visibility/split` weights: doubling from 1% until
/// the next would pass 100, the remainder, then three 0% splits.
pub const DOUBLING_WEIGHTS: [u32; 10] = [1, 2, 4, 8, 16, 32, 37, 0, 0, 0];

/// One Service `<prefix>-<i>` per weight, as the (`Which-Backend`-tagged) splits of one path.
pub fn weighted_splits(c: &mut Cluster, prefix: &str, weights: &[u32]) -> Value {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| tagged_split(&c.service(&format!("{prefix}-{i}")), *w))
        .collect()
}

/// Every answer came from one of the `<prefix>-<i>`, each got its weight within ±10 points
/// (Knative's margin), and a 0% split nothing.
pub fn assert_shares(counts: &BTreeMap<String, usize>, prefix: &str, weights: &[u32]) {
    let names: Vec<String> = (0..weights.len())
        .map(|i| format!("{prefix}-{i}"))
        .collect();
    for name in counts.keys() {
        assert!(
            names.contains(name),
            "{name:?} is not a split of this path: {counts:?}"
        );
    }
    let total: usize = counts.values().sum();
    for (i, want) in weights.iter().enumerate() {
        let got = counts.get(&format!("{prefix}-{i}")).copied().unwrap_or(0);
        let got_percent = got as f64 * 100.0 / total as f64;
        assert!(
            (got_percent - f64::from(*want)).abs() <= 10.0,
            "{prefix}-{i}: {got_percent}% (want {want}% ± 10): {counts:?}"
        );
        if *want == 0 {
            assert_eq!(got, 0, "a 0% split gets nothing: {counts:?}");
        }
    }
}

// === Talking to the gateway ===

/// GET `path` with Host `host` on listener `label` (`public`, `private`), HTTP/1.1.
pub async fn get_host(gw: &Proc, label: &str, host: &str, path: &str) -> (StatusCode, String) {
    let (status, _, body) = get_host_with(gw, label, host, path, &[]).await;
    (status, body)
}

pub async fn get_host_with(
    gw: &Proc,
    label: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    fetch(
        &http1_client(),
        request_with(Method::GET, &gw.url(label, path), &all, empty()),
    )
    .await
}

/// The backend's echo of a 200 response: which backend (suffix), what it saw.
pub fn echo(status: StatusCode, body: &str) -> Value {
    assert_eq!(status, StatusCode::OK, "{body}");
    knoxy_tests::json(body)
}

/// The values the backend saw for a (lower-case) request header.
pub fn header_values(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What the gateway's `/status` says of KIngress `name`.
pub async fn status_of(gw: &Proc, name: &str) -> Value {
    let (_, _, body) = get(&gw.url("admin", "/status")).await;
    knoxy_tests::json(&body)["ingresses"][format!("{NS}/{name}")].clone()
}

/// Waits until the gateway reports KIngress `name` Ready with a hash other than `not`; the
/// hash. This is the tests' `IsReady` wait.
pub async fn ready(gw: &Proc, name: &str, not: Option<&str>) -> String {
    let deadline = std::time::Instant::now() + knoxy_tests::TIMEOUT;
    loop {
        let status = status_of(gw, name).await;
        if let (Some(true), Some(hash)) = (status["ready"].as_bool(), status["hash"].as_str()) {
            if Some(hash) != not {
                return hash.to_owned();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not Ready with a new hash: {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts answers by backend over `n` requests, `parallel` at a time; each must be a 200
/// whose `Which-Backend` split header names the backend that answered.
pub async fn spread(
    gw: &Proc,
    label: &str,
    host: &str,
    path: &str,
    n: usize,
    parallel: usize,
) -> BTreeMap<String, usize> {
    use futures_util::StreamExt as _;
    let url = gw.url(label, path);
    let client = http1_client();
    let suffixes: Vec<String> = futures_util::stream::iter(0..n)
        .map(|_| {
            let req = request_with(Method::GET, &url, &[("host", host)], empty());
            let client = client.clone();
            async move {
                let (status, _, body) = fetch(&client, req).await;
                which_backend(&echo(status, &body))
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut counts = BTreeMap::new();
    for s in suffixes {
        *counts.entry(s).or_default() += 1;
    }
    counts
}
