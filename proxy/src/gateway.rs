//! The gateway's request path, one small decision per step (as Pingora's `ProxyHttp`
//! phases): route (host → rule → path/headers → split) → rewrite → forward → answer.
//! The engine is hyper, served on connections Pingora's listeners accept
//! (`shared/notes/pingora-cost.md`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use knoxy_control::route::{HostTable, Route, RouteTable, Split, Target};
use knoxy_upstream::{hop, Endpoint, LeasedBody};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio_rustls::TlsAcceptor;

use crate::drain::Connections;
use crate::metrics::Metrics;
use crate::upstreams::Upstreams;

const K_NETWORK_HASH: HeaderName = HeaderName::from_static("k-network-hash");

pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Which listener a connection arrived on: the public one serves ExternalIP rules only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    fn label(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// What a request matched, for metrics and the access log.
#[derive(Default)]
struct Matched {
    /// The configured host (not the client's spelling): bounded by the table.
    host: Option<Arc<str>>,
    /// A rule without hosts matched.
    any_host: bool,
    ingress: Option<Arc<str>>,
}

/// One listener's app: the shared table, its visibility, the upstream pools.
pub struct Gateway {
    table: Arc<ArcSwap<RouteTable>>,
    visibility: Visibility,
    upstreams: Arc<Upstreams>,
    /// Spreads requests over a split's endpoints.
    next: AtomicUsize,
    metrics: Arc<Metrics>,
    connections: Arc<Connections>,
    /// Set on the HTTPS listeners.
    tls: Option<TlsAcceptor>,
    /// One JSON line per request on stdout (`--access-log`; off by default).
    access_log: bool,
}

impl Gateway {
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        visibility: Visibility,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        connections: Arc<Connections>,
        tls: Option<TlsAcceptor>,
        access_log: bool,
    ) -> Gateway {
        Gateway {
            table,
            visibility,
            upstreams,
            next: AtomicUsize::new(0),
            metrics,
            connections,
            tls,
            access_log,
        }
    }

    /// The request path, then the record step: metrics by listener, host, KIngress and code.
    async fn serve(&self, req: Request<Incoming>) -> Response<Body> {
        let started = std::time::Instant::now();
        // Only what the access log needs, and only when it is on.
        let logged = self.access_log.then(|| {
            (
                req.method().clone(),
                host_of(&req).to_owned(),
                req.uri().to_string(),
            )
        });
        let (response, matched) = self.route_and_forward(req).await;
        let listener = self.visibility.label();
        let host = matched
            .host
            .as_deref()
            .unwrap_or(if matched.any_host { "*" } else { "" });
        let ingress = matched.ingress.as_deref().unwrap_or("");
        if let Some((method, host, uri)) = logged {
            access_log(
                listener,
                ingress,
                &method,
                &host,
                &uri,
                response.status(),
                started.elapsed(),
            );
        }
        self.metrics
            .requests
            .with_label_values(&[listener, host, ingress, response.status().as_str()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[listener, host, ingress])
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn route_and_forward(&self, mut req: Request<Incoming>) -> (Response<Body>, Matched) {
        let table = self.table.load();
        let hosts: &HostTable = match self.visibility {
            Visibility::Public => &table.public,
            Visibility::Private => &table.private,
        };
        let mut matched = Matched::default();
        let Some((name, vhost)) = hosts.find_named(host_of(&req)) else {
            return (text(StatusCode::NOT_FOUND, "no such host\n"), matched);
        };
        matched.host = name.cloned();
        matched.any_host = name.is_none();
        let Some(route) = vhost.route(req.uri().path(), req.headers()) else {
            return (text(StatusCode::NOT_FOUND, "no route\n"), matched);
        };
        matched.ingress = Some(Arc::clone(&route.ingress));
        if route.redirect_https && self.visibility == Visibility::Public && self.tls.is_none() {
            return (redirect(host_of(&req), req.uri()), matched);
        }
        let Some(split) = route.pick(fastrand::u32(0..100)) else {
            return (
                text(StatusCode::SERVICE_UNAVAILABLE, "no backend\n"),
                matched,
            );
        };
        rewrite(&mut req, route, split);
        (self.forward(req, split).await, matched)
    }

    async fn forward(&self, mut req: Request<Incoming>, split: &Split) -> Response<Body> {
        let endpoint = match &split.backend.target {
            Target::Endpoints(addrs) if !addrs.is_empty() => {
                Endpoint::Addr(addrs[self.next.fetch_add(1, Ordering::Relaxed) % addrs.len()])
            }
            Target::Dns { host, port } => Endpoint::Name {
                host: host.clone(),
                port: *port,
            },
            Target::Endpoints(_) => {
                return text(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoints\n")
            }
        };
        let upstream = self.upstreams.get(endpoint);
        // A WebSocket (or other end-to-end) upgrade is tunnelled over HTTP/1.1.
        let upgrade = (req.version() != Version::HTTP_2 && hop::is_upgrade(req.headers()))
            .then(|| hyper::upgrade::on(&mut req));
        hop::strip(req.headers_mut(), upgrade.is_some());
        let sent = if split.backend.h2c && upgrade.is_none() {
            if !absolute_form(&mut req) {
                return text(StatusCode::BAD_REQUEST, "bad request target\n");
            }
            *req.version_mut() = Version::HTTP_2;
            upstream.send_h2(req).await.map(|r| (r, None))
        } else {
            origin_form(&mut req);
            upstream
                .send_h1(req)
                .await
                .map(|(r, lease)| (r, Some(lease)))
        };
        let (mut response, lease) = match sent {
            Ok(sent) => sent,
            Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}\n")),
        };
        if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status()) {
            // The upstream connection now belongs to the tunnel, not the pool.
            drop(lease);
            let upstream_side = hyper::upgrade::on(&mut response);
            // The client connection lives on in the tunnel: counted for drain and the gauge.
            let counted = self.connections.open();
            let gauge = self
                .metrics
                .open_connections
                .with_label_values(&[self.visibility.label()]);
            gauge.inc();
            tokio::spawn(async move {
                if let Ok((c, u)) = tokio::try_join!(client_side, upstream_side) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u))
                            .await;
                }
                gauge.dec();
                drop(counted);
            });
            return response.map(|_| empty());
        }
        hop::strip(response.headers_mut(), false);
        response.map(|body| LeasedBody::new(body, lease).boxed_unsync())
    }
}

#[async_trait]
impl ServerApp for Gateway {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self
            .metrics
            .open_connections
            .with_label_values(&[self.visibility.label()]);
        open.inc();
        let _counted = self.connections.open();
        let this = Arc::clone(self);
        let svc = service_fn(move |req| {
            let this = Arc::clone(&this);
            async move { Ok::<_, Infallible>(this.serve(req).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        // HTTPS: hyper then picks h2 or HTTP/1.1 by the preface, which follows the ALPN choice.
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(stream),
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls) => Box::new(tls),
                Err(_) => {
                    open.dec();
                    return None;
                }
            },
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
        tokio::pin!(conn);
        let mut shutdown = shutdown.clone();
        // On SIGTERM (Pingora's ShutdownWatch) idle keep-alive connections close at once and
        // busy ones after their in-flight requests.
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        open.dec();
        None
    }
}

/// A client connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

// === Helpers ===

/// Appended headers replace the client's (path level, then split level); `override`
/// probes carry the KIngress's hash; `rewriteHost` replaces the Host.
fn rewrite(req: &mut Request<Incoming>, route: &Route, split: &Split) {
    let headers = req.headers_mut();
    for (name, value) in route.append_headers.iter().chain(&split.append_headers) {
        headers.insert(name, value.clone());
    }
    if headers.get(K_NETWORK_HASH).is_some_and(|v| v == "override") {
        if let Ok(v) = HeaderValue::from_str(&route.probe_hash) {
            headers.insert(K_NETWORK_HASH, v);
        }
    }
    if let Some(h) = &route.rewrite_host {
        headers.insert(header::HOST, h.clone());
    }
    if req.version() == Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
        // An h2 request carries its host in :authority; keep it for an HTTP/1.1 upstream.
        if let Some(a) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, a);
        }
    }
}

/// One structured access-log line (JSON) on stdout.
fn access_log(
    listener: &str,
    ingress: &str,
    method: &http::Method,
    host: &str,
    uri: &str,
    status: StatusCode,
    took: std::time::Duration,
) {
    use std::io::Write as _;
    let mut line = String::with_capacity(160);
    line.push_str("{\"listener\":");
    push_json(&mut line, listener);
    for (key, value) in [
        ("ingress", ingress),
        ("method", method.as_str()),
        ("host", host),
        ("uri", uri),
    ] {
        line.push_str(",\"");
        line.push_str(key);
        line.push_str("\":");
        push_json(&mut line, value);
    }
    line.push_str(&format!(
        ",\"status\":{},\"duration_ms\":{:.3}}}\n",
        status.as_u16(),
        took.as_secs_f64() * 1000.0
    ));
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

fn push_json(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// HTTP/1.1 upstream: the request target is the path (an h2 request's authority is in Host
/// already, see `rewrite`), and an h2 request's cookie fields become one (RFC 9113 §8.2.3).
fn origin_form(req: &mut Request<Incoming>) {
    if req.uri().authority().is_some() {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = Uri::try_from(path) {
            *req.uri_mut() = uri;
        }
    }
    if req.version() == Version::HTTP_2 {
        let cookies = req.headers().get_all(header::COOKIE);
        if cookies.iter().nth(1).is_some() {
            let joined: Vec<&[u8]> = cookies.iter().map(HeaderValue::as_bytes).collect();
            if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
                req.headers_mut().insert(header::COOKIE, v);
            }
        }
    }
    *req.version_mut() = Version::HTTP_11;
}

/// h2c upstream: the Host (rewritten or not) becomes `:authority`; false if it is not one.
fn absolute_form(req: &mut Request<Incoming>) -> bool {
    let Some(host) = req.headers_mut().remove(header::HOST) else {
        return false;
    };
    let Ok(authority) = http::uri::Authority::try_from(host.as_bytes()) else {
        return false;
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    match Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}

fn host_of<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn redirect(host: &str, uri: &Uri) -> Response<Body> {
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let location = format!(
        "https://{host}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut r = text(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
