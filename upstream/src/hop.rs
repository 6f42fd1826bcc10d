//! Hop-by-hop headers (RFC 9110 §7.6.1): what a proxy removes on each hop. Both proxies
//! forward through `Upstream`, so both strip the same way here.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The hop-by-hop headers (plus the legacy ones Go drops); `Connection` first and `Upgrade`
/// last, as `strip` relies on.
const HOPS: usize = 9;
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    PROXY_CONNECTION,
    KEEP_ALIVE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a request switches protocols end to end (WebSocket, say): `Connection: upgrade`
/// and an `Upgrade` other than `h2c`. An h2c upgrade is hop-by-hop: each side of a proxy
/// speaks HTTP/2 or not on its own, so it is stripped, not tunnelled.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    if !headers.contains_key(header::UPGRADE) {
        return false; // the common case, without scanning `Connection`
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v, "upgrade"));
    connection_upgrade
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| !p.trim().is_empty() && !p.trim().eq_ignore_ascii_case("h2c"))
}

/// Removes the hop-by-hop headers present, and the ones `Connection` names, in one pass over
/// the names (most messages carry at most `Connection: keep-alive`). `TE: trailers` stays
/// (gRPC asks for it). With `keep_upgrade`, `Upgrade` stays and `Connection: upgrade` is set
/// again, for a tunnel.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = hop_index(name) {
            present[i] = true;
        }
    }
    present[HOPS - 1] &= !keep_upgrade;
    if !present.contains(&true) {
        return;
    }
    if present[0] {
        // On bytes: obs-text in one element must not hide the others. Only names present
        // are parsed into a `HeaderName` (so `Connection: close` allocates nothing), but any
        // present one goes, `Close:` too (RFC 9110 §7.6.1).
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(tokens)
            .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case(b"upgrade")))
            // Hop-by-hop names go below anyway (`keep-alive` is what most messages list);
            // `te` must go here, so that `TE: trailers` is not kept.
            .filter(|t| {
                t.eq_ignore_ascii_case(b"te")
                    || !HOP_BY_HOP
                        .iter()
                        .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
            })
            .filter_map(|t| std::str::from_utf8(t).ok())
            .filter(|t| headers.contains_key(*t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    let trailers = present[5]
        && headers
            .get_all(header::TE)
            .iter()
            .any(|v| has_token(v, "trailers"));
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present[i] {
            headers.remove(name);
        }
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
pub fn has_token(v: &HeaderValue, token: &str) -> bool {
    tokens(v).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The elements of a comma-separated value, whitespace trimmed; on bytes, since a value may
/// hold obs-text.
fn tokens(v: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

fn hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "proxy-connection" => 1,
        "keep-alive" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut n: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        n.sort();
        n
    }

    #[test]
    fn hop_by_hop_and_listed_headers_go_and_te_trailers_stays() {
        let mut h = map(&[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-end", "kept"),
        ]);
        strip(&mut h, false);
        assert_eq!(names(&h), ["te: trailers", "x-end: kept"]);
    }

    /// Found by the property tests: an obs-text element made `strip` skip the whole
    /// `Connection` value, and a header named `Close` outlived `Connection: close`.
    #[test]
    fn every_name_connection_lists_goes_whatever_else_the_value_holds() {
        let obs = |s: &[u8]| HeaderValue::from_bytes(s).unwrap_or_else(|_| unreachable!());
        for (connection, rest, want) in [
            (&b"\x80, x-hop"[..], &[][..], &["x-end: kept"][..]),
            (b"x-hop,\xff\xfe", &[], &["x-end: kept"]),
            (b"close", &[("close", "1")], &["x-end: kept", "x-hop: 1"]),
            (
                b"Close, keep-alive",
                &[("close", "1"), ("keep-alive", "timeout=5")],
                &["x-end: kept", "x-hop: 1"],
            ),
            (
                b"x-hop, \xe9",
                &[("te", "trailers")],
                &["te: trailers", "x-end: kept"],
            ),
        ] {
            let mut h = map(&[("x-hop", "1"), ("x-end", "kept")]);
            for (k, v) in rest {
                h.append(*k, obs(v.as_bytes()));
            }
            h.append(header::CONNECTION, obs(connection));
            strip(&mut h, false);
            assert_eq!(names(&h), want, "Connection: {connection:?}");
        }

        let mut te = HeaderMap::new();
        te.append(header::TE, obs(b"trailers, \xe9"));
        te.append(header::CONNECTION, obs(b"keep-alive"));
        strip(&mut te, false);
        assert_eq!(names(&te), ["te: trailers"]);

        let mut ws = map(&[("upgrade", "websocket")]);
        ws.append(header::CONNECTION, obs(b"Upgrade, \x80, x-hop"));
        ws.append("x-hop", obs(b"1"));
        assert!(is_upgrade(&ws));
        strip(&mut ws, true);
        assert_eq!(names(&ws), ["connection: upgrade", "upgrade: websocket"]);
    }

    #[test]
    fn a_websocket_upgrade_is_end_to_end_and_an_h2c_one_is_not() {
        let ws = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&ws));
        let mut kept = ws.clone();
        strip(&mut kept, true);
        assert_eq!(names(&kept), ["connection: upgrade", "upgrade: websocket"]);

        let h2c = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ]);
        assert!(!is_upgrade(&h2c));
        let mut gone = h2c;
        strip(&mut gone, false);
        assert!(gone.is_empty(), "{gone:?}");
        assert!(
            !is_upgrade(&map(&[("upgrade", "websocket")])),
            "without Connection: upgrade"
        );
    }
}
