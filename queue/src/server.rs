//! Listeners and connections: the serving port (HTTP/1.1 and h2c, and TLS when Knative
//! mounts certificates), the admin port, the autoscaler metrics port and user metrics.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// Go accepts header blocks up to 1 MiB + 4096 bytes; beyond that it answers 431.
const MAX_HEADER_BYTES: usize = (1 << 20) + 4096;
const MAX_HEADER_FIELDS: usize = 1000;

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

/// The serving port's HTTP engines: HTTP/1.1, and HTTP/2 (h2c by prior knowledge, h2 by ALPN).
pub struct Engines {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// The HTTP/2 client preface; a cleartext connection that starts with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Engines {
    pub fn new() -> Arc<Engines> {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(READ_HEADER_TIMEOUT)
            .max_header_size(MAX_HEADER_BYTES)
            // Go limits only the bytes of a head; hyper also counts fields (100 by default).
            // 1000 lets real requests through, for ~2.5% more instructions per request (callgrind).
            .max_headers(MAX_HEADER_FIELDS)
            .max_buf_size(MAX_HEADER_BYTES + 8192);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        Arc::new(Engines { h1, h2 })
    }
}

/// Serves one cleartext connection of the serving port, choosing the protocol by its first bytes.
pub async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    engines: Arc<Engines>,
) {
    let h2 = match tokio::time::timeout(READ_HEADER_TIMEOUT, starts_with_preface(&stream)).await {
        Ok(Ok(h2)) => h2,
        _ => return,
    };
    serve_main(stream, peer, false, h2, handler, engines).await;
}

pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    handler: Arc<Handler>,
    engines: Arc<Engines>,
) {
    if let Ok(Ok(tls)) = tokio::time::timeout(READ_HEADER_TIMEOUT, acceptor.accept(stream)).await {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        serve_main(tls, peer, true, h2, handler, engines).await;
    }
}

/// Serves one connection of the serving port with the request path of [`Handler`].
async fn serve_main<S>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    h2: bool,
    handler: Arc<Handler>,
    engines: Arc<Engines>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = peer;
    let peer =
        HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
    let ctx = Arc::new((handler, Conn { peer, remote, tls }));
    let svc = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(ctx.0.serve(&ctx.1, req).await) }
    });
    let io = TokioIo::new(stream);
    let _ = if h2 {
        engines.h2.serve_connection(io, svc).await
    } else {
        engines.h1.serve_connection(io, svc).with_upgrades().await
    };
}

/// Peeks (without consuming) until the bytes read rule the HTTP/2 preface in or out; an
/// HTTP/1 request differs at its first byte, so this is one `peek` per connection.
async fn starts_with_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait for more bytes before deciding.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
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
