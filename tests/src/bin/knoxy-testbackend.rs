//! Test backend: a stand-in for a Knative user container that the black-box tests put behind Knoxy.
//!
//! One port serves HTTP/1.1, h2c (prior knowledge), WebSocket and gRPC; query parameters shape the
//! response (see `echo`), `/-/` paths control and observe the backend without being counted.
//! Like every image of Knative's tests, it answers network probes itself (`network_probe`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use knoxy_tests::grpc::{
    self, HealthCheckRequest, HealthCheckResponse, PingReply, PingRequest, ServingStatus,
};
use parking_lot::Mutex;
use prost::Message as _;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Size of the chunks of `?bytes=` and `?size=` bodies.
const CHUNK_SIZE: usize = 64 * 1024;
/// Filler for generated bodies; static so each chunk is a free `Bytes` slice.
static FILLER: [u8; CHUNK_SIZE] = [b'x'; CHUNK_SIZE];
/// Largest gRPC message accepted; the test messages are tiny.
const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;
/// Knative's network probe (`knative.dev/networking/pkg/http/header`): a request whose
/// `K-Network-Probe` is `probe` is answered with its `K-Network-Hash` echoed back.
const K_NETWORK_PROBE: &str = "k-network-probe";
const K_NETWORK_HASH: &str = "k-network-hash";

/// `--suffix`: appended to WebSocket text echoes and gRPC pongs and shown in JSON echoes, so
/// that a test behind a split can tell which backend answered (as Knative's runtime image).
static SUFFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn suffix() -> &'static str {
    SUFFIX.get().map_or("", String::as_str)
}

/// Counters and switches shared by all connections.
struct State {
    health: AtomicU16,
    in_flight: AtomicI64,
    peak_in_flight: AtomicI64,
    requests: AtomicU64,
    probes: Mutex<Vec<Value>>,
}

/// Counts one request as in flight until dropped.
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: Arc<State>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Response body that keeps its request in flight until the body ends or is dropped.
struct Tracked {
    inner: RespBody,
    guard: Option<InFlight>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body held back for `pause` after the response head has gone out (Knative's timeout
/// image flushes the head, then sleeps, then writes the body).
struct Paused {
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    inner: RespBody,
}

impl Body for Paused {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.pause.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Body of `remaining` filler bytes, with a Content-Length only when `exact`.
struct Filler {
    remaining: u64,
    exact: bool,
}

impl Body for Filler {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

fn main() -> ExitCode {
    let listen = match parse_args() {
        Ok(listen) => listen,
        Err(message) => {
            eprintln!("knoxy-testbackend: {message}");
            eprintln!(
                "usage: knoxy-testbackend [--listen ADDR] [--suffix TEXT]   (default 127.0.0.1:$PORT, PORT=8080)"
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("knoxy-testbackend: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knoxy-testbackend: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<SocketAddr, String> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_owned());
    let mut listen = format!("127.0.0.1:{port}");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--listen" {
            listen = args.next().ok_or("--listen needs an address")?;
        } else if let Some(value) = arg.strip_prefix("--listen=") {
            value.clone_into(&mut listen);
        } else if arg == "--suffix" {
            let value = args.next().ok_or("--suffix needs a value")?;
            let _ = SUFFIX.set(value);
        } else {
            return Err(format!("unknown argument {arg:?}"));
        }
    }
    listen
        .parse()
        .map_err(|e| format!("bad listen address {listen:?}: {e}"))
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    // Tests parse this exact line to learn the port.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on backend {local}")?;
    stdout.flush()?;
    drop(stdout);

    let state = Arc::new(State {
        health: AtomicU16::new(200),
        in_flight: AtomicI64::new(0),
        peak_in_flight: AtomicI64::new(0),
        requests: AtomicU64::new(0),
        probes: Mutex::new(Vec::new()),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    // Windows larger than the 64 KiB default so big h2c uploads are not throttled by round trips.
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20);

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("knoxy-testbackend: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Streamed chunks must leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), peer, req));
            // Peers hanging up mid-request are routine in tests; nothing to report.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/-/") {
        return Ok(control(&state, req));
    }
    let activator_probe = req
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(b"Knative-Activator-Probe"));
    if activator_probe
        && req
            .headers()
            .get(K_NETWORK_PROBE)
            .is_some_and(|v| v == "queue")
    {
        // Standing in for a pod's queue, it answers the activator's probe (not a request).
        record_probe(&state, &path, &req);
        let status =
            StatusCode::from_u16(state.health.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
        let body = if status == StatusCode::OK {
            "queue"
        } else {
            "unhealthy"
        };
        return Ok(with_status(text(body), status));
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight::new(state.clone());

    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let network_probe = req
        .headers()
        .get(K_NETWORK_PROBE)
        .is_some_and(|v| v == "probe");
    if path == "/healthz" || user_agent.starts_with(b"kube-probe") || network_probe {
        record_probe(&state, &path, &req);
    }

    if !network_probe {
        // As Knative's probe handler: only probes may carry a hash to the application.
        req.headers_mut().remove(K_NETWORK_HASH);
    }
    let response = if network_probe {
        probe_answer(req.headers())
    } else if path == "/healthz" {
        let status = state.health.load(Ordering::SeqCst);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let body = if status == StatusCode::OK {
            "ok"
        } else {
            "unhealthy"
        };
        with_status(text(body), status)
    } else if is_websocket(&req) {
        // The guard moves into the socket's task: an open WebSocket counts as in flight.
        return Ok(websocket(req, guard));
    } else if is_grpc(&req) {
        grpc_call(&state, req).await
    } else {
        echo(peer, req).await
    };
    Ok(response.map(|inner| {
        Tracked {
            inner,
            guard: Some(guard),
        }
        .boxed_unsync()
    }))
}

/// Knative's probe handler (`knative.dev/networking/pkg/http/probe`): 200 with the request's
/// `K-Network-Hash` set on the response, or 400 when the hash is missing or empty.
fn probe_answer(headers: &HeaderMap) -> Response<RespBody> {
    match headers.get(K_NETWORK_HASH).filter(|v| !v.is_empty()) {
        Some(hash) => {
            let mut response = Response::new(empty_body());
            response.headers_mut().insert(K_NETWORK_HASH, hash.clone());
            response
        }
        None => bad_request(
            // Go's `http.Error` ends the message with a newline.
            "a probe request must contain a non-empty \"K-Network-Hash\" header\n".to_owned(),
        ),
    }
}

/// `/-/` endpoints: observe and steer the backend; never counted as requests.
/// Keeps a probe's path, protocol and headers for `/-/stats`.
fn record_probe<B>(state: &State, path: &str, req: &Request<B>) {
    state.probes.lock().push(json!({
        "path": path,
        "proto": proto(req.version()),
        "headers": headers_json(req.headers()),
    }));
}

fn control(state: &State, req: Request<Incoming>) -> Response<RespBody> {
    let params = Params::parse(req.uri().query());
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/-/stats") => {
            let probes = state.probes.lock().clone();
            json_response(&json!({
                "in_flight": state.in_flight.load(Ordering::SeqCst),
                "peak_in_flight": state.peak_in_flight.load(Ordering::SeqCst),
                "requests": state.requests.load(Ordering::SeqCst),
                "probes": probes,
                "health": state.health.load(Ordering::SeqCst),
            }))
        }
        (&Method::POST, "/-/reset") => {
            // Requests still running stay counted, so the peak restarts from them.
            state
                .peak_in_flight
                .store(state.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
            state.requests.store(0, Ordering::SeqCst);
            state.probes.lock().clear();
            text("reset")
        }
        (&Method::POST, "/-/health") => match params.number("status") {
            Ok(Some(status)) => match u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                Some(status) => {
                    state.health.store(status.as_u16(), Ordering::SeqCst);
                    text(status.as_str())
                }
                None => bad_request(format!("bad status {status}")),
            },
            Ok(None) => bad_request("missing ?status=N".to_owned()),
            Err(message) => bad_request(message),
        },
        (&Method::GET, "/-/health") => text(&state.health.load(Ordering::SeqCst).to_string()),
        _ => with_status(text("unknown control endpoint"), StatusCode::NOT_FOUND),
    }
}

/// Everything else: drain the request body, then answer as the query parameters say.
async fn echo(peer: SocketAddr, req: Request<Incoming>) -> Response<RespBody> {
    let params = Params::parse(req.uri().query());
    let options = match Options::from_params(&params) {
        Ok(options) => options,
        Err(message) => return bad_request(message),
    };
    let (parts, body) = req.into_parts();
    let body_bytes = match drain(body).await {
        Ok(n) => n,
        Err(e) => return bad_request(format!("reading the request body: {e}")),
    };
    if options.sleep > Duration::ZERO {
        tokio::time::sleep(options.sleep).await;
    }

    let response = if options.sse {
        let mut response = stream_response(options.n, options.gap, |i| format!("data: {i}\n\n"));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else if options.stream {
        stream_response(options.n, options.gap, |i| format!("chunk{i}\n"))
    } else if let Some(n) = options.bytes {
        filler_response(n, false)
    } else if let Some(n) = options.size {
        filler_response(n, true)
    } else if let Some(literal) = &options.text {
        text(literal)
    } else {
        let host = parts
            .headers
            .get(header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        json_response(&json!({
            "method": parts.method.as_str(),
            "host": host,
            "uri": parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            "proto": proto(parts.version),
            "headers": headers_json(&parts.headers),
            "body_bytes": body_bytes,
            "remote_addr": peer.to_string(),
            "suffix": suffix(),
        }))
    };
    let response = with_status(response, options.status);
    if options.pause > Duration::ZERO {
        response.map(|inner| {
            Paused {
                pause: Some(Box::pin(tokio::time::sleep(options.pause))),
                inner,
            }
            .boxed_unsync()
        })
    } else {
        response
    }
}

/// What the query parameters of an ordinary request ask for.
struct Options {
    /// `?sleep=MS`: before the response head.
    sleep: Duration,
    /// `?pause=MS`: after the response head has been sent, before the body.
    pause: Duration,
    status: StatusCode,
    stream: bool,
    sse: bool,
    gap: Duration,
    n: u64,
    bytes: Option<u64>,
    size: Option<u64>,
    text: Option<String>,
}

impl Options {
    fn from_params(params: &Params) -> Result<Self, String> {
        let status = match params.number("status")? {
            Some(n) => u16::try_from(n)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| format!("bad status {n}"))?,
            None => StatusCode::OK,
        };
        Ok(Self {
            sleep: Duration::from_millis(params.number("sleep")?.unwrap_or(0)),
            pause: Duration::from_millis(params.number("pause")?.unwrap_or(0)),
            status,
            stream: params.flag("stream"),
            sse: params.flag("sse"),
            gap: Duration::from_millis(params.number("gap")?.unwrap_or(100)),
            n: params.number("n")?.unwrap_or(5),
            bytes: params.number("bytes")?,
            size: params.number("size")?,
            text: params.get("text").map(str::to_owned),
        })
    }
}

/// Decoded query parameters; the last occurrence of a name wins.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            });
        Self(pairs.collect())
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn number(&self, name: &str) -> Result<Option<u64>, String> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("?{name}= wants a number, got {v:?}"))
            })
            .transpose()
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !matches!(v, "0" | "false"))
    }
}

/// Query-string decoding: `+` is a space, `%XX` a byte; malformed escapes stay literal.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the whole body frame by frame, keeping only its length.
async fn drain(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// `n` text chunks made by `chunk`, the first at once and the others `gap` apart.
fn stream_response(n: u64, gap: Duration, chunk: fn(u64) -> String) -> Response<RespBody> {
    let chunks = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let frame = Frame::data(Bytes::from(chunk(i)));
        Some((Ok::<_, BoxError>(frame), i + 1))
    });
    let mut response = Response::new(StreamBody::new(chunks).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn filler_response(n: u64, exact: bool) -> Response<RespBody> {
    let mut response = Response::new(
        Filler {
            remaining: n,
            exact,
        }
        .boxed_unsync(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if exact {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    response
}

fn full_body(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty_body() -> RespBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn text(body: &str) -> Response<RespBody> {
    let mut response = Response::new(full_body(body.to_owned()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json_response(value: &Value) -> Response<RespBody> {
    let mut response = Response::new(full_body(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn bad_request(message: String) -> Response<RespBody> {
    with_status(text(&message), StatusCode::BAD_REQUEST)
}

/// Sets the status, dropping the body where HTTP forbids one.
fn with_status(mut response: Response<RespBody>, status: StatusCode) -> Response<RespBody> {
    *response.status_mut() = status;
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        *response.body_mut() = empty_body();
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    response
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        map.insert(name.as_str().to_owned(), Value::Array(values));
    }
    Value::Object(map)
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Completes the RFC 6455 handshake and echoes data messages on the upgraded connection.
fn websocket(mut req: Request<Incoming>, guard: InFlight) -> Response<RespBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return bad_request("WebSocket upgrade without Sec-WebSocket-Key".to_owned());
    };
    let accept = derive_accept_key(key.as_bytes());
    // Agree to the client's first subprotocol so clients that insist on one still connect.
    let protocol = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _guard = guard;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(message) = socket.next().await {
            match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                    let message = match message {
                        Message::Text(text) if !suffix().is_empty() => {
                            Message::text(format!("{}{}", text.as_str(), suffix()))
                        }
                        other => other,
                    };
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
                // Pings and closes are answered by tungstenite itself.
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });

    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

fn is_grpc(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC status codes used here.
const GRPC_OK: u32 = 0;
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;
const GRPC_UNIMPLEMENTED: u32 = 12;
const GRPC_INTERNAL: u32 = 13;

/// A gRPC failure: status code and message.
type GrpcError = (u32, String);

async fn grpc_call(state: &State, req: Request<Incoming>) -> Response<RespBody> {
    match req.uri().path() {
        grpc::PING => {
            unary(req, |request: PingRequest| PingReply {
                message: format!("pong: {}{}", request.message, suffix()),
            })
            .await
        }
        grpc::PING_STREAM => ping_stream(req),
        grpc::HEALTH_CHECK => {
            let status = if state.health.load(Ordering::SeqCst) == 200 {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            unary(req, move |_: HealthCheckRequest| HealthCheckResponse {
                status: status as i32,
            })
            .await
        }
        path => trailers_only(GRPC_UNIMPLEMENTED, &format!("unknown method {path}")),
    }
}

/// Reads exactly one request message, answers with one reply message and status 0.
async fn unary<Req, Rep>(
    req: Request<Incoming>,
    reply: impl FnOnce(Req) -> Rep,
) -> Response<RespBody>
where
    Req: prost::Message + Default,
    Rep: prost::Message,
{
    let body = match Limited::new(req.into_body(), MAX_GRPC_MESSAGE + 5)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return trailers_only(GRPC_INTERNAL, &format!("reading the request: {e}")),
    };
    let mut buf = BytesMut::from(&body[..]);
    let message = match take_message(&mut buf) {
        Ok(Some(message)) if buf.is_empty() => message,
        Ok(_) => return trailers_only(GRPC_INTERNAL, "expected exactly one request message"),
        Err((code, message)) => return trailers_only(code, &message),
    };
    let request = match Req::decode(message) {
        Ok(request) => request,
        Err(e) => return trailers_only(GRPC_INTERNAL, &format!("decoding the request: {e}")),
    };
    let frames = [
        Ok::<_, BoxError>(Frame::data(grpc::frame(&reply(request)))),
        Ok(Frame::trailers(grpc_trailers(GRPC_OK, None))),
    ];
    grpc_response(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
}

/// Bidirectional Ping: each request message is answered as soon as it has fully arrived.
fn ping_stream(req: Request<Incoming>) -> Response<RespBody> {
    struct Bidi {
        body: Incoming,
        buf: BytesMut,
        ended: bool,
    }
    let start = Bidi {
        body: req.into_body(),
        buf: BytesMut::new(),
        ended: false,
    };
    // State None means the trailers went out and the stream is over.
    let replies = futures_util::stream::unfold(Some(start), |state| async move {
        let mut st = state?;
        let finish = |code, message: Option<String>| {
            Some((
                Ok(Frame::trailers(grpc_trailers(code, message.as_deref()))),
                None,
            ))
        };
        loop {
            match take_message(&mut st.buf) {
                Ok(Some(message)) => {
                    return match PingRequest::decode(message) {
                        Ok(request) => {
                            let reply = PingReply {
                                message: format!("pong: {}{}", request.message, suffix()),
                            };
                            Some((
                                Ok::<_, BoxError>(Frame::data(grpc::frame(&reply))),
                                Some(st),
                            ))
                        }
                        Err(e) => finish(GRPC_INTERNAL, Some(format!("decoding a request: {e}"))),
                    };
                }
                Ok(None) => {}
                Err((code, message)) => return finish(code, Some(message)),
            }
            if st.ended {
                return if st.buf.is_empty() {
                    finish(GRPC_OK, None)
                } else {
                    finish(GRPC_INTERNAL, Some("truncated request message".to_owned()))
                };
            }
            match st.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        st.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return finish(GRPC_INTERNAL, Some(format!("reading: {e}"))),
                None => st.ended = true,
            }
        }
    });
    grpc_response(StreamBody::new(replies).boxed_unsync())
}

/// Splits one length-prefixed message off the front of `buf` once it has fully arrived.
fn take_message(buf: &mut BytesMut) -> Result<Option<Bytes>, GrpcError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err((
            GRPC_UNIMPLEMENTED,
            "compressed messages are not supported".to_owned(),
        ));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_GRPC_MESSAGE {
        return Err((
            GRPC_RESOURCE_EXHAUSTED,
            format!("message of {len} bytes is too large"),
        ));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

fn grpc_trailers(code: u32, message: Option<&str>) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if let Some(value) = message.and_then(|m| HeaderValue::from_str(m).ok()) {
        trailers.insert("grpc-message", value);
    }
    trailers
}

fn grpc_response(body: RespBody) -> Response<RespBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A failure reported in the response headers, with no body and no trailers.
fn trailers_only(code: u32, message: &str) -> Response<RespBody> {
    let mut response = grpc_response(empty_body());
    response
        .headers_mut()
        .extend(grpc_trailers(code, Some(message)));
    response
}
