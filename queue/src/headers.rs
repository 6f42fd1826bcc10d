//! What the queue reads from request headers (one pass), and how it rewrites requests and
//! responses on their way through (contract §3.3).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use knoxy_upstream::hop;

pub const K_NETWORK_HASH: HeaderName = HeaderName::from_static("k-network-hash");
pub const K_ORIGINAL_HOST: HeaderName = HeaderName::from_static("k-original-host");
pub const KNATIVE_SERVING_REVISION: HeaderName =
    HeaderName::from_static("knative-serving-revision");
pub const KNATIVE_SERVING_NAMESPACE: HeaderName =
    HeaderName::from_static("knative-serving-namespace");
pub const KNATIVE_SERVING_TAG: HeaderName = HeaderName::from_static("knative-serving-tag");
pub const KNATIVE_SERVING_DEFAULT_ROUTE: HeaderName =
    HeaderName::from_static("knative-serving-default-route");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

// === Reading ===

/// Everything the request path needs to know from the headers, read in one pass.
#[derive(Debug, Default)]
pub struct Scan {
    /// UA starts with `kube-probe/`, `Knative-Activator-Probe` or `Knative-Autoscaling-Probe`.
    pub probe_ua: bool,
    /// `K-Network-Probe`, present and non-empty.
    pub network_probe: Option<HeaderValue>,
    /// Any non-empty `K-Kubelet-Probe`, or a `kube-probe/` UA.
    pub kubelet_probe: bool,
    /// `K-Proxy-Request: activator`: counted as proxied by the activator.
    pub from_activator: bool,
    pub original_host: bool,
    /// Some header must go before the request is forwarded (hop-by-hop or Knative-internal).
    pub strip: bool,
    pub forwarded: bool,
    /// Any `X-Forwarded-For`, even empty: the peer is appended to it.
    pub forwarded_for: bool,
    pub x_forwarded: bool,
    pub upgrade: bool,
}

impl Scan {
    pub fn of(headers: &HeaderMap) -> Scan {
        let mut s = Scan::default();
        for (name, value) in headers {
            match name.as_str() {
                "user-agent" => {
                    let ua = value.as_bytes();
                    let kube = ua.starts_with(b"kube-probe/");
                    s.kubelet_probe |= kube;
                    s.probe_ua = kube
                        || ua.starts_with(b"Knative-Activator-Probe")
                        || ua.starts_with(b"Knative-Autoscaling-Probe");
                }
                "k-network-probe" if !value.is_empty() => s.network_probe = Some(value.clone()),
                "k-kubelet-probe" => s.kubelet_probe |= !value.is_empty(),
                "k-proxy-request" => s.from_activator |= value == "activator",
                "k-original-host" => s.original_host |= !value.is_empty(),
                "knative-serving-revision" | "knative-serving-namespace" => s.strip = true,
                "connection"
                | "proxy-connection"
                | "keep-alive"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding" => s.strip = true,
                "upgrade" => s.strip = true,
                "forwarded" => s.forwarded = true,
                "x-forwarded-for" => {
                    s.forwarded_for = true;
                    s.x_forwarded |= !value.is_empty();
                }
                "x-forwarded-proto" | "x-forwarded-host" => s.x_forwarded |= !value.is_empty(),
                _ => {}
            }
        }
        // Only a WebSocket-style upgrade is tunnelled; an h2c one is stripped like any hop.
        s.upgrade = s.strip && hop::is_upgrade(headers);
        s
    }

    /// `IsProbe`: left out of user metrics and the request log.
    pub fn is_probe(&self) -> bool {
        self.kubelet_probe || self.network_probe.is_some()
    }
}

// === Rewriting ===

/// Prepares the headers of a request for the user container, as Go's reverse proxy would.
/// `peer` is the client's IP, preformatted once per connection.
pub fn rewrite_request(headers: &mut HeaderMap, scan: &Scan, peer: &HeaderValue) {
    if scan.strip {
        headers.remove(KNATIVE_SERVING_REVISION);
        headers.remove(KNATIVE_SERVING_NAMESPACE);
        // An upgrade survives the hop: the tunnel is end to end.
        hop::strip(headers, scan.upgrade);
    }
    if scan.x_forwarded && !scan.forwarded {
        if let Some(v) = forwarded_from(headers) {
            headers.insert(header::FORWARDED, v);
        }
    }
    append_forwarded_for(headers, peer, scan.forwarded_for);
}

/// Removes hop-by-hop headers from a response; a 101 keeps its `Connection` and `Upgrade`.
pub fn rewrite_response(headers: &mut HeaderMap, switching: bool) {
    if switching {
        headers.remove(header::TRANSFER_ENCODING);
    } else {
        hop::strip(headers, false);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue, present: bool) {
    if !present {
        headers.insert(X_FORWARDED_FOR, peer.clone());
        return;
    }
    let mut prior = headers.get_all(X_FORWARDED_FOR).iter();
    let Some(first) = prior.next() else {
        headers.insert(X_FORWARDED_FOR, peer.clone());
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in prior {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(peer.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// The `Forwarded` header Knative's shim derives from `X-Forwarded-*` (first value of each).
fn forwarded_from(headers: &HeaderMap) -> Option<HeaderValue> {
    let first = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let value = forwarded(
        first(X_FORWARDED_FOR),
        first(X_FORWARDED_HOST),
        first(X_FORWARDED_PROTO),
    )?;
    HeaderValue::from_str(&value).ok()
}

pub fn forwarded(xff: Option<&str>, host: Option<&str>, proto: Option<&str>) -> Option<String> {
    let mut nodes = xff.into_iter().flat_map(|v| v.split(',')).map(str::trim);
    let mut out = String::new();
    let pair = |out: &mut String, key: &str, v: &str| {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(v);
    };
    if let Some(first) = nodes.next() {
        pair(&mut out, "for", &node(first));
    }
    if let Some(h) = host {
        pair(&mut out, "host", h);
    }
    if let Some(p) = proto {
        pair(&mut out, "proto", p);
    }
    for n in nodes {
        out.push_str(", for=");
        out.push_str(&node(n));
    }
    (!out.is_empty()).then_some(out)
}

fn node(n: &str) -> String {
    if n.contains(':') {
        format!("\"[{n}]\"")
    } else {
        n.to_owned()
    }
}

/// The route tag for user metrics (contract §3.3).
pub fn route_tag(headers: &HeaderMap) -> String {
    let tag = headers
        .get(KNATIVE_SERVING_TAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let default = headers
        .get(KNATIVE_SERVING_DEFAULT_ROUTE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (tag.is_empty(), default.is_empty()) {
        (true, true) => "kn:disabled".to_owned(),
        (true, false) => "kn:default".to_owned(),
        (false, _) if default == "true" => "kn:undefined".to_owned(),
        (false, _) => tag.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn rewritten(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = map(pairs);
        let scan = Scan::of(&h);
        rewrite_request(&mut h, &scan, &HeaderValue::from_static("127.0.0.1"));
        h
    }

    #[test]
    fn forwarded_shim_matches_knative_examples() {
        assert_eq!(
            forwarded(
                Some("1.2.3.4, 2001:db8::1"),
                Some("fw.example"),
                Some("https")
            )
            .as_deref(),
            Some("for=1.2.3.4;host=fw.example;proto=https, for=\"[2001:db8::1]\"")
        );
        assert_eq!(
            forwarded(None, None, Some("http")).as_deref(),
            Some("proto=http")
        );
        assert_eq!(forwarded(None, None, None), None);
    }

    #[test]
    fn forwarded_is_derived_then_peer_is_appended() {
        let h = rewritten(&[
            ("x-forwarded-for", "1.2.3.4, 2001:db8::1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "fw.example"),
        ]);
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4;host=fw.example;proto=https, for=\"[2001:db8::1]\""
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 2001:db8::1, 127.0.0.1");
    }

    #[test]
    fn existing_forwarded_is_kept() {
        let h = rewritten(&[("forwarded", "for=9.9.9.9"), ("x-forwarded-proto", "http")]);
        assert_eq!(h["forwarded"], "for=9.9.9.9");
    }

    #[test]
    fn hop_by_hop_and_internal_headers_are_stripped_except_te_trailers() {
        let h = rewritten(&[
            ("connection", "keep-alive, X-Hop"),
            ("x-hop", "1"),
            ("proxy-authorization", "x"),
            ("te", "trailers"),
            ("knative-serving-revision", "r"),
            ("knative-serving-namespace", "n"),
            ("knative-serving-tag", "blue"),
            ("k-proxy-request", "activator"),
        ]);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "k-proxy-request",
                "knative-serving-tag",
                "te",
                "x-forwarded-for"
            ]
        );
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn websocket_upgrade_keeps_upgrade_and_connection() {
        let h = rewritten(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn probe_classification() {
        let s = Scan::of(&map(&[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ]));
        assert!(s.probe_ua && s.kubelet_probe && s.is_probe());
        let s = Scan::of(&map(&[("user-agent", "curl/8"), ("k-kubelet-probe", "1")]));
        assert!(!s.probe_ua && s.kubelet_probe);
        let s = Scan::of(&map(&[
            ("user-agent", "Knative-Activator-Probe"),
            ("k-network-probe", ""),
        ]));
        assert!(s.probe_ua && s.network_probe.is_none() && !s.is_probe());
    }

    #[test]
    fn route_tags() {
        assert_eq!(route_tag(&map(&[])), "kn:disabled");
        assert_eq!(
            route_tag(&map(&[("knative-serving-default-route", "x")])),
            "kn:default"
        );
        assert_eq!(
            route_tag(&map(&[
                ("knative-serving-tag", "blue"),
                ("knative-serving-default-route", "true")
            ])),
            "kn:undefined"
        );
        assert_eq!(route_tag(&map(&[("knative-serving-tag", "blue")])), "blue");
    }

    #[test]
    fn response_hop_by_hop_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("content-length", "13"),
        ]);
        rewrite_response(&mut h, false);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-length"]
        );
    }
}
