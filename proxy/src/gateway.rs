//! The gateway's request path, one small decision per step (as Pingora's `ProxyHttp`
//! phases): route (host → rule → path/headers → split) → what the upstream sees (hop-by-hop
//! headers out, then the rule's headers and `X-Forwarded-*` in) → forward → answer; every
//! answer the gateway makes up comes from `rescue`. The engine is hyper, served by
//! `knoxy-edge` on the connections Pingora's listeners accept (`shared/notes/pingora-cost.md`).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::TokioIo;
use knoxy_activator::{Lease, Refused, Throttler};
use knoxy_control::route::{HostTable, RevisionTarget, Route, Split, Target};
use knoxy_edge::{conform, Closed, ConnLimit, Edge, Proto};
use knoxy_upstream::{hop, Endpoint, LeasedBody, Ready, Upstream};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio_rustls::TlsAcceptor;

use crate::drain::Connections;
use crate::metrics::Metrics;
use crate::rescue::{self, GatewayError};
use crate::upstreams::Served;

const K_NETWORK_HASH: HeaderName = HeaderName::from_static("k-network-hash");
const K_NETWORK_PROBE: HeaderName = HeaderName::from_static("k-network-probe");
/// Marks the kubelet's probes; from a client it would skip the queue's breaker and stats.
const K_KUBELET_PROBE: HeaderName = HeaderName::from_static("k-kubelet-probe");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// What Knative's activator tells a pod (§4.6): the request was proxied by an activator
/// (the queue counts it so, and the autoscaler does not count it twice), and its Host.
const K_PROXY_REQUEST: HeaderName = HeaderName::from_static("k-proxy-request");
const K_ORIGINAL_HOST: HeaderName = HeaderName::from_static("k-original-host");
const KNATIVE_SERVING_REVISION: HeaderName = HeaderName::from_static("knative-serving-revision");
const KNATIVE_SERVING_NAMESPACE: HeaderName = HeaderName::from_static("knative-serving-namespace");

/// A response body: the pod's, relayed, or one of ours. Its error may be the pod's
/// connection's, or a revision's idle timeout.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which listener a connection arrived on: the public one serves ExternalIP rules only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Private,
    /// Knative's activator ports (8012, 8013): requests name their revision.
    Activator,
}

impl Listener {
    /// The metrics label: the listener's role, and whether it speaks TLS.
    fn label(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Listener::Public, false) => "public",
            (Listener::Public, true) => "https",
            (Listener::Private, false) => "private",
            (Listener::Private, true) => "private-https",
            (Listener::Activator, _) => "activator",
        }
    }
}

/// What a request matched, for metrics and the access log.
#[derive(Default)]
pub struct Matched {
    /// The configured host (not the client's spelling): bounded by the table.
    pub host: Option<Arc<str>>,
    /// A rule without hosts matched.
    pub any_host: bool,
    pub ingress: Option<Arc<str>>,
}

impl Matched {
    /// The `host` label: the configured name, `*` for a rule without hosts, empty for none.
    pub fn host_label(&self) -> &str {
        self.host
            .as_deref()
            .unwrap_or(if self.any_host { "*" } else { "" })
    }
}

/// One listener's app: the served table, the listener's role, the edge's limits.
pub struct Gateway {
    served: Arc<ArcSwap<Served>>,
    listener: Listener,
    /// The listener's name in metrics and logs.
    label: &'static str,
    /// Its open-connections gauge, looked up once (each lookup reads a lock all threads share).
    open: prometheus::IntGauge,
    metrics: Arc<Metrics>,
    connections: Arc<Connections>,
    /// Set on the HTTPS listeners.
    tls: Option<TlsAcceptor>,
    /// One JSON line per request on stdout (`--access-log`; off by default).
    access_log: bool,
    edge: Arc<Edge>,
    /// Shared by every listener of the process.
    conn_limit: Arc<ConnLimit>,
    /// Set on SIGTERM: the activator's kubelet probes fail.
    draining: Arc<AtomicBool>,
}

/// What the requests of one client connection share.
struct Conn {
    gateway: Arc<Gateway>,
    /// Appended to `X-Forwarded-For`.
    client_ip: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: the scheme the client used.
    scheme: HeaderValue,
}

/// Where a routed request goes.
enum Destination {
    /// An endpoint chosen already.
    Upstream(Arc<Upstream>),
    /// A revision: the pod is the one its throttler grants, once one has room.
    Revision {
        throttler: Arc<Throttler>,
        revision: Arc<RevisionTarget>,
    },
}

/// A request routed and rewritten, ready to go to its upstream.
struct Prepared {
    req: Request<Incoming>,
    /// An end-to-end upgrade (WebSocket): tunnelled over HTTP/1.1.
    tunnel: bool,
    to: Destination,
    h2c: bool,
}

pub struct Parts {
    pub served: Arc<ArcSwap<Served>>,
    /// Set on SIGTERM.
    pub draining: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<Connections>,
    pub access_log: bool,
    pub edge: Arc<Edge>,
    pub conn_limit: Arc<ConnLimit>,
}

impl Gateway {
    pub fn new(parts: &Parts, listener: Listener, tls: Option<TlsAcceptor>) -> Gateway {
        Gateway {
            served: Arc::clone(&parts.served),
            listener,
            label: listener.label(tls.is_some()),
            open: parts
                .metrics
                .open_connections
                .with_label_values(&[listener.label(tls.is_some())]),
            metrics: Arc::clone(&parts.metrics),
            connections: Arc::clone(&parts.connections),
            tls,
            access_log: parts.access_log,
            edge: Arc::clone(&parts.edge),
            conn_limit: Arc::clone(&parts.conn_limit),
            draining: Arc::clone(&parts.draining),
        }
    }

    /// The request path, then the record step: metrics by listener, host, KIngress and code.
    async fn serve(&self, conn: &Conn, mut req: Request<Incoming>) -> Response<Body> {
        let started = std::time::Instant::now();
        // What an HTTP/1.x server answers itself (no Host, two Hosts, an unknown coding),
        // judged on the request as sent, before hop-by-hop headers go.
        let checked = conform::check_request(&req).map_err(GatewayError::Conform);
        let seen = Seen::of(&req);
        strip_hops(&mut req, &seen);
        let id = request_id(&mut req, &seen);
        // Only what the access log needs, and only when it is on.
        let logged = self.access_log.then(|| {
            (
                req.method().clone(),
                host_of(&req).to_owned(),
                req.uri().to_string(),
            )
        });
        let mut matched = Matched::default();
        let response = match checked.and_then(|()| self.route(conn, req, &seen, &mut matched)) {
            Ok(prepared) => self.forward(prepared).await,
            Err(e) => Err(e),
        };
        let response = response.unwrap_or_else(|e| {
            rescue::rescue(e, id.as_bytes(), matched.host.as_deref().unwrap_or("*"))
        });
        let listener = self.label;
        let ingress = matched.ingress.as_deref().unwrap_or("");
        if let Some((method, host, uri)) = logged {
            access_log(
                &[
                    ("listener", listener),
                    ("ingress", ingress),
                    ("method", method.as_str()),
                    ("host", &host),
                    ("uri", &uri),
                    (
                        "request_id",
                        std::str::from_utf8(id.as_bytes()).unwrap_or(""),
                    ),
                ],
                response.status(),
                started.elapsed(),
            );
        }
        self.metrics.record(
            listener,
            &matched,
            response.status(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    /// Host → rule → split → endpoint, and what the upstream sees; the table is held only
    /// for this step, not while the upstream answers.
    fn route(
        &self,
        conn: &Conn,
        mut req: Request<Incoming>,
        seen: &Seen,
        matched: &mut Matched,
    ) -> Result<Result<Prepared, Response<Body>>, GatewayError> {
        let served = self.served.load();
        let hosts: &HostTable = match self.listener {
            Listener::Public => &served.table.public,
            Listener::Private => &served.table.private,
            Listener::Activator => return self.activator_route(req, seen),
        };
        let (name, vhost) = hosts
            .find_named(host_of(&req))
            .ok_or(GatewayError::UnknownHost)?;
        matched.host = name.cloned();
        matched.any_host = name.is_none();
        let route = vhost
            .route(req.uri().path(), req.headers())
            .ok_or(GatewayError::NoRoute)?;
        matched.ingress = Some(Arc::clone(&route.ingress));
        if route.redirect_https && self.listener == Listener::Public && self.tls.is_none() {
            return Ok(Err(rescue::redirect(host_of(&req), req.uri())));
        }
        let split = route
            .pick(fastrand::u32(0..100))
            .ok_or(GatewayError::NoSplit)?;
        let to = match &split.backend.target {
            Target::Endpoints(_) => Destination::Upstream(served.pool(Endpoint::Addr(
                split.backend.pick().ok_or(GatewayError::NoEndpoints)?,
            ))),
            Target::Dns { host, port } => Destination::Upstream(served.pool(Endpoint::Name {
                host: host.clone(),
                port: *port,
            })),
            Target::Revision(rev) => Destination::Revision {
                throttler: served.throttler(rev).ok_or(GatewayError::NoEndpoints)?,
                revision: Arc::clone(rev),
            },
        };
        rewrite(&mut req, route, split, conn, seen);
        Ok(Ok(Prepared {
            tunnel: seen.tunnel,
            req,
            to,
            h2c: split.backend.h2c,
        }))
    }

    async fn forward(
        &self,
        prepared: Result<Prepared, Response<Body>>,
    ) -> Result<Response<Body>, GatewayError> {
        let Prepared {
            mut req,
            tunnel,
            to,
            h2c,
        } = match prepared {
            Ok(p) => p,
            Err(answered) => return Ok(answered),
        };
        // A WebSocket (or other end-to-end) upgrade is tunnelled over HTTP/1.1.
        let upgrade = tunnel.then(|| hyper::upgrade::on(&mut req));
        let h2 = h2c && upgrade.is_none();
        // The throttle step: a revision's request waits here for room on a pod; its response
        // head is due within the revision's response-start and idle timeouts (and its
        // timeout), counted from now, as Knative's activator counts them.
        let (via, slot, head_due) = match to {
            Destination::Upstream(upstream) => (Via::Pool(upstream), None, None),
            Destination::Revision {
                throttler,
                revision,
            } => {
                let settings = &revision.settings;
                let head_within = [settings.response_start_timeout, settings.idle_timeout]
                    .into_iter()
                    .flatten()
                    .fold(settings.timeout, Duration::min);
                let head_due = tokio::time::Instant::now() + head_within;
                let waiting = (&throttler, &*revision, &req);
                let (ready, slot) = self.reach(waiting, h2, head_due).await?;
                // Behind an ingress (the activator's ports), the Host it already moved stays.
                // Only a public client's K-Original-Host is not believed: the private
                // listener is reached from inside the cluster (a DomainMapping's loop).
                let keep_original = self.listener != Listener::Public;
                activator_form(&mut req, ready.host(), keep_original);
                let held = (slot, settings.idle_timeout);
                (Via::Ready(ready), Some(held), Some(head_due))
            }
        };
        if h2 {
            if !absolute_form(&mut req) {
                return Err(GatewayError::BadAuthority);
            }
            *req.version_mut() = Version::HTTP_2;
        } else {
            origin_form(&mut req);
        }
        let sending = async {
            match via {
                Via::Ready(ready) => ready.send(req).await,
                Via::Pool(upstream) if h2 => Ok((upstream.send_h2(req).await?, None)),
                Via::Pool(upstream) => {
                    let (response, lease) = upstream.send_h1(req).await?;
                    Ok((response, Some(lease)))
                }
            }
        };
        let (mut response, lease) = match head_due {
            None => sending.await.map_err(upstream_error)?,
            Some(at) => tokio::time::timeout_at(at, sending)
                .await
                .map_err(|_| GatewayError::ActivatorTimeout)?
                .map_err(upstream_error)?,
        };
        if let (Some(client_side), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, response.status()) {
            // The upstream connection now belongs to the tunnel, not the pool.
            drop(lease);
            let upstream_side = hyper::upgrade::on(&mut response);
            // The client connection lives on in the tunnel: counted for drain and the gauge.
            let counted = self.connections.open();
            let gauge = self.open.clone();
            gauge.inc();
            tokio::spawn(async move {
                if let Ok((c, u)) = tokio::try_join!(client_side, upstream_side) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(u))
                            .await;
                }
                gauge.dec();
                drop(counted);
                // A tunnel is one request in flight on its pod until it closes.
                drop(slot.map(|(slot, _)| slot));
            });
            return Ok(response.map(|_| empty()));
        }
        hop::strip(response.headers_mut(), false);
        Ok(match slot {
            None => response.map(|body| {
                LeasedBody::new(body, lease)
                    .map_err(BoxError::from)
                    .boxed_unsync()
            }),
            // The pod's slot is held until the response has been relayed (or abandoned).
            Some((slot, idle)) => response.map(|body| {
                Held {
                    body: LeasedBody::new(body, lease),
                    _slot: slot,
                    idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
                }
                .boxed_unsync()
            }),
        })
    }
}

impl Gateway {
    /// The activator's ports (§4.2): probes are answered here; any other request names its
    /// revision (`Knative-Serving-Namespace` and `-Revision`, else a Host
    /// `<revision>.<namespace>.svc…`) and goes through that revision's throttler.
    fn activator_route(
        &self,
        req: Request<Incoming>,
        seen: &Seen,
    ) -> Result<Result<Prepared, Response<Body>>, GatewayError> {
        if let Some(answer) = activator_probe(req.headers(), self.draining.load(Ordering::Acquire))
        {
            return Ok(Err(answer));
        }
        let key = revision_named(&req).ok_or(GatewayError::UnknownRevision)?;
        let served = self.served.load();
        let revision = served
            .table
            .revisions
            .get(&key)
            .ok_or(GatewayError::UnknownRevision)?;
        Ok(Ok(Prepared {
            tunnel: seen.tunnel,
            req,
            to: Destination::Revision {
                throttler: served
                    .throttler(revision)
                    .ok_or(GatewayError::UnknownRevision)?,
                revision: Arc::clone(revision),
            },
            h2c: revision.settings.h2c,
        }))
    }

    /// A slot on one of the revision's pods and a connection to it. A pod that cannot be
    /// reached is marked so and the request, not sent yet, takes a slot elsewhere (or waits).
    async fn reach(
        &self,
        (throttler, revision, req): (&Arc<Throttler>, &RevisionTarget, &Request<Incoming>),
        h2: bool,
        due: tokio::time::Instant,
    ) -> Result<(Ready, Lease), GatewayError> {
        loop {
            let slot = self.throttle(throttler, revision, req, due).await?;
            let pool = self.served.load().pool(Endpoint::Addr(slot.pod()));
            match tokio::time::timeout_at(due, pool.ready(h2)).await {
                Ok(Ok(ready)) => return Ok((ready, slot)),
                Ok(Err(e)) if e.unreachable() => throttler.unreachable(slot.pod()),
                Ok(Err(e)) => return Err(upstream_error(e)),
                Err(_) => return Err(GatewayError::ActivatorTimeout),
            }
        }
    }

    /// Waits for a slot on one of the revision's pods until `due`; a refusal or a wait is
    /// counted.
    async fn throttle(
        &self,
        throttler: &Arc<Throttler>,
        revision: &RevisionTarget,
        req: &Request<Incoming>,
        due: tokio::time::Instant,
    ) -> Result<Lease, GatewayError> {
        let started = std::time::Instant::now();
        let labels = [revision.namespace(), revision.name()];
        let within = due.saturating_duration_since(tokio::time::Instant::now());
        match throttler.acquire_holding(within, || held_bytes(req)).await {
            Ok(slot) => {
                if slot.waited() {
                    self.metrics
                        .revision_wait
                        .with_label_values(&labels)
                        .observe(started.elapsed().as_secs_f64());
                }
                Ok(slot)
            }
            Err(refused) => {
                let (reason, error) = match refused {
                    Refused::QueueFull => ("queue_full", GatewayError::QueueFull),
                    Refused::Timeout => ("timeout", GatewayError::ActivatorTimeout),
                    Refused::HeldBytes => ("held_bytes", GatewayError::QueueFull),
                };
                self.metrics
                    .revision_refused
                    .with_label_values(&[labels[0], labels[1], reason])
                    .inc();
                Err(error)
            }
        }
    }
}

#[async_trait]
impl ServerApp for Gateway {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let listener = self.label;
        let Some(_permit) = self.conn_limit.try_open() else {
            self.metrics
                .closed
                .with_label_values(&[listener, "refused"])
                .inc();
            ConnLimit::refuse(stream, self.tls.is_none()).await;
            return None;
        };
        let open = &self.open;
        open.inc();
        let _counted = self.connections.open();
        let client_ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
            .and_then(|ip: IpAddr| HeaderValue::from_str(&ip.to_string()).ok());
        let (io, proto, scheme): (Box<dyn Io>, _, _) = match &self.tls {
            None => (Box::new(stream), Proto::Sniff, "http"),
            Some(acceptor) => {
                match knoxy_edge::handshake(acceptor, stream, self.edge.limits()).await {
                    Ok((tls, proto)) => (Box::new(tls), proto, "https"),
                    Err(why) => {
                        self.metrics
                            .closed
                            .with_label_values(&[listener, why.as_str()])
                            .inc();
                        open.dec();
                        return None;
                    }
                }
            }
        };
        let mut shutdown = shutdown.clone();
        // On SIGTERM (Pingora's ShutdownWatch) idle keep-alive connections close at once and
        // busy ones after their in-flight requests.
        let drain = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        // Boxed as `dyn Send`: rustc cannot prove the generic future Send inside async_trait.
        let serving: Pin<Box<dyn Future<Output = Closed> + Send + '_>> =
            Box::pin(self.serve_io(io, proto, client_ip, scheme, drain));
        let closed = serving.await;
        self.metrics
            .closed
            .with_label_values(&[listener, closed.as_str()])
            .inc();
        open.dec();
        None
    }
}

impl Gateway {
    /// Serves one accepted (and, on HTTPS, handshaken) client connection until it closes.
    pub async fn serve_io<S>(
        self: &Arc<Self>,
        io: S,
        proto: Proto,
        client_ip: Option<HeaderValue>,
        scheme: &'static str,
        drain: impl Future<Output = ()>,
    ) -> Closed
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Arc::new(Conn {
            gateway: Arc::clone(self),
            client_ip,
            scheme: HeaderValue::from_static(scheme),
        });
        self.edge
            .serve(io, proto, move |req| handle(Arc::clone(&conn), req), drain)
            .await
    }
}

/// The request's future is boxed: hyper moves what it is given into its connection state,
/// and this one (the upstream's future inside) is kilobytes.
async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> Response<Body> {
    Box::pin(conn.gateway.serve(&conn, req)).await
}

/// Where a request goes: a pool of its backend's, or a pod's connection made ready.
enum Via {
    Pool(Arc<Upstream>),
    Ready(Ready),
}

/// A client connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

// === Helpers ===

/// A response body holding a revision's pod slot until it is dropped, and cut (an error,
/// not a short body passed off as whole) when the pod sends nothing for the revision's
/// `idleTimeoutSeconds`.
struct Held<B> {
    body: B,
    _slot: Lease,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

/// The pod sent nothing for the revision's idle timeout.
#[derive(Debug)]
struct IdleTimeout;

impl<B> HttpBody for Held<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((within, timer)) = &mut this.idle {
                    timer.as_mut().reset(tokio::time::Instant::now() + *within);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle_passed = match &mut this.idle {
                    Some((_, timer)) => timer.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if idle_passed {
                    return Poll::Ready(Some(Err(IdleTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What a request keeps while it waits for a pod: its head, and what its connection and
/// task keep besides.
fn held_bytes<B>(req: &Request<B>) -> usize {
    let head: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    head + target + knoxy_activator::budget::HELD_OVERHEAD
}

/// What the upstream sees besides the client's request: the rule's appended headers (path
/// level, then split level, replacing the client's), `override` probes carrying the
/// KIngress's hash, `rewriteHost`, and `X-Forwarded-For`/`-Proto` as Envoy's gateways send.
fn rewrite(req: &mut Request<Incoming>, route: &Route, split: &Split, conn: &Conn, seen: &Seen) {
    // The host routed on is the Host the upstream sees (from an h2 `:authority` or an
    // absolute-form target when that was it).
    let authority = req
        .uri()
        .authority()
        .filter(|a| host_of(req) == a.as_str())
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let headers = req.headers_mut();
    if seen.kubelet_probe {
        headers.remove(K_KUBELET_PROBE);
    }
    for (name, value) in route.append_headers.iter().chain(&split.append_headers) {
        headers.insert(name, value.clone());
    }
    if seen.network_hash && headers.get(K_NETWORK_HASH).is_some_and(|v| v == "override") {
        if let Ok(v) = HeaderValue::from_str(&route.probe_hash) {
            headers.insert(K_NETWORK_HASH, v);
        }
    }
    match (&route.rewrite_host, authority) {
        (Some(h), _) => {
            headers.insert(header::HOST, h.clone());
        }
        (None, Some(a)) => {
            headers.insert(header::HOST, a);
        }
        (None, None) => {}
    }
    match (&conn.client_ip, seen.forwarded_for) {
        (Some(ip), true) => append_forwarded_for(headers, ip),
        (Some(ip), false) => {
            headers.insert(X_FORWARDED_FOR, ip.clone());
        }
        (None, _) => {}
    }
    headers.insert(X_FORWARDED_PROTO, conn.scheme.clone());
}

/// `X-Forwarded-For: <what the client sent>, <client address>`, on one line.
fn append_forwarded_for(headers: &mut http::HeaderMap, ip: &HeaderValue) {
    let sent = headers.get_all(X_FORWARDED_FOR).iter();
    let mut joined = Vec::with_capacity(64);
    for v in sent {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(ip.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// The client's `X-Request-Id` if it sent one, else a new random (v4) UUID; the upstream
/// sees it, and the log names failures by it.
fn request_id(req: &mut Request<Incoming>, seen: &Seen) -> RequestId {
    if let Some(id) = seen
        .request_id
        .then(|| req.headers().get(X_REQUEST_ID))
        .flatten()
    {
        return RequestId::Sent(id.clone());
    }
    // Version 4 (random) in the third group, variant 10 in the fourth (RFC 9562); written
    // by hand: `format!` cost ~3k instructions per request here (callgrind).
    let high = fastrand::u64(..) & !0xf000 | 0x4000;
    let low = fastrand::u64(..) & !(0xc << 60) | 0x8 << 60;
    let mut id = [b'-'; 36];
    let mut at = 0;
    for (word, digits) in [(high, 16), (low, 16)] {
        for i in (0..digits).rev() {
            if matches!(at, 8 | 13 | 18 | 23) {
                at += 1;
            }
            id[at] = b"0123456789abcdef"[(word >> (i * 4)) as usize & 0xf];
            at += 1;
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(&id) {
        req.headers_mut().insert(X_REQUEST_ID, value);
    }
    // Kept as bytes for the log: cloning the header value would cost an allocation.
    RequestId::Made(id)
}

/// A request's id: the client's, or one the gateway made.
enum RequestId {
    Sent(HeaderValue),
    Made([u8; 36]),
}

impl RequestId {
    fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Sent(v) => v.as_bytes(),
            RequestId::Made(id) => id,
        }
    }
}

/// Hop-by-hop headers go before anything is added, so a client's `Connection` cannot name
/// what the gateway adds; nor can it take away the Host the request is routed by.
fn strip_hops(req: &mut Request<Incoming>, seen: &Seen) {
    let host = seen
        .connection
        .then(|| req.headers().get(header::HOST).cloned())
        .flatten();
    hop::strip(req.headers_mut(), seen.tunnel);
    if let Some(host) = host {
        req.headers_mut().entry(header::HOST).or_insert(host);
    }
}

/// A failed exchange is the client's fault when its own body broke.
fn upstream_error(e: knoxy_upstream::UpstreamError) -> GatewayError {
    match e.client_body_fault() {
        Some(detail) => GatewayError::ClientBody(detail),
        None => GatewayError::Upstream(e),
    }
}

/// Which of the headers the gateway acts on a request carries, from one pass over its
/// names instead of a lookup each.
#[derive(Default)]
struct Seen {
    connection: bool,
    forwarded_for: bool,
    request_id: bool,
    kubelet_probe: bool,
    network_hash: bool,
    /// An HTTP/1 request that asks to switch protocols end to end (an h2c upgrade is a hop).
    tunnel: bool,
}

impl Seen {
    fn of<B>(req: &Request<B>) -> Seen {
        let headers = req.headers();
        let mut seen = Seen::default();
        let mut upgrade = false;
        for name in headers.keys() {
            match name.as_str() {
                "connection" => seen.connection = true,
                "upgrade" => upgrade = true,
                "x-forwarded-for" => seen.forwarded_for = true,
                "x-request-id" => seen.request_id = true,
                "k-kubelet-probe" => seen.kubelet_probe = true,
                "k-network-hash" => seen.network_hash = true,
                _ => {}
            }
        }
        seen.tunnel = upgrade && req.version() != Version::HTTP_2 && hop::is_upgrade(headers);
        seen
    }
}

/// One structured access-log line (JSON) on stdout.
fn access_log(fields: &[(&str, &str)], status: StatusCode, took: std::time::Duration) {
    use std::io::Write as _;
    let mut line = String::with_capacity(200);
    for (key, value) in fields {
        line.push_str(if line.is_empty() { "{\"" } else { ",\"" });
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
/// What the activator answers itself (§4.2): a kubelet probe (200, or 500 once draining),
/// a network probe (its hash echoed), `K-Network-Probe: activator` (200 `activator`, the
/// autoscaler's probe before scaling to zero); any other probe value is a 400.
fn activator_probe(headers: &http::HeaderMap, draining: bool) -> Option<Response<Body>> {
    let kubelet = headers.contains_key(K_KUBELET_PROBE)
        || headers
            .get(header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes().starts_with(b"kube-probe/"));
    if kubelet {
        let status = if draining {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        return Some(rescue::text(status, ""));
    }
    let probe = headers.get(K_NETWORK_PROBE).filter(|v| !v.is_empty())?;
    Some(match probe.as_bytes() {
        b"activator" => rescue::text(StatusCode::OK, "activator"),
        b"probe" => match headers.get(K_NETWORK_HASH).filter(|h| !h.is_empty()) {
            Some(hash) => {
                let mut answer = rescue::text(StatusCode::OK, "");
                answer.headers_mut().insert(K_NETWORK_HASH, hash.clone());
                answer
            }
            None => rescue::text(
                StatusCode::BAD_REQUEST,
                "a probe request must contain a non-empty \"K-Network-Hash\" header\n",
            ),
        },
        _ => rescue::text(StatusCode::BAD_REQUEST, "unexpected probe header value\n"),
    })
}

/// The revision a request to the activator names, as `namespace/name`.
fn revision_named<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    let named = |h: &HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    if let (Some(ns), Some(name)) = (
        named(&KNATIVE_SERVING_NAMESPACE),
        named(&KNATIVE_SERVING_REVISION),
    ) {
        return Some(format!("{ns}/{name}"));
    }
    // `<revision>.<namespace>.svc.<cluster domain>`, perhaps with a port.
    let host = host_of(req);
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let mut labels = host.split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some(name), Some(ns), Some("svc")) if !name.is_empty() && !ns.is_empty() => {
            Some(format!("{ns}/{name}"))
        }
        _ => None,
    }
}

/// The request as Knative's activator sends it to a pod (§4.6): the Host moves to
/// `K-Original-Host` (the queue puts it back) and names the pod, `K-Proxy-Request:
/// activator` marks it proxied, and the `Knative-Serving-*` headers that named the
/// revision go. A client's own `K-Original-Host` is not trusted: the routed Host wins.
fn activator_form(req: &mut Request<Incoming>, pod: Option<&HeaderValue>, keep_original: bool) {
    let headers = req.headers_mut();
    let original = match pod {
        Some(pod) => headers.insert(header::HOST, pod.clone()),
        None => headers.remove(header::HOST),
    };
    if let Some(host) = original {
        if !(keep_original && headers.contains_key(K_ORIGINAL_HOST)) {
            headers.insert(K_ORIGINAL_HOST, host);
        }
    }
    headers.insert(K_PROXY_REQUEST, HeaderValue::from_static("activator"));
    headers.remove(KNATIVE_SERVING_REVISION);
    headers.remove(KNATIVE_SERVING_NAMESPACE);
}

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

/// The request's host. HTTP/1.1: an absolute-form target's authority (RFC 9112 §3.2.2),
/// else Host. h2: a Host the client set beside `:authority` is the virtual host it meant
/// (as hyper-based clients send it), else `:authority`.
fn host_of<B>(req: &Request<B>) -> &str {
    let host = || {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    };
    let authority = || req.uri().authority().map(|a| a.as_str());
    let found = if req.version() == Version::HTTP_2 {
        host().or_else(authority)
    } else {
        authority().or_else(host)
    };
    found.unwrap_or("")
}

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("activator idle timeout")
    }
}

impl std::error::Error for IdleTimeout {}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests;
