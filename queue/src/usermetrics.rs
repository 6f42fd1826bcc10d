//! User-facing metrics on :9091 (contract §8.3), in Prometheus text under Knative's
//! OpenTelemetry names. Off unless `requestMetrics.protocol` is `prometheus`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use http::{Method, Request, StatusCode, Version};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::Config;
use crate::headers::route_tag;
use knoxy_concurrency::Breaker;

/// Bucket bounds (seconds) of both duration histograms.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const QUEUE_SCOPE: &str = r#"otel_scope_name="knative.dev/serving/pkg/queue",otel_scope_version="",otel_scope_schema_url="""#;
const HTTP_SCOPE: &str = r#"otel_scope_name="go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",otel_scope_version="0.69.0",otel_scope_schema_url="""#;

pub struct UserMetrics {
    server: Mutex<BTreeMap<ServerKey, Histogram>>,
    invocation: Mutex<BTreeMap<u16, Histogram>>,
    breaker: Option<Arc<Breaker>>,
    target_info: String,
    server_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct ServerKey {
    method: String,
    status: u16,
    tag: String,
    version: &'static str,
    scheme: &'static str,
    address: String,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// One request being measured; observed when dropped.
pub struct Record {
    metrics: Arc<UserMetrics>,
    started: Instant,
    pub status: StatusCode,
    key: ServerKey,
}

impl UserMetrics {
    pub fn new(cfg: &Config, breaker: Option<Arc<Breaker>>) -> Arc<UserMetrics> {
        let target_info = format!(
            "container_name=\"queue-proxy\",k8s_namespace_name=\"{}\",k8s_pod_name=\"{}\",kn_configuration_name=\"{}\",kn_revision_name=\"{}\",kn_service_name=\"{}\",service_name=\"{}\"",
            escape(&cfg.namespace),
            escape(&cfg.pod),
            escape(&cfg.configuration),
            escape(&cfg.revision),
            escape(&cfg.service),
            escape([&cfg.service, &cfg.configuration, &cfg.revision, &cfg.pod].into_iter().find(|s| !s.is_empty()).map_or("", |s| s.as_str())),
        );
        Arc::new(UserMetrics {
            server: Mutex::new(BTreeMap::new()),
            invocation: Mutex::new(BTreeMap::new()),
            breaker,
            target_info,
            server_port: cfg.serving_port,
        })
    }

    pub fn start<B>(self: &Arc<Self>, req: &Request<B>, tls: bool) -> Record {
        let address = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned())
            .unwrap_or_default();
        let method = match *req.method() {
            Method::GET
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
            | Method::PATCH
            | Method::CONNECT
            | Method::TRACE => req.method().as_str().to_owned(),
            _ => "_OTHER".to_owned(),
        };
        Record {
            metrics: Arc::clone(self),
            started: Instant::now(),
            status: StatusCode::OK,
            key: ServerKey {
                method,
                status: 0,
                tag: route_tag(req.headers()),
                version: match req.version() {
                    Version::HTTP_2 => "2",
                    Version::HTTP_10 => "1.0",
                    _ => "1.1",
                },
                scheme: if tls { "https" } else { "http" },
                address,
            },
        }
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{{{}}} 1",
            self.target_info
        );
        let name = "kn_serving_invocation_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} The duration of task execution\n# TYPE {name} histogram"
        );
        for (status, h) in self.invocation.lock().iter() {
            h.render(
                &mut out,
                name,
                &format!("http_response_status_code=\"{status}\",{QUEUE_SCOPE}"),
            );
        }
        if let Some(b) = &self.breaker {
            let name = "kn_serving_queue_depth";
            let _ = writeln!(out, "# HELP {name} Number of current requests in the queue\n# TYPE {name} gauge\n{name}{{{QUEUE_SCOPE}}} {}", b.depth());
        }
        let name = "http_server_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of HTTP server requests.\n# TYPE {name} histogram"
        );
        for (k, h) in self.server.lock().iter() {
            let labels = format!(
                "http_request_method=\"{}\",http_response_status_code=\"{}\",kn_route_tag=\"{}\",network_protocol_name=\"http\",network_protocol_version=\"{}\",server_address=\"{}\",server_port=\"{}\",url_scheme=\"{}\",{HTTP_SCOPE}",
                k.method,
                k.status,
                escape(&k.tag),
                k.version,
                escape(&k.address),
                self.server_port,
                k.scheme
            );
            h.render(&mut out, name, &labels);
        }
        out
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let secs = self.started.elapsed().as_secs_f64();
        let status = self.status.as_u16();
        self.metrics
            .invocation
            .lock()
            .entry(status)
            .or_default()
            .observe(secs);
        let key = ServerKey {
            status,
            ..std::mem::take(&mut self.key)
        };
        self.metrics
            .server
            .lock()
            .entry(key)
            .or_default()
            .observe(secs);
    }
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
