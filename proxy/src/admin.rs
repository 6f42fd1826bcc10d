//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/ready` (a route table is loaded).

use std::convert::Infallible;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

use crate::metrics::Metrics;

pub struct Admin {
    pub metrics: Arc<Metrics>,
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, body, content_type) = match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                Bytes::from(self.metrics.render()),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            // A table is installed before the listeners start, so being up means being ready.
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
