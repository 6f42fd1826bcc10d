//! Connections to one upstream (the user container for knoxy-queue; a pod or an ExternalName
//! for the gateway): a FIFO pool of HTTP/1.1 connections and one shared h2c connection,
//! dialled as Knative's transport dials. Shared by both proxies so they pool the same way.

#![forbid(unsafe_code)]

mod connect;
pub mod hop;

use connect::Conn;
pub use connect::{Connect, Connecting, Io};

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpStream;

/// Dial timeout of the first attempt, grown ×1.4 per retry, for at most 15 attempts (`P/network/transports.go`).
const DIAL_TIMEOUT: Duration = Duration::from_millis(50);
const DIAL_BACKOFF: f64 = 1.4;
const DIAL_STEPS: u32 = 15;
const TCP_KEEPALIVE: Duration = Duration::from_secs(5);

/// Where an upstream is: an address, or a DNS name resolved at each dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => write!(f, "{addr}"),
            Endpoint::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// A connection ready for one request: nothing has been sent on it yet.
pub struct Ready {
    upstream: Arc<Upstream>,
    sender: Sender,
}

enum Sender {
    H1 {
        sender: http1::SendRequest<Incoming>,
        pooled: bool,
    },
    H2(http2::SendRequest<Incoming>),
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("dial tcp {addr}: connect: {reason}")]
    Dial { addr: Endpoint, reason: String },
    #[error("timed out dialing {addr} after {secs:.2}s")]
    DialTimeout { addr: Endpoint, secs: f64 },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The failure of a connection attempt another request made while this one waited.
    #[error("{0}")]
    Shared(Arc<UpstreamError>),
}

impl UpstreamError {
    /// The upstream could not be reached at all (refused, unreachable, timed out): no byte
    /// of the request went out, so it may go elsewhere.
    pub fn unreachable(&self) -> bool {
        match self {
            UpstreamError::Dial { .. } | UpstreamError::DialTimeout { .. } => true,
            UpstreamError::Shared(e) => e.unreachable(),
            UpstreamError::Http(_) => false,
        }
    }

    /// The exchange failed because the client's request body did (a broken chunk, a body
    /// that stopped short): a few words for the client's 400, or None if the fault is
    /// upstream. hyper's client reports a failing body as a user error sourced in it.
    pub fn client_body_fault(&self) -> Option<&'static str> {
        let UpstreamError::Http(e) = self else {
            return None;
        };
        let body = std::error::Error::source(e)?.downcast_ref::<hyper::Error>()?;
        if !e.is_user() {
            return None;
        }
        // hyper's chunked decoder reports bad framing as invalid input or data; anything else
        // (end of file, a reset) is a body that stopped short.
        let mut source = std::error::Error::source(body);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
                ) {
                    return Some("malformed chunked encoding");
                }
            }
            source = cause.source();
        }
        Some("incomplete request body")
    }
}

/// One thread's idle connections, on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<VecDeque<http1::SendRequest<Incoming>>>);

/// As many shards as threads may run at once.
static SHARDS: LazyLock<NonZeroUsize> = LazyLock::new(|| {
    std::thread::available_parallelism().map_or(NonZeroUsize::MIN, |n| {
        n.min(NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN))
    })
});

/// This thread's shard: threads are numbered as they first ask.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|s| *s % SHARDS.get())
}

pub struct Upstream {
    addr: Endpoint,
    /// `addr` as a Host header (the activator sends a pod its own address), made once.
    host: Option<http::HeaderValue>,
    /// None: TCP.
    connector: Option<Arc<dyn Connect>>,
    /// Idle connections, in one shard per worker thread: each thread takes and returns its
    /// own, so no lock is shared between threads on the request path.
    idle: Box<[Shard]>,
    /// Per shard.
    max_idle: usize,
    h2: tokio::sync::Mutex<H2>,
}

/// The shared h2c connection, or how the last attempt to open it failed (and when).
#[derive(Default)]
struct H2 {
    sender: Option<http2::SendRequest<Incoming>>,
    failed: Option<(tokio::time::Instant, Arc<UpstreamError>)>,
}

/// An HTTP/1.1 connection lent to one request; back to the pool when its response ends.
pub struct Lease {
    upstream: Arc<Upstream>,
    sender: http1::SendRequest<Incoming>,
}

impl Upstream {
    /// At most `max_idle` idle HTTP/1.1 connections are kept (the queue: CC, or 1000 when CC
    /// is 0, Knative's `MaxIdleConnsPerHost`).
    pub fn new(addr: Endpoint, max_idle: usize) -> Arc<Upstream> {
        Upstream::with_connector(addr, max_idle, None)
    }

    /// [`Upstream::new`], opening connections with `connector` instead of TCP.
    pub fn with_connector(
        addr: Endpoint,
        max_idle: usize,
        connector: Option<Arc<dyn Connect>>,
    ) -> Arc<Upstream> {
        Arc::new(Upstream {
            host: http::HeaderValue::from_str(&addr.to_string()).ok(),
            addr,
            connector,
            idle: (0..SHARDS.get()).map(|_| Shard::default()).collect(),
            max_idle: max_idle.div_ceil(SHARDS.get()),
            h2: tokio::sync::Mutex::new(H2::default()),
        })
    }

    /// Sends an HTTP/1.1 request on a pooled or new connection. A pooled connection that
    /// turns out closed before the request was written (a keep-alive the server just ended)
    /// gets the request sent once more on a new one, as Go's transport does.
    pub async fn send_h1(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let (sender, pooled) = self.ready_h1().await?;
        self.send_on_h1(sender, pooled, req).await
    }

    /// Sends an HTTP/2 request over the shared h2c connection, opening it if needed.
    pub async fn send_h2(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.ready_h2().await?;
        Ok(sender.send_request(req).await?)
    }

    /// A connection ready to carry one request (h2c or HTTP/1.1), before the request is
    /// given up: a caller that cannot reach this upstream can still send it elsewhere.
    pub async fn ready(self: &Arc<Self>, h2: bool) -> Result<Ready, UpstreamError> {
        let sender = if h2 {
            Sender::H2(self.ready_h2().await?)
        } else {
            let (sender, pooled) = self.ready_h1().await?;
            Sender::H1 { sender, pooled }
        };
        Ok(Ready {
            upstream: Arc::clone(self),
            sender,
        })
    }

    /// A pooled connection (true), else a new one.
    async fn ready_h1(&self) -> Result<(http1::SendRequest<Incoming>, bool), UpstreamError> {
        Ok(match self.checkout() {
            Some(s) => (s, true),
            // Dialling is boxed: the pooled path's future stays small to create and move.
            None => (Box::pin(self.connect_h1()).await?, false),
        })
    }

    async fn send_on_h1(
        self: &Arc<Self>,
        mut sender: http1::SendRequest<Incoming>,
        pooled: bool,
        req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let response = match sender.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                Some(req) if pooled => {
                    sender = Box::pin(self.connect_h1()).await?;
                    sender.send_request(req).await?
                }
                _ => return Err(e.into_error().into()),
            },
        };
        Ok((
            response,
            Lease {
                upstream: Arc::clone(self),
                sender,
            },
        ))
    }

    /// The shared h2c connection, opened if needed: one request opens it while the others
    /// wait; if that fails, they fail with it at once.
    async fn ready_h2(&self) -> Result<http2::SendRequest<Incoming>, UpstreamError> {
        let waiting_since = tokio::time::Instant::now();
        let mut sender = {
            let mut h2 = self.h2.lock().await;
            match h2.sender.as_ref().filter(|s| !s.is_closed()) {
                Some(s) => s.clone(),
                None => {
                    if let Some((at, e)) = &h2.failed {
                        if *at >= waiting_since {
                            return Err(UpstreamError::Shared(Arc::clone(e)));
                        }
                    }
                    match Box::pin(self.connect_h2()).await {
                        Ok(sender) => {
                            h2.sender = Some(sender.clone());
                            h2.failed = None;
                            sender
                        }
                        Err(e) => {
                            let e = Arc::new(e);
                            h2.failed = Some((tokio::time::Instant::now(), Arc::clone(&e)));
                            return Err(UpstreamError::Shared(e));
                        }
                    }
                }
            }
        };
        sender.ready().await?;
        Ok(sender)
    }

    /// The newest idle connection that is ready (Go's transport also reuses the newest: the
    /// oldest are the likeliest to meet a server's keep-alive timeout). One released a moment
    /// ago may not be ready yet (its connection task has not run since the response ended).
    fn checkout(&self) -> Option<http1::SendRequest<Incoming>> {
        let mut idle = self.idle[shard()].0.lock();
        let mut cx = Context::from_waker(Waker::noop());
        for i in (0..idle.len()).rev() {
            match idle[i].poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => return idle.remove(i),
                Poll::Ready(Err(_)) => {
                    idle.remove(i); // closed: let it go
                }
                Poll::Pending => {}
            }
        }
        None
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<Incoming>, UpstreamError> {
        let io = TokioIo::new(self.dial().await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Incoming>, UpstreamError> {
        let io = TokioIo::new(self.dial().await?);
        let (sender, conn) = http1::handshake(io).await?;
        // Upgrades let WebSocket tunnels through; a failed connection only fails its own requests.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Dials with Knative's backoff: only timeouts are retried, a refusal fails at once.
    async fn dial(&self) -> Result<Conn, UpstreamError> {
        let started = tokio::time::Instant::now();
        let mut step_timeout = DIAL_TIMEOUT;
        for _ in 0..DIAL_STEPS {
            let connect = async {
                if let Some(connector) = &self.connector {
                    return connector.connect(&self.addr).await.map(Conn::Other);
                }
                let stream = match &self.addr {
                    Endpoint::Addr(addr) => TcpStream::connect(addr).await?,
                    Endpoint::Name { host, port } => {
                        TcpStream::connect((host.as_str(), *port)).await?
                    }
                };
                let _ = stream.set_nodelay(true);
                let sock = socket2::SockRef::from(&stream);
                let _ =
                    sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
                Ok(Conn::Tcp(stream))
            };
            match tokio::time::timeout(step_timeout, connect).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => {
                    return Err(UpstreamError::Dial {
                        addr: self.addr.clone(),
                        reason: describe(&e),
                    })
                }
                Err(_) => step_timeout = step_timeout.mul_f64(DIAL_BACKOFF),
            }
        }
        Err(UpstreamError::DialTimeout {
            addr: self.addr.clone(),
            secs: started.elapsed().as_secs_f64(),
        })
    }
}

impl Ready {
    /// The upstream's address as a Host header.
    pub fn host(&self) -> Option<&http::HeaderValue> {
        self.upstream.host.as_ref()
    }

    /// Sends the request: the response, and for HTTP/1.1 the connection's lease.
    pub async fn send(
        self,
        mut req: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        match self.sender {
            Sender::H1 { sender, pooled } => {
                let (response, lease) = self.upstream.send_on_h1(sender, pooled, req).await?;
                Ok((response, Some(lease)))
            }
            Sender::H2(mut sender) => {
                *req.version_mut() = http::Version::HTTP_2;
                Ok((sender.send_request(req).await?, None))
            }
        }
    }
}

impl Lease {
    /// The response was read to its end: the connection can serve the next request.
    pub fn release(self) {
        let mut idle = self.upstream.idle[shard()].0.lock();
        if idle.len() < self.upstream.max_idle {
            idle.push_back(self.sender);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that gives its connection back to the pool once read to the end (a
    /// body dropped early takes its connection with it: it may hold unread bytes).
    pub struct LeasedBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
    }
}

impl LeasedBody {
    pub fn new(inner: Incoming, lease: Option<Lease>) -> LeasedBody {
        let mut lease = lease;
        if inner.is_end_stream() {
            // hyper never polls an empty body: the connection is free already.
            if let Some(lease) = lease.take() {
                lease.release();
            }
        }
        LeasedBody { inner, lease }
    }
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        // Trailers end a body too, though a chunked one may not say so before it is polled again.
        let ended = match &frame {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(f))) => f.is_trailers() || this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            if let Some(lease) = this.lease.take() {
                lease.release();
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Go's wording for the common dial errors, which operators grep for.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".to_owned(),
        _ => e.to_string(),
    }
}
