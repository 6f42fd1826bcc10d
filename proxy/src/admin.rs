//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/ready` (a route table is loaded and no SIGTERM came: 503 while draining) and `/status`
//! (JSON: each KIngress of our class with whether it is served and its probe hash, or why
//! not; what a controller writes to status; and the problems of the configuration files,
//! each with its file, document and object); under `knoxy local`, `/local` (JSON: its
//! operator's view).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use knoxy_control::derive::IngressStatus;
use knoxy_control::files::FileError;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use serde_json::{json, Map, Value};

use crate::metrics::Metrics;
use crate::upstreams::Served;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The table served, for the activator's per-revision gauges.
    pub served: Arc<ArcSwap<Served>>,
    pub status: Arc<ArcSwap<Status>>,
    /// Set on SIGTERM: load balancers must stop sending new connections.
    pub draining: Arc<AtomicBool>,
    /// Whether the autoscaler's stat websocket is up (None: demand is not reported).
    pub autoscaler: Option<Arc<AtomicBool>>,
    /// `knoxy local`'s view as JSON (`/local`).
    pub local: Option<Arc<parking_lot::Mutex<String>>>,
    /// The Kubernetes source: not ready before its first complete listing is served.
    pub cluster: Option<knoxy_cluster::source::Running>,
}

/// The statuses of the table being served, its generation (1 for the first table), and the
/// problems of the files it was loaded from.
#[derive(Debug, Default)]
pub struct Status {
    pub generation: u64,
    pub ingresses: Arc<BTreeMap<String, IngressStatus>>,
    pub errors: Vec<FileError>,
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body, content_type) = match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                Bytes::from({
                    let served = self.served.load();
                    let loads = served.throttlers().map(|(key, t)| (key, t.load()));
                    self.metrics.observe_throttlers(loads);
                    let connected = self.autoscaler.as_ref().map(|c| c.load(Ordering::Acquire));
                    self.metrics
                        .observe_activator(served.held_bytes(), connected);
                    self.metrics.render()
                }),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            "/served" if self.cluster.is_some() => return self.served(req),
            "/status" => (
                StatusCode::OK,
                Bytes::from(status_json(
                    &self.status.load(),
                    &self
                        .cluster
                        .as_ref()
                        .map(|c| c.problems())
                        .unwrap_or_default(),
                )),
                "application/json",
            ),
            "/local" if self.local.is_some() => (
                StatusCode::OK,
                Bytes::from(
                    self.local
                        .as_ref()
                        .map_or_else(String::new, |v| v.lock().clone()),
                ),
                "application/json",
            ),
            "/ready" if self.draining.load(Ordering::Acquire) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"draining\n"),
                "text/plain; charset=utf-8",
            ),
            "/ready" if self.cluster.as_ref().is_some_and(|c| !c.synced()) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"waiting for the first complete listing of the cluster\n"),
                "text/plain; charset=utf-8",
            ),
            // Files and local mode install a table before the listeners start.
            "/healthz" | "/ready" => (
                StatusCode::OK,
                Bytes::from_static(b"ok\n"),
                "text/plain; charset=utf-8",
            ),
            _ => (
                StatusCode::NOT_FOUND,
                Bytes::from_static(b"404 page not found\n"),
                "text/plain; charset=utf-8",
            ),
        };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    }
}

impl Admin {
    /// What this replica serves, for the status leader: `{"served": {"ns/name": generation}}`,
    /// tagged with the table's number, so an unchanged table costs the leader a 304.
    fn served(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let installed = self
            .cluster
            .as_ref()
            .map(|c| c.installed())
            .unwrap_or_default();
        let table = installed.table;
        let etag = format!("\"{table}\"");
        let unchanged = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes());
        let mut r = if unchanged {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            // Built only when asked for: the leader asks each replica on every change.
            let body = json!({"table": table, "served": installed.served()}).to_string();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        r
    }
}

#[async_trait]
impl ServerApp for Admin {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let this = Arc::clone(self);
        let svc = service_fn(move |req| {
            let r = this.answer(&req);
            async move { Ok::<_, Infallible>(r) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
        None
    }
}

/// `problems`: the Kubernetes source's, now (watch errors, objects that do not decode).
fn status_json(status: &Status, problems: &[String]) -> String {
    let ingresses: Map<String, Value> = status
        .ingresses
        .iter()
        .map(|(key, s)| {
            let entry = match s {
                IngressStatus::Ready { hash } => json!({"ready": true, "hash": &**hash}),
                // Served while invalid: its last valid version still is.
                IngressStatus::Invalid { errors, serving } => json!({"ready": false, "reason": "Invalid",
                    "message": errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                    "serving": serving.as_deref()}),
                IngressStatus::NotReady { reason, message } => {
                    json!({"ready": false, "reason": reason, "message": message})
                }
                IngressStatus::Conflict { host } => json!({"ready": false, "reason": "DomainConflict",
                    "message": format!("host {host} is already served by another KIngress")}),
            };
            (key.clone(), entry)
        })
        .collect();
    let errors: Vec<Value> = status
        .errors
        .iter()
        .map(|e| {
            json!({"file": e.file.display().to_string(), "document": e.document,
                "object": e.object, "message": e.message})
        })
        .collect();
    let errors = errors
        .into_iter()
        .chain(problems.iter().map(|p| json!({"message": p})));
    json!({"generation": status.generation, "ingresses": ingresses, "errors": errors.collect::<Vec<_>>()})
        .to_string()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use knoxy_control::validate::FieldError;

    #[test]
    fn status_shows_what_an_invalid_ingress_still_serves_and_the_file_errors() {
        let status = Status {
            generation: 3,
            ingresses: Arc::new(BTreeMap::from([(
                "default/x".to_owned(),
                IngressStatus::Invalid {
                    errors: vec![FieldError {
                        field: "spec.rules[0].http.paths[0].splits[0].percent".into(),
                        problem: "must be between 0 and 100".into(),
                    }],
                    serving: Some("abc".into()),
                },
            )])),
            errors: vec![FileError {
                file: "/config/y.yaml".into(),
                document: Some(2),
                object: Some("Service default/b".into()),
                message: "spec.ports[0].port: invalid type".into(),
            }],
        };
        let problems = ["cannot watch services: connection refused".to_owned()];
        let json: Value = serde_json::from_str(&status_json(&status, &problems)).expect("JSON");
        assert_eq!(
            json["ingresses"]["default/x"],
            json!({"ready": false, "reason": "Invalid", "serving": "abc",
                "message": "spec.rules[0].http.paths[0].splits[0].percent: must be between 0 and 100"})
        );
        assert_eq!(
            json["errors"],
            json!([{"file": "/config/y.yaml", "document": 2, "object": "Service default/b",
                "message": "spec.ports[0].port: invalid type"},
                {"message": "cannot watch services: connection refused"}])
        );
    }
}
