//! One client connection from accept to close. The engine is hyper; around it, one timer per
//! connection (not per request) enforces the header-read and idle deadlines from what the
//! connection is doing, and a drain closes idle connections and ends busy ones after their
//! response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::conform::Reject;
use crate::io::{ClientIo, SNIFF_LEN};
use crate::Limits;

/// The HTTP/2 client preface; a cleartext connection that starts with it speaks h2c.
const H2_PREFACE: &[u8; SNIFF_LEN] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// "Not set" for the millisecond marks of [`Activity`].
const NONE: u64 = u64::MAX;
/// While draining, idle connections are looked for this often.
const DRAIN_TICK: Duration = Duration::from_millis(50);
/// While draining, an HTTP/1 connection idle this long closes. Not at once: a client that
/// just got a response may be sending its next request (it gets `Connection: close` on the
/// answer); closing under it would fail that request.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);
/// An h2 connection told to go away gets this long to say so before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

// === Types ===

/// How to choose the protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Cleartext: h2c if the first bytes are the HTTP/2 preface, else HTTP/1.1.
    Sniff,
    Http1,
    Http2,
}

/// Why a connection ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it, or the protocol ended it (including an upgrade taking it over).
    Finished,
    /// A request's head (or, on a new connection, the first bytes) came too slowly.
    HeaderTimeout,
    /// No request in flight for the idle timeout.
    IdleTimeout,
    /// Closed by a drain.
    Drained,
    /// The TLS handshake did not finish within its timeout.
    TlsHandshakeTimeout,
    /// The TLS handshake failed (the client closed, or sent something that is not TLS).
    TlsHandshakeFailed,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Finished => "finished",
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Drained => "drained",
            Closed::TlsHandshakeTimeout => "tls_handshake_timeout",
            Closed::TlsHandshakeFailed => "tls_handshake_failed",
        }
    }
}

/// The HTTP engines configured with one set of limits; shared by every connection.
pub struct Edge {
    limits: Limits,
    /// The shorter of the header-read and idle timeouts.
    poll_every: Duration,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// What a connection is doing, as its timer needs to know: written by the requests (which
/// may run on other threads for h2) and by reads, read by the timer. Marks are milliseconds
/// since the connection was accepted.
pub(crate) struct Activity {
    born: Instant,
    /// Requests (h1) or streams (h2) whose response has not ended.
    in_flight: AtomicU32,
    /// When the last response ended; NONE before the first.
    idle_since: AtomicU64,
    /// The first byte read while idle, that is, the start of the next request; NONE if none.
    head_started: AtomicU64,
    draining: AtomicBool,
    /// When the drain began; NONE before.
    draining_since: AtomicU64,
    /// The request line being served had an unsupported version: answer 505.
    refused_version: AtomicBool,
}

// === The flow ===

impl Edge {
    pub fn new(limits: Limits) -> Edge {
        let mut h1 = http1::Builder::new();
        // The header deadline is ours (one timer per connection); hyper's would also run
        // through keep-alive idle time, which has its own limit here.
        h1.header_read_timeout(None)
            .max_headers(limits.max_header_fields)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_resets)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        let poll_every = limits.header_read_timeout.min(limits.idle_timeout);
        Edge {
            limits,
            poll_every,
            h1,
            h2,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Serves one connection with `service` until the client or a deadline closes it, or
    /// `drain` resolves and what is in flight has finished.
    pub async fn serve<S, F, Fut, B>(
        &self,
        io: S,
        proto: Proto,
        service: F,
        drain: impl Future<Output = ()>,
    ) -> Closed
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let activity = Arc::new(Activity::new());
        let header_deadline = activity.born + self.limits.header_read_timeout;
        let (io, h2) = match sniff(io, proto, header_deadline, &activity).await {
            Ok(chosen) => chosen,
            Err(closed) => return closed,
        };
        let service = Arc::new(service);
        let tracked = Arc::clone(&activity);
        let svc = service_fn(move |req| {
            let guard = InFlight::start(&tracked);
            // A load, not a swap: no read-modify-write on every request.
            let refused = guard.0.refused_version.load(Ordering::Relaxed);
            if refused {
                guard.0.refused_version.store(false, Ordering::Relaxed);
            }
            let response = (!refused).then(|| service(req));
            async move {
                let Some(response) = response else {
                    let reject = Reject::status_error(
                        http::StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                        "unsupported protocol version",
                    );
                    let response =
                        reject.into_response(true, |data| EdgeBody::Own { data: Some(data) });
                    return Ok::<_, Infallible>(response.map(|body| Tracked {
                        body,
                        _guard: guard,
                    }));
                };
                let mut response = response.await;
                if !h2 && guard.0.draining.load(Ordering::Relaxed) {
                    // Tells the client why the connection ends after this response.
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body: EdgeBody::App { body },
                    _guard: guard,
                }))
            }
        });
        let io = TokioIo::new(io);
        if h2 {
            let conn = pin!(self.h2.serve_connection(io, svc));
            self.drive(conn, &activity, true, drain).await
        } else {
            let conn = pin!(self.h1.serve_connection(io, svc).with_upgrades());
            self.drive(conn, &activity, false, drain).await
        }
    }

    /// Runs the connection beside its timer and the drain. The connection is polled on
    /// every wake; the timer and the drain only when they woke the task (a `select!` would
    /// poll all three on each of the connection's wakes, ~400 instructions per request).
    async fn drive<C: GracefulConn>(
        &self,
        mut conn: Pin<&mut C>,
        activity: &Activity,
        h2: bool,
        drain: impl Future<Output = ()>,
    ) -> Closed {
        let mut drain = pin!(drain);
        let mut draining = false;
        // Fires at once: the first look sets the first deadline.
        let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
        let side = Arc::new(SideWake::default());
        let side_waker = Waker::from(Arc::clone(&side));
        let verdict = std::future::poll_fn(|cx| {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Closed::Finished);
            }
            if !side.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            *side.task.lock() = Some(cx.waker().clone());
            let mut side_cx = Context::from_waker(&side_waker);
            if !draining && drain.as_mut().poll(&mut side_cx).is_ready() {
                draining = true;
                activity
                    .draining_since
                    .store(activity.now_ms(), Ordering::Relaxed);
                activity.draining.store(true, Ordering::Relaxed);
                // h2: GOAWAY, streams in flight finish. h1: the next response says
                // `Connection: close`, and a connection idle for the grace closes.
                if h2 {
                    conn.as_mut().graceful_shutdown();
                    cx.waker().wake_by_ref();
                }
                timer.as_mut().reset(Instant::now());
            }
            while timer.as_mut().poll(&mut side_cx).is_ready() {
                let now = Instant::now();
                let wake = match activity.deadline(&self.limits, h2) {
                    Some((at, why)) if at <= now => return Poll::Ready(why),
                    Some((at, _)) => at,
                    // A request is in flight: nothing to time, look again later.
                    None => now + self.limits.idle_timeout,
                };
                // Requests start and end without waking this timer (no wakeup per request),
                // so it looks again at least every shorter timeout: a new deadline is met on time.
                let wake = wake.min(now + self.poll_every);
                let wake = if draining {
                    wake.min(now + DRAIN_TICK)
                } else {
                    wake
                };
                timer.as_mut().reset(wake);
            }
            Poll::Pending
        })
        .await;
        match verdict {
            Closed::Finished => Closed::Finished,
            why => close(conn, h2, why).await,
        }
    }
}

/// Wakes the connection's task for its timer or drain, and says so.
struct SideWake {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Default for SideWake {
    fn default() -> Self {
        SideWake {
            // The first poll looks at the timer and the drain.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        }
    }
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().as_ref() {
            task.wake_by_ref();
        }
    }
}

/// TLS on an accepted connection, bounded by the handshake timeout; the protocol follows ALPN.
pub async fn handshake<S>(
    acceptor: &TlsAcceptor,
    io: S,
    limits: &Limits,
) -> Result<(TlsStream<S>, Proto), Closed>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let tls = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io))
        .await
        .map_err(|_| Closed::TlsHandshakeTimeout)?
        .map_err(|_| Closed::TlsHandshakeFailed)?;
    let proto = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        Proto::Http2
    } else {
        Proto::Http1
    };
    Ok((tls, proto))
}

// === Helpers ===

/// Reads the first bytes (at most the preface's length) to choose the protocol, by the
/// header deadline; the client may close first, or be too slow.
async fn sniff<S: AsyncRead + Unpin>(
    mut io: S,
    proto: Proto,
    deadline: Instant,
    activity: &Arc<Activity>,
) -> Result<(ClientIo<S>, bool), Closed> {
    let mut buf = [0u8; SNIFF_LEN];
    if proto != Proto::Sniff {
        let h2 = proto == Proto::Http2;
        return Ok((ClientIo::new(io, buf, 0, Arc::clone(activity), !h2), h2));
    }
    let mut len = 0;
    let read = async {
        // An HTTP/1 request differs from the preface at its first byte: usually one read.
        while len < SNIFF_LEN && buf[..len] == H2_PREFACE[..len] {
            match io.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => len += n,
            }
        }
        true
    };
    match tokio::time::timeout_at(deadline, read).await {
        Err(_) => return Err(Closed::HeaderTimeout),
        Ok(false) => return Err(Closed::Finished),
        Ok(true) => {}
    }
    activity.read_some();
    let h2 = buf == *H2_PREFACE;
    Ok((ClientIo::new(io, buf, len, Arc::clone(activity), !h2), h2))
}

/// Ends a connection a deadline caught: h1 is dropped (closed), h2 gets GOAWAY first.
async fn close<C: GracefulConn>(mut conn: Pin<&mut C>, h2: bool, why: Closed) -> Closed {
    if h2 {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(GOAWAY_GRACE, conn).await;
    }
    why
}

impl Activity {
    fn new() -> Activity {
        Activity {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(NONE),
            head_started: AtomicU64::new(NONE),
            draining: AtomicBool::new(false),
            draining_since: AtomicU64::new(NONE),
            refused_version: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: on an idle connection they start the next request's head (true then).
    pub(crate) fn read_some(&self) -> bool {
        let starts = self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE;
        if starts {
            self.head_started.store(self.now_ms(), Ordering::Relaxed);
        }
        starts
    }

    /// The request being read has a version the server does not speak (505).
    pub(crate) fn refuse_version(&self) {
        self.refused_version.store(true, Ordering::Relaxed);
    }

    /// When this connection must close and why, if nothing changes; None while a request
    /// is in flight. h2 reads are not request starts (PING, SETTINGS), so h2 has only the
    /// idle deadline.
    fn deadline(&self, limits: &Limits, h2: bool) -> Option<(Instant, Closed)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let at = |ms: u64, after: Duration| self.born + Duration::from_millis(ms) + after;
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        let draining_since = self.draining_since.load(Ordering::Relaxed);
        if draining_since != NONE {
            let since = if idle_since == NONE {
                draining_since
            } else {
                idle_since.max(draining_since)
            };
            return Some((at(since, DRAIN_IDLE_GRACE), Closed::Drained));
        }
        if h2 {
            let since = if idle_since == NONE { 0 } else { idle_since };
            return Some((at(since, limits.idle_timeout), Closed::IdleTimeout));
        }
        if idle_since == NONE {
            // The first request's head is due a header timeout after accept (as Go's server).
            return Some((at(0, limits.header_read_timeout), Closed::HeaderTimeout));
        }
        match self.head_started.load(Ordering::Relaxed) {
            NONE => Some((at(idle_since, limits.idle_timeout), Closed::IdleTimeout)),
            started => Some((
                at(started, limits.header_read_timeout),
                Closed::HeaderTimeout,
            )),
        }
    }
}

/// One request in flight, until its response body ends (or is dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_started.store(NONE, Ordering::Relaxed);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_since.store(self.0.now_ms(), Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight while it streams.
    pub struct Tracked<B> {
        #[pin]
        body: EdgeBody<B>,
        _guard: InFlight,
    }
}

pin_project_lite::pin_project! {
    /// The service's body, or one the edge answered with itself.
    #[project = EdgeBodyProj]
    pub enum EdgeBody<B> {
        App { #[pin] body: B },
        Own { data: Option<Bytes> },
    }
}

impl<B: Body<Data = Bytes>> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().body.project() {
            EdgeBodyProj::App { body } => body.poll_frame(cx),
            EdgeBodyProj::Own { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            EdgeBody::App { body } => body.is_end_stream(),
            EdgeBody::Own { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            EdgeBody::App { body } => body.size_hint(),
            EdgeBody::Own { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// hyper's h1 and h2 server connections, as the driver uses them.
trait GracefulConn: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConn for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, B> GracefulConn for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self)
    }
}

#[cfg(test)]
mod tests;
