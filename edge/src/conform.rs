//! What an HTTP/1.x server answers before any handler sees a request (RFC 9110, RFC 9112), in
//! the words of Go's `net/http` server, which Knative's queue-proxy and activator run on.
//!
//! Pure functions of a request head (only `http` types), shared by the gateway and the queue. hyper already refuses most malformed heads itself (with an empty 400); these
//! are the rules it lets through, plus [`check_version`] for a connection layer that reads
//! the request line before hyper does.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};

/// What the server answers itself, instead of passing the request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `OPTIONS *` asks about the server, not a resource: Go's server answers 200 with
    /// `Content-Length: 0` (its `globalOptionsHandler`) and no handler sees it.
    ServerOptions,
    /// A request the server refuses, then closes the connection.
    Reject(Reject),
}

/// A refusal: status, the reason phrase of the status line, and a short `text/plain` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    /// Go puts the detail in the status line too: `400 Bad Request: missing required Host header`.
    pub reason: String,
    pub body: String,
}

impl Answer {
    /// The response, with the body made by `body` from its text; a refusal over HTTP/1 also
    /// closes the connection, as Go's server does.
    pub fn into_response<B>(self, h2: bool, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        match self {
            Answer::ServerOptions => {
                let mut r = Response::new(body(Bytes::new()));
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                r
            }
            Answer::Reject(reject) => reject.into_response(!h2, body),
        }
    }
}

impl Reject {
    /// `text/plain` with Go's reason phrase in the status line; `close` asks the client to
    /// open a new connection for its next request.
    pub fn into_response<B>(self, close: bool, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let mut r = Response::new(body(Bytes::from(self.body)));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(self.reason.as_bytes()) {
            r.extensions_mut().insert(reason);
        }
        r
    }

    /// Go's `statusError`: `<code> <reason>: <detail>` in the status line and as the body.
    pub fn status_error(status: StatusCode, detail: &str) -> Reject {
        let reason = format!(
            "{}: {detail}",
            status.canonical_reason().unwrap_or_default()
        );
        Reject {
            status,
            body: format!("{} {reason}", status.as_u16()),
            reason,
        }
    }

    pub fn bad_request(detail: &str) -> Reject {
        Reject::status_error(StatusCode::BAD_REQUEST, detail)
    }

    /// Go's answer to any other error reading a head: `400 Bad Request`, nothing more.
    pub fn plain(status: StatusCode) -> Reject {
        let reason = status.canonical_reason().unwrap_or_default().to_owned();
        Reject {
            status,
            body: format!("{} {reason}", status.as_u16()),
            reason,
        }
    }

    /// RFC 9112 §6.1: a transfer coding the server does not understand gets 501. Go never
    /// echoes the coding back (a cross-site scripting risk), and says only this.
    pub fn unsupported_transfer_encoding() -> Reject {
        Reject {
            status: StatusCode::NOT_IMPLEMENTED,
            reason: "Not Implemented".to_owned(),
            body: "Unsupported transfer encoding".to_owned(),
        }
    }
}

/// The rules of Go's server for a parsed request head, in Go's order: Host (RFC 9112 §3.2),
/// then transfer coding (§6.1), then `OPTIONS *`. HTTP/2 requests pass: their rules differ
/// (`:authority`, no transfer codings) and the h2 layer enforces them.
pub fn check_request<B>(req: &Request<B>) -> Result<(), Answer> {
    let version = req.version();
    if version == Version::HTTP_11 || version == Version::HTTP_10 {
        check_h1(req).map_err(Answer::Reject)?;
    }
    if req.method() == Method::OPTIONS && req.uri().path() == "*" {
        return Err(Answer::ServerOptions);
    }
    Ok(())
}

fn check_h1<B>(req: &Request<B>) -> Result<(), Reject> {
    let headers = req.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        // CONNECT names its host in the target (authority-form).
        (None, _) if req.version() == Version::HTTP_11 && req.method() != Method::CONNECT => {
            return Err(Reject::bad_request("missing required Host header"));
        }
        // Never route on the first of two: a proxy in front may have used the other.
        (Some(_), Some(_)) => return Err(Reject::bad_request("too many Host headers")),
        (Some(host), None) if !host.as_bytes().iter().all(|b| valid_host_byte(*b)) => {
            return Err(Reject::bad_request("malformed Host header"));
        }
        _ => {}
    }
    // Like nginx and Go: exactly one Transfer-Encoding, and it is `chunked`. HTTP/1.0 has no
    // transfer codings (Go ignores the header there; hyper refuses it before us).
    if req.version() == Version::HTTP_11 {
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        match (codings.next(), codings.next()) {
            (None, _) => {}
            (Some(coding), None) if is_chunked(coding) => {}
            _ => return Err(Reject::unsupported_transfer_encoding()),
        }
    }
    Ok(())
}

fn is_chunked(coding: &HeaderValue) -> bool {
    coding
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"chunked")
}

/// Bytes Go accepts in a Host header: those of a URI host and port (RFC 3986 `reg-name`,
/// IP literals, `pct-encoded`), leniently, without checking their order.
fn valid_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

/// The version of an HTTP/1 request line, as Go's server judges it: any `HTTP/1.x` is served
/// as HTTP/1.1 (RFC 9110 §2.5: a higher minor version is processed as the highest one
/// implemented); another major version gets `505 HTTP Version Not Supported: unsupported
/// protocol version`; anything that is not `HTTP/<digit>.<digit>` a plain 400.
///
/// For the connection layer: hyper refuses every version but 1.0 and 1.1 with an empty 400
/// before a service runs, so only a layer that reads the request line first can use this.
#[cfg_attr(not(test), allow(dead_code))]
pub fn check_version(version: &[u8]) -> Result<(), Reject> {
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            if *major == b'1' {
                Ok(())
            } else {
                Err(Reject::status_error(
                    StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    "unsupported protocol version",
                ))
            }
        }
        _ => Err(Reject::plain(StatusCode::BAD_REQUEST)),
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        version: Version,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Request<()> {
        let mut b = Request::builder()
            .version(version)
            .method(method)
            .uri(target);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(()).expect("a valid test request")
    }

    #[test]
    fn go_server_rules_for_request_heads() {
        use Version as V;
        let ok: Result<(), Answer> = Ok(());
        let bad = |detail: &str| Err(Answer::Reject(Reject::bad_request(detail)));
        let te = Err(Answer::Reject(Reject::unsupported_transfer_encoding()));
        let cases: Vec<(&str, Request<()>, Result<(), Answer>)> = vec![
            (
                "a plain GET",
                request(V::HTTP_11, "GET", "/", &[("host", "a")]),
                ok.clone(),
            ),
            (
                "no Host",
                request(V::HTTP_11, "GET", "/", &[]),
                bad("missing required Host header"),
            ),
            (
                "no Host, absolute-form target",
                request(V::HTTP_11, "GET", "http://a/", &[]),
                bad("missing required Host header"),
            ),
            (
                "no Host in HTTP/1.0",
                request(V::HTTP_10, "GET", "/", &[]),
                ok.clone(),
            ),
            (
                "no Host on CONNECT",
                request(V::HTTP_11, "CONNECT", "a:443", &[]),
                ok.clone(),
            ),
            (
                "an empty Host",
                request(V::HTTP_11, "GET", "/", &[("host", "")]),
                ok.clone(),
            ),
            (
                "an IPv6 Host with a zone and port",
                request(V::HTTP_11, "GET", "/", &[("host", "[fe80::1%25eth0]:8080")]),
                ok.clone(),
            ),
            (
                "two Host headers",
                request(V::HTTP_11, "GET", "/", &[("host", "a"), ("host", "a")]),
                bad("too many Host headers"),
            ),
            (
                "two Host headers in HTTP/1.0",
                request(V::HTTP_10, "GET", "/", &[("host", "a"), ("host", "b")]),
                bad("too many Host headers"),
            ),
            (
                "a Host with a space",
                request(V::HTTP_11, "GET", "/", &[("host", "a b")]),
                bad("malformed Host header"),
            ),
            (
                "a Host with a slash",
                request(V::HTTP_11, "GET", "/", &[("host", "a/b")]),
                bad("malformed Host header"),
            ),
            (
                "chunked",
                request(
                    V::HTTP_11,
                    "POST",
                    "/",
                    &[("host", "a"), ("transfer-encoding", "Chunked")],
                ),
                ok.clone(),
            ),
            (
                "gzip, chunked",
                request(
                    V::HTTP_11,
                    "POST",
                    "/",
                    &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
                ),
                te.clone(),
            ),
            (
                "gzip",
                request(
                    V::HTTP_11,
                    "POST",
                    "/",
                    &[("host", "a"), ("transfer-encoding", "gzip")],
                ),
                te.clone(),
            ),
            (
                "chunked twice",
                request(
                    V::HTTP_11,
                    "POST",
                    "/",
                    &[
                        ("host", "a"),
                        ("transfer-encoding", "chunked"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
                te.clone(),
            ),
            (
                "Host is checked before the transfer coding",
                request(V::HTTP_11, "POST", "/", &[("transfer-encoding", "gzip")]),
                bad("missing required Host header"),
            ),
            (
                "OPTIONS *",
                request(V::HTTP_11, "OPTIONS", "*", &[("host", "a")]),
                Err(Answer::ServerOptions),
            ),
            (
                "OPTIONS * without Host",
                request(V::HTTP_11, "OPTIONS", "*", &[]),
                bad("missing required Host header"),
            ),
            (
                "OPTIONS on a path",
                request(V::HTTP_11, "OPTIONS", "/", &[("host", "a")]),
                ok.clone(),
            ),
            (
                "HTTP/2 without Host (it has :authority)",
                request(V::HTTP_2, "GET", "http://a/", &[]),
                ok.clone(),
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(check_request(&req), want, "{name}");
        }
    }

    #[test]
    fn refusals_read_like_gos() {
        let r = Reject::bad_request("missing required Host header");
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.reason, "Bad Request: missing required Host header");
        assert_eq!(r.body, "400 Bad Request: missing required Host header");
        let r = Reject::unsupported_transfer_encoding();
        assert_eq!(
            (r.status.as_u16(), r.reason.as_str()),
            (501, "Not Implemented")
        );
        assert_eq!(r.body, "Unsupported transfer encoding");
        let r = Reject::plain(StatusCode::BAD_REQUEST);
        assert_eq!(
            (r.reason.as_str(), r.body.as_str()),
            ("Bad Request", "400 Bad Request")
        );
    }

    #[test]
    fn request_line_versions_as_go_judges_them() {
        let unsupported = Reject::status_error(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "unsupported protocol version",
        );
        assert_eq!(
            unsupported.body,
            "505 HTTP Version Not Supported: unsupported protocol version"
        );
        let v505 = Err(unsupported);
        let v400 = Err(Reject::plain(StatusCode::BAD_REQUEST));
        for (version, want) in [
            ("HTTP/1.1", Ok(())),
            ("HTTP/1.0", Ok(())),
            ("HTTP/1.2", Ok(())),
            ("HTTP/1.9", Ok(())),
            ("HTTP/2.0", v505.clone()),
            ("HTTP/3.0", v505.clone()),
            ("HTTP/0.9", v505.clone()),
            ("HTTP/1.10", v400.clone()),
            ("HTTP/1", v400.clone()),
            ("http/1.1", v400.clone()),
            ("HTTP/x.1", v400.clone()),
        ] {
            assert_eq!(check_version(version.as_bytes()), want, "{version}");
        }
    }
}
