//! Client connections at the edge, shared by the gateway and knoxy-queue, so that both bound
//! every wait a client can cause in one way:
//! - [`Limits`]: timeouts and sizes, each a field with a documented default;
//! - [`Edge::serve`]: one connection from accept to close: HTTP/1.1 or h2c chosen by the
//!   first bytes (or by ALPN), the header-read and keep-alive idle deadlines, HTTP/2's stream
//!   and reset limits, and a graceful close on drain;
//! - [`handshake`]: TLS with a bound on the handshake;
//! - [`ConnLimit`]: a cap on open connections that answers 503 past it;
//! - [`conform`]: what an HTTP/1.x server answers before any handler sees a request.
//!
//! No deadline runs while a request is in flight: a backend that is still working (a long
//! request, a long stream) is never cut here.

#![forbid(unsafe_code)]

mod cap;
pub mod conform;
mod conn;
mod io;

use std::time::Duration;

pub use cap::{ConnLimit, ConnPermit};
pub use conn::{handshake, Closed, Edge, Proto};

/// A request's head must be complete this long after its first byte; before the first
/// request, after accept (HAProxy's `timeout http-request`, commonly 10 s at the edge).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight closes after this (nginx's `keepalive_timeout`
/// is 75 s, Envoy's `idle_timeout` 1 h; below a typical load balancer's 60 s would race it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A TLS handshake must finish this long after accept (Envoy's `transport_socket_connect_timeout`).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Go's `http.DefaultMaxHeaderBytes` (1 MiB) plus the 4096 bytes of slack Go's server adds:
/// both proxies accept what Knative's Go components accept, on HTTP/1.1 and HTTP/2 alike.
pub const MAX_HEADER_BYTES: usize = (1 << 20) + 4096;
/// Go counts bytes only; hyper also counts fields. 1000 lets real requests through.
pub const MAX_HEADER_FIELDS: usize = 1000;
/// HTTP/2 streams a client may have open at once (HAProxy's default is 100, nginx's 128).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client may reset before the server has accepted them, the CVE-2023-44487
/// ("rapid reset") bound: past it the connection gets GOAWAY (the h2 crate's default, 20).
pub const H2_MAX_PENDING_RESET_STREAMS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it sends GOAWAY.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Open client connections, over every listener of a process.
pub const MAX_CONNECTIONS: usize = 10_000;

/// What a client may cost a connection. `Default` gives the edge defaults above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_header_fields: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_pending_reset_streams: usize,
    pub h2_max_local_error_resets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
            max_header_fields: MAX_HEADER_FIELDS,
            h2_max_concurrent_streams: H2_MAX_CONCURRENT_STREAMS,
            h2_max_pending_reset_streams: H2_MAX_PENDING_RESET_STREAMS,
            h2_max_local_error_resets: H2_MAX_LOCAL_ERROR_RESETS,
        }
    }
}
