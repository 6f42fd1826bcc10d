//! Listeners and connections: the serving port (HTTP/1.1 and h2c, and TLS when Knative
//! mounts certificates), the admin port, the autoscaler metrics port and user metrics.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use knoxy_edge::{Edge, Limits, Proto};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::config::{Config, READ_HEADER_TIMEOUT};
use crate::drain::Drainer;
use crate::handler::{go_error, Conn, Handler};
use crate::stats::Stats;
use crate::usermetrics::UserMetrics;

/// Go's `http2.Server` default `MaxConcurrentStreams`.
const H2_MAX_CONCURRENT_STREAMS: u32 = 250;
/// Knative's queue sets no `IdleTimeout`; a bound all the same, longer than client pools keep
/// idle connections (Go's transport: 90 s), so the client side closes first.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

// === Binding ===

pub struct Listeners {
    pub main: TcpListener,
    pub tls: Option<TcpListener>,
    pub admin: TcpListener,
    pub metrics: TcpListener,
    pub user_metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds every port before any serves, so a port in use fails the start.
    pub async fn bind(cfg: &Config, tls: bool, user_metrics: bool) -> io::Result<Listeners> {
        let ip = cfg.bind;
        let user_metrics_ip = match &cfg.user_metrics_host {
            Some(h) => h.parse().map_err(|_| {
                io::Error::other(format!("METRICS_PROMETHEUS_HOST {h:?} is not an IP"))
            })?,
            None => ip,
        };
        Ok(Listeners {
            main: bind(ip, cfg.serving_port).await?,
            tls: if tls {
                Some(bind(ip, cfg.tls_port).await?)
            } else {
                None
            },
            admin: bind(ip, cfg.admin_port).await?,
            metrics: bind(ip, cfg.metrics_port).await?,
            user_metrics: if user_metrics {
                Some(bind(user_metrics_ip, cfg.user_metrics_port).await?)
            } else {
                None
            },
        })
    }
}

/// Binds `ip:port`; the unspecified IPv6 address falls back to IPv4 where IPv6 is off.
async fn bind(ip: IpAddr, port: u16) -> io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::new(ip, port)).await {
        Err(e)
            if ip.is_unspecified()
                && ip.is_ipv6()
                && e.kind() == io::ErrorKind::AddrNotAvailable =>
        {
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).await
        }
        r => r,
    }
}

// === Serving ===

/// Accepts until `stop` turns true, then drops the listener (new connections are refused).
pub fn accept_loop<F>(listener: TcpListener, mut stop: watch::Receiver<bool>, on_conn: F)
where
    F: Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        on_conn(stream, peer);
                    }
                    // Out of file descriptors and the like: keep serving what is open.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    });
}

/// The serving port's limits (`knoxy-edge`, shared with the gateway): Go's header-read
/// timeout as Knative sets it, Go's HTTP/2 stream limit (250), and the edge's bounds on
/// idle connections, TLS handshakes, header sizes and HTTP/2 resets.
pub fn edge() -> Arc<Edge> {
    Arc::new(Edge::new(Limits {
        header_read_timeout: READ_HEADER_TIMEOUT,
        tls_handshake_timeout: READ_HEADER_TIMEOUT,
        idle_timeout: IDLE_TIMEOUT,
        h2_max_concurrent_streams: H2_MAX_CONCURRENT_STREAMS,
        ..Limits::default()
    }))
}

/// Serves one cleartext connection of the serving port (HTTP/1.1, or h2c by its preface).
pub async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    edge: Arc<Edge>,
    stop: watch::Receiver<bool>,
) {
    serve_main(stream, peer, false, Proto::Sniff, handler, edge, stop).await;
}

pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    handler: Arc<Handler>,
    edge: Arc<Edge>,
    stop: watch::Receiver<bool>,
) {
    if let Ok((tls, proto)) = knoxy_edge::handshake(&acceptor, stream, edge.limits()).await {
        serve_main(tls, peer, true, proto, handler, edge, stop).await;
    }
}

/// Serves one connection of the serving port with the request path of [`Handler`]; once
/// `stop` turns true, idle connections close and busy ones after their response.
async fn serve_main<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    proto: Proto,
    handler: Arc<Handler>,
    edge: Arc<Edge>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = peer;
    let peer =
        HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
    let ctx = Arc::new((handler, Conn { peer, remote, tls }));
    edge.serve(
        stream,
        proto,
        move |req| handle(Arc::clone(&ctx), req),
        stopped(stop),
    )
    .await;
}

async fn handle(ctx: Arc<(Arc<Handler>, Conn)>, req: Request<Incoming>) -> Response<Body> {
    ctx.0.serve(&ctx.1, req).await
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves one HTTP/1.1 connection of a small internal server (admin, metrics).
pub async fn serve_internal<F, Fut>(stream: TcpStream, route: F)
where
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send,
{
    let svc = service_fn(move |req| {
        let fut = route(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

// === Internal routes ===

/// Admin port: exactly `/wait-for-drain`, any method (the user container's preStop hook).
pub async fn admin(req: Request<Incoming>, drainer: Arc<Drainer>) -> Response<Body> {
    if req.uri().path() != "/wait-for-drain" {
        return not_found();
    }
    crate::log::info!("Attached drain handler from user-container");
    drainer.wait_for_drain().await;
    Response::new(Body::empty())
}

/// Autoscaler port: exactly `/metrics`, any method. Protobuf, which is what the autoscaler
/// asks for; Prometheus text when the client asks for text and not for protobuf.
pub fn autoscaler_metrics(req: &Request<Incoming>, stats: &Stats, labels: &str) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return not_found();
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    let wants_text = (accept.contains("text/plain") || accept.contains("openmetrics"))
        && !accept.contains("application/protobuf");
    let (body, content_type) = if wants_text {
        (
            Body::full(stats.prometheus_text(labels)),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    } else {
        (Body::full(stats.protobuf()), "application/protobuf")
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// User metrics port: `GET /metrics` in Prometheus text.
pub fn user_metrics(req: &Request<Incoming>, metrics: &UserMetrics) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return not_found();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let mut r = Response::new(Body::full(metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn not_found() -> Response<Body> {
    go_error(StatusCode::NOT_FOUND, "404 page not found\n")
}
