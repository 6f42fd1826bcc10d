//! The request path of the serving port, one small decision per step (contract §3.1):
//! answer probes → note the arrival (drain) → count (stats) → throttle (breaker)
//! → forward under the revision's timeouts → record.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::{sleep_until, Instant};

use crate::body::{Body, TIMEOUT_BODY};
use crate::drain::Drainer;
use crate::headers::{self, Scan, K_NETWORK_HASH, K_ORIGINAL_HOST};
use crate::log;
use crate::readiness::Readiness;
use crate::requestlog::{Entry, RequestLog};
use crate::stats::{InFlight, Stats};
use crate::usermetrics::{Record, UserMetrics};
use knoxy_concurrency::{Breaker, Ticket};
use knoxy_edge::conform::{self, Reject};
use knoxy_upstream::{Lease, Upstream};

// === Types ===

pub struct Handler {
    pub readiness: Arc<Readiness>,
    pub drainer: Arc<Drainer>,
    pub stats: Arc<Stats>,
    pub breaker: Option<Arc<Breaker>>,
    pub upstream: Arc<Upstream>,
    pub active: Arc<Active>,
    pub metrics: Option<Arc<UserMetrics>>,
    pub request_log: Option<Arc<RequestLog>>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub total: Duration,
    pub response_start: Option<Duration>,
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// The 504 for a timer that fired `after` the request entered, logged as Knative logs it.
    fn expired(&self, after: Duration) -> Response<Body> {
        let which = if Some(after) == self.response_start {
            "Response start timeout"
        } else if after == self.total {
            "Request timeout"
        } else {
            "Idle timeout"
        };
        log::warning!("{which}: {after:?}");
        text(StatusCode::GATEWAY_TIMEOUT, TIMEOUT_BODY)
    }
}

/// Requests (and tunnels) in flight on every listener; shutdown waits for zero.
#[derive(Default)]
pub struct Active(AtomicUsize);

/// What one request holds until its response is relayed (or its tunnel closed).
pub struct Guard {
    _active: ActiveRef,
    _stats: Option<InFlight>,
    _ticket: Option<Ticket>,
    record: Option<Record>,
    log: Option<Entry>,
}

struct ActiveRef(Arc<Active>);

/// The connection a request arrived on.
pub struct Conn {
    /// The peer's IP, formatted once for `X-Forwarded-For`.
    pub peer: HeaderValue,
    pub remote: SocketAddr,
    pub tls: bool,
}

// === The flow ===

impl Handler {
    pub async fn serve(&self, conn: &Conn, req: Request<Incoming>) -> Response<Body> {
        // Go's server answers these before any handler: no log, stats or probe sees them.
        if let Err(answer) = conform::check_request(&req) {
            return answer.into_response(req.version() == Version::HTTP_2, Body::full);
        }
        let scan = Scan::of(req.headers());
        let log = self
            .request_log
            .as_ref()
            .filter(|l| l.probes || !scan.is_probe())
            .map(|l| l.start(&req, &conn.remote.to_string()));
        if let Some(answer) = self.answer(&scan, req.headers()).await {
            if let Some(mut entry) = log {
                entry.status = answer.status().as_u16();
                entry.size = answer.body().size_hint().exact().unwrap_or(0);
            }
            return answer;
        }
        self.drainer.arrival();
        let started = Instant::now();
        let total = started + self.timeouts.total;
        let mut guard = Guard {
            _active: self.active.enter(),
            // Kubelet probes that reach the proxy skip stats and the breaker (layer 9).
            _stats: (!scan.kubelet_probe).then(|| self.stats.enter(scan.from_activator)),
            _ticket: None,
            record: None,
            log,
        };
        if let Some(metrics) = self.metrics.as_ref().filter(|_| !scan.is_probe()) {
            guard.record = Some(metrics.start(&req, conn.tls));
        }
        if let Some(breaker) = self.breaker.as_ref().filter(|_| !scan.kubelet_probe) {
            match breaker.admit() {
                Ok(ticket) => guard._ticket = Some(ticket),
                Err(_) => {
                    return guard.respond(go_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "pending request queue full\n",
                    ))
                }
            }
        }
        self.forward(conn, &scan, req, guard, started, total).await
    }

    /// Layer 3: health checks and ingress probes are answered here and never proxied.
    async fn answer(&self, scan: &Scan, headers: &HeaderMap) -> Option<Response<Body>> {
        let network_probe = scan.network_probe.as_ref().map(HeaderValue::as_bytes);
        if scan.probe_ua {
            if self.drainer.draining() {
                return Some(go_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
            }
            if network_probe != Some(b"queue") {
                let value = String::from_utf8_lossy(network_probe.unwrap_or_default());
                return Some(go_error(
                    StatusCode::BAD_REQUEST,
                    &format!("unexpected probe header value: {value}\n"),
                ));
            }
            return Some(if self.readiness.check().await {
                text(StatusCode::OK, "queue")
            } else {
                status(StatusCode::SERVICE_UNAVAILABLE)
            });
        }
        if network_probe != Some(b"probe") {
            return None;
        }
        if self.drainer.draining() {
            return Some(go_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
        }
        match headers.get(K_NETWORK_HASH).filter(|h| !h.is_empty()) {
            None => Some(go_error(
                StatusCode::BAD_REQUEST,
                "a probe request must contain a non-empty \"K-Network-Hash\" header\n",
            )),
            Some(hash) => {
                let mut r = status(StatusCode::OK);
                r.headers_mut().insert(K_NETWORK_HASH, hash.clone());
                Some(r)
            }
        }
    }

    /// Waits for a breaker slot and the upstream's response headers, both under the timeouts.
    async fn forward(
        &self,
        conn: &Conn,
        scan: &Scan,
        mut req: Request<Incoming>,
        mut guard: Guard,
        started: Instant,
        total: Instant,
    ) -> Response<Body> {
        let t = self.timeouts;
        let first = [t.response_start, t.idle]
            .into_iter()
            .flatten()
            .map(|d| started + d)
            .fold(total, Instant::min);
        if first <= started {
            // A zero timeout fails at once, before anything reaches the user container.
            return guard.respond(t.expired(first - started));
        }
        let mut timer = Box::pin(sleep_until(first));

        let h2 = req.version() == Version::HTTP_2;
        let client_upgrade = (scan.upgrade && !h2).then(|| hyper::upgrade::on(&mut req));
        prepare(&mut req, scan, &conn.peer, h2);

        let ticket = &mut guard._ticket;
        let exchange = async {
            if let Some(ticket) = ticket.as_mut() {
                ticket.acquire().await;
            }
            if h2 {
                self.upstream.send_h2(req).await.map(|r| (r, None))
            } else {
                self.upstream
                    .send_h1(req)
                    .await
                    .map(|(r, lease)| (r, Some(lease)))
            }
        };
        let result = tokio::select! {
            biased;
            r = exchange => r,
            _ = timer.as_mut() => return guard.respond(t.expired(first - started)),
        };
        let (mut response, lease) = match result {
            Ok(r) => r,
            Err(e) => {
                return guard.respond(match client_body_error(&e) {
                    // The client's body broke (a bad chunk, a reset): its fault, not the app's.
                    Some(r) => r.into_response(!h2, Body::full),
                    None => go_error(StatusCode::BAD_GATEWAY, &format!("{e}\n")),
                });
            }
        };

        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::rewrite_response(response.headers_mut(), switching);
        guard.status(response.status());
        if switching {
            if let Some(client) = client_upgrade {
                let upstream = hyper::upgrade::on(&mut response);
                tokio::spawn(tunnel(client, upstream, total, guard, lease));
                return response.map(|_| Body::empty());
            }
        }
        let (parts, body) = response.into_parts();
        Response::from_parts(parts, Body::proxy(body, timer, total, t.idle, lease, guard))
    }
}

/// Rewrites a request for the user container: headers (§3.3), Host, and the URI form.
fn prepare(req: &mut Request<Incoming>, scan: &Scan, peer: &HeaderValue, h2: bool) {
    let original_host = if scan.original_host {
        req.headers_mut().remove(K_ORIGINAL_HOST)
    } else {
        None
    };
    headers::rewrite_request(req.headers_mut(), scan, peer);
    if h2 {
        // h2c upstream: the authority carries the Host.
        if let Some(host) = original_host {
            let mut parts = req.uri().clone().into_parts();
            if let Ok(authority) = host.to_str().unwrap_or_default().parse() {
                parts.authority = Some(authority);
                parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        return;
    }
    *req.version_mut() = Version::HTTP_11;
    if let Some(authority) = req.uri().authority() {
        // An absolute-form target: its authority is the host, whatever Host says (RFC 9112
        // §3.2.2, and Go's `req.Host`), and the user container gets the origin form.
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        if let Ok(host) = HeaderValue::from_str(host) {
            req.headers_mut().insert(header::HOST, host);
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = path.parse() {
            *req.uri_mut() = uri;
        }
    }
    // `K-Original-Host` wins over both (Knative's proxy handler runs after Go parsed the target).
    if let Some(host) = original_host {
        req.headers_mut().insert(header::HOST, host);
    }
}

/// A refusal when the upstream exchange failed because the client's request body did.
fn client_body_error(e: &knoxy_upstream::UpstreamError) -> Option<Reject> {
    e.client_body_fault().map(Reject::bad_request)
}

/// Relays an upgraded connection (WebSocket) both ways until one side closes or the total timeout.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    total: Instant,
    guard: Guard,
    _lease: Option<Lease>,
) {
    let relay = async {
        let (client, upstream) = tokio::try_join!(client, upstream).ok()?;
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        tokio::io::copy_bidirectional(&mut client, &mut upstream)
            .await
            .ok()
    };
    let _ = tokio::time::timeout_at(total, relay).await;
    drop(guard);
}

// === impl Guard ===

impl Guard {
    /// Finishes the request with the queue's own response.
    fn respond(mut self, response: Response<Body>) -> Response<Body> {
        self.status(response.status());
        if let Some(entry) = self.log.as_mut() {
            entry.size = response.body().size_hint().exact().unwrap_or(0);
        }
        drop(self);
        response
    }

    fn status(&mut self, status: StatusCode) {
        if let Some(record) = self.record.as_mut() {
            record.status = status;
        }
        if let Some(entry) = self.log.as_mut() {
            entry.status = status.as_u16();
        }
    }

    /// Body bytes relayed to the client (for the request log).
    #[inline]
    pub fn sent(&mut self, bytes: usize) {
        if let Some(entry) = self.log.as_mut() {
            entry.size += bytes as u64;
        }
    }
}

impl Active {
    fn enter(self: &Arc<Self>) -> ActiveRef {
        self.0.fetch_add(1, Ordering::AcqRel);
        ActiveRef(Arc::clone(self))
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for ActiveRef {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

// === Responses ===

/// A short `text/plain` answer, as Go's sniffing labels it.
pub fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Go's `http.Error`: text plus `X-Content-Type-Options: nosniff`.
pub fn go_error(code: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(body.to_owned()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A refusal as Go's server writes one: the detail in the status line and the body, text,
/// and (HTTP/1) `Connection: close`.
pub fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
