//! Every answer the gateway makes up itself, in one place (linkerd2-proxy's `ServerRescue`):
//! each error has a status and a short public body that names no address and no internals;
//! the details go to the log with the request's id.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use knoxy_edge::conform::Answer;
use knoxy_upstream::UpstreamError;

use crate::gateway::Body;

/// Why the gateway answers a request itself.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no KIngress serves this host")]
    UnknownHost,
    #[error("no path or header rule matches")]
    NoRoute,
    #[error("every split has 0 percent")]
    NoSplit,
    #[error("the backend has no ready endpoints")]
    NoEndpoints,
    #[error("the Host cannot be an h2 authority")]
    BadAuthority,
    #[error("upstream {0}")]
    Upstream(#[from] UpstreamError),
    /// The request breaks HTTP/1.x's rules (or is `OPTIONS *`, answered here).
    #[error("refused: {0:?}")]
    Conform(Answer),
    /// A request to the activator names no revision it knows (Knative's 404).
    #[error("no such revision")]
    UnknownRevision,
    /// The revision already holds as many requests as its queue may (Knative's 503).
    #[error("the revision's queue is full")]
    QueueFull,
    /// No pod of the revision had room within its timeout (Knative's 504).
    #[error("no pod of the revision had room within its timeout")]
    ActivatorTimeout,
    /// The client's request body broke mid-way (a bad chunk, a short body).
    #[error("client body: {0}")]
    ClientBody(&'static str),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UnknownHost | GatewayError::NoRoute | GatewayError::UnknownRevision => {
                StatusCode::NOT_FOUND
            }
            GatewayError::NoSplit | GatewayError::NoEndpoints | GatewayError::QueueFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::ActivatorTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::BadAuthority | GatewayError::ClientBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::Conform(Answer::Reject(r)) => r.status,
            GatewayError::Conform(Answer::ServerOptions) => StatusCode::OK,
            GatewayError::Upstream(UpstreamError::DialTimeout { .. }) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// What a stranger may read: a few words, nothing from the inside.
    pub fn public_body(&self) -> &'static str {
        match self {
            GatewayError::UnknownHost => "no such host\n",
            GatewayError::NoRoute => "no route\n",
            GatewayError::UnknownRevision => "Error getting active endpoint: revision not found\n",
            GatewayError::NoSplit | GatewayError::NoEndpoints => "no healthy upstream\n",
            GatewayError::QueueFull => "pending request queue full\n",
            GatewayError::ActivatorTimeout => "activator request timeout",
            GatewayError::BadAuthority => "bad host\n",
            GatewayError::ClientBody(detail) => detail,
            GatewayError::Conform(_) => "",
            GatewayError::Upstream(UpstreamError::DialTimeout { .. }) => {
                "upstream connect timeout\n"
            }
            GatewayError::Upstream(UpstreamError::Dial { .. }) => "upstream connect error\n",
            GatewayError::Upstream(_) => "upstream reset before the response\n",
        }
    }
}

/// The response for `error`; server-side failures are logged with `request_id` and `host`.
pub fn rescue(error: GatewayError, request_id: &[u8], host: &str) -> Response<Body> {
    if let GatewayError::Conform(answer) = error {
        return answer.into_response(false, full);
    }
    let status = error.status();
    if status.is_server_error() {
        eprintln!(
            "knoxy: request {} for {host:?}: {status}: {error}",
            String::from_utf8_lossy(request_id)
        );
    }
    let mut response = text(status, error.public_body());
    if let GatewayError::ClientBody(_) = error {
        // The request's framing is broken: nothing after it on this connection can be read.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `httpOption: Redirected`: plain HTTP on the public listener goes to https.
pub fn redirect(host: &str, uri: &Uri) -> Response<Body> {
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

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knoxy_upstream::Endpoint;

    #[test]
    fn public_bodies_name_no_address_and_no_internals() {
        let addr = Endpoint::Addr(([10, 1, 2, 3], 8012).into());
        let cases = [
            (GatewayError::UnknownHost, 404),
            (GatewayError::NoRoute, 404),
            (GatewayError::NoSplit, 503),
            (GatewayError::NoEndpoints, 503),
            (GatewayError::BadAuthority, 400),
            (
                GatewayError::Upstream(UpstreamError::Dial {
                    addr: addr.clone(),
                    reason: "connection refused".into(),
                }),
                502,
            ),
            (
                GatewayError::Upstream(UpstreamError::DialTimeout { addr, secs: 3.2 }),
                504,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error}");
            let body = error.public_body();
            assert!(body.len() < 40, "short: {body:?}");
            for leak in ["10.1.2.3", "8012", "refused", "dial"] {
                assert!(!body.contains(leak), "{body:?} leaks {leak}");
            }
        }
    }
}
