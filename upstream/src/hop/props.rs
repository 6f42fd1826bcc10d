//! Property tests of hop-by-hop stripping over header sets a stranger may send: any valid
//! names (the hop-by-hop ones in any case), repeated headers, empty values, and `Connection`
//! values naming any tokens with odd spacing, commas and case. The expectation is written
//! from RFC 9110 §7.6.1 and this module's docs, not from `strip`'s code.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

/// Few cases, since a debug `cargo test` must stay fast; no files, since a failure is
/// turned into a table test.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const HOP_NAMES: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// End-to-end names, some of them tokens `Connection` itself uses.
const OTHER_NAMES: &[&str] = &[
    "x-a",
    "x-b",
    "close",
    "trailers",
    "host",
    "content-length",
    "http2-settings",
    "x-forwarded-for",
    "authorization",
];

/// `s` with the ASCII letters whose bit is set in `mask` flipped in case.
fn cased(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// A header name as sent: a hop-by-hop one, a common one or any token, in any case.
fn name_text() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        3 => prop::sample::select(HOP_NAMES).prop_map(str::to_owned),
        3 => prop::sample::select(OTHER_NAMES).prop_map(str::to_owned),
        2 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}",
    ];
    (base, any::<u64>()).prop_map(|(n, mask)| cased(&n, mask))
}

/// Any byte a `HeaderValue` may hold: HTAB, visible ASCII and space, obs-text.
fn value_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff]
}

fn any_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(value_byte(), 0..12)
}

/// Optional whitespace around a list element (RFC 9110 `OWS`), sometimes a lot of it.
fn ows() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", "", " ", "\t", "  ", " \t "][..])
}

/// A comma-separated list as sent: names (and now and then garbage, say obs-text), with odd
/// spacing and empty elements.
fn list_value() -> impl Strategy<Value = Vec<u8>> {
    let element = prop_oneof![
        6 => name_text().prop_map(String::into_bytes),
        1 => Just(Vec::new()),
        1 => any_value(),
    ];
    prop::collection::vec((ows(), element, ows()), 0..5).prop_map(|elements| {
        let mut v = Vec::new();
        for (i, (before, e, after)) in elements.into_iter().enumerate() {
            if i > 0 {
                v.push(b',');
            }
            v.extend_from_slice(before.as_bytes());
            v.extend_from_slice(&e);
            v.extend_from_slice(after.as_bytes());
        }
        v
    })
}

fn te_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(&["trailers", "Trailers", " trailers , deflate", "gzip", ""][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        list_value(),
    ]
}

fn upgrade_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(&["websocket", "h2c", "H2C", " h2c, websocket", "", ","][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        any_value(),
    ]
}

/// One header line: a name in any case, and a value fit for it.
fn line() -> impl Strategy<Value = (String, Vec<u8>)> {
    let named = |n: &'static str, v: BoxedStrategy<Vec<u8>>| {
        (any::<u64>(), v).prop_map(move |(mask, v)| (cased(n, mask), v))
    };
    prop_oneof![
        4 => (name_text(), any_value()),
        3 => named("connection", list_value().boxed()),
        1 => named("te", te_value().boxed()),
        1 => named("upgrade", upgrade_value().boxed()),
    ]
}

fn header_map(lines: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in lines {
        // The strategies only make valid names and values.
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| unreachable!());
        let value = HeaderValue::from_bytes(value).unwrap_or_else(|_| unreachable!());
        h.append(name, value);
    }
    h
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec(line(), 0..10).prop_map(|lines| header_map(&lines))
}

/// A request that switches protocols: the headers of `headers()` plus a `Connection` value
/// listing `upgrade` (in any case, among other tokens) and an `Upgrade` naming a protocol.
fn upgrade_headers() -> impl Strategy<Value = HeaderMap> {
    (
        prop::collection::vec(line(), 0..8),
        list_value(),
        ows(),
        any::<u64>(),
        ows(),
        list_value(),
        prop::sample::select(&["websocket", "WebSocket", "h2c, websocket", "foo/2"][..]),
    )
        .prop_map(|(lines, before, pad, mask, pad2, after, protocol)| {
            let mut h = header_map(&lines);
            let mut connection = before;
            connection.push(b',');
            connection.extend_from_slice(pad.as_bytes());
            connection.extend_from_slice(cased("upgrade", mask).as_bytes());
            connection.extend_from_slice(pad2.as_bytes());
            connection.push(b',');
            connection.extend(after);
            let connection =
                HeaderValue::from_bytes(&connection).unwrap_or_else(|_| unreachable!());
            h.append(header::CONNECTION, connection);
            h.append(header::UPGRADE, HeaderValue::from_static(protocol));
            h
        })
}

// === The reference model ===

/// The elements of a comma-separated value, OWS (SP, HTAB) trimmed, on bytes: a value with
/// obs-text still lists its other elements.
fn elements(v: &HeaderValue) -> Vec<&[u8]> {
    v.as_bytes()
        .split(|b| *b == b',')
        .map(|e| {
            let start = e.iter().position(|b| !matches!(b, b' ' | b'\t'));
            let end = e.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
            match (start, end) {
                (Some(s), Some(t)) => &e[s..=t],
                _ => &e[..0],
            }
        })
        .collect()
}

fn lists(h: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        elements(v)
            .iter()
            .any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The header names the `Connection` values name.
fn named_by_connection(h: &HeaderMap) -> HashSet<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| {
            elements(v)
                .into_iter()
                .filter_map(|e| HeaderName::from_bytes(e).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_hop(name: &HeaderName) -> bool {
    HOP_NAMES.contains(&name.as_str())
}

fn values(h: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    h.get_all(name).iter().cloned().collect()
}

/// What `strip` leaves, as a map from name to values in order.
fn expected(before: &HeaderMap, keep_upgrade: bool) -> Vec<(HeaderName, Vec<HeaderValue>)> {
    let mut named = named_by_connection(before);
    if keep_upgrade {
        named.remove(&header::UPGRADE);
    }
    let mut want = Vec::new();
    for name in before.keys() {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue; // below
        }
        if !is_hop(name) && !named.contains(name) {
            want.push((name.clone(), values(before, name)));
        }
    }
    // gRPC's `TE: trailers` goes on, unless `Connection` named TE itself.
    if lists(before, &header::TE, "trailers") && !named.contains(&header::TE) {
        want.push((header::TE, vec![HeaderValue::from_static("trailers")]));
    }
    if keep_upgrade {
        want.push((header::UPGRADE, values(before, &header::UPGRADE)));
        want.push((
            header::CONNECTION,
            vec![HeaderValue::from_static("upgrade")],
        ));
    }
    want.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    want
}

fn actual(after: &HeaderMap) -> Vec<(HeaderName, Vec<HeaderValue>)> {
    let mut got: Vec<_> = after
        .keys()
        .map(|name| (name.clone(), values(after, name)))
        .collect();
    got.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    got
}

/// `is_upgrade` as documented: `Connection` lists `upgrade`, and an `Upgrade` value (of
/// text) names a protocol other than `h2c`.
fn upgrade_model(h: &HeaderMap) -> bool {
    lists(h, &header::CONNECTION, "upgrade")
        && h.get_all(header::UPGRADE).iter().any(|v| {
            v.to_str().is_ok()
                && elements(v)
                    .iter()
                    .any(|e| !e.is_empty() && !e.eq_ignore_ascii_case(b"h2c"))
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn strip_removes_exactly_the_hop_by_hop_and_named_headers(before in headers()) {
        let mut after = before.clone();
        strip(&mut after, false);
        prop_assert_eq!(actual(&after), expected(&before, false), "from {:?}", before);
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_and_connection_pair(before in upgrade_headers()) {
        prop_assert!(is_upgrade(&before), "{:?}", before);
        let mut after = before.clone();
        strip(&mut after, true);
        prop_assert_eq!(actual(&after), expected(&before, true), "from {:?}", before);
    }

    #[test]
    fn strip_keeping_upgrade_never_panics_and_keeps_end_to_end_headers(before in headers()) {
        let mut after = before.clone();
        strip(&mut after, true);
        let named = named_by_connection(&before);
        for name in before.keys().filter(|n| !is_hop(n) && !named.contains(*n)) {
            prop_assert_eq!(values(&after, name), values(&before, name), "{}", name);
        }
        for name in after.keys() {
            let allowed = name == header::UPGRADE || name == header::CONNECTION || name == header::TE;
            prop_assert!(allowed || (!is_hop(name) && !named.contains(name)), "{} left", name);
        }
    }

    #[test]
    fn is_upgrade_agrees_with_its_docs(h in prop_oneof![headers(), upgrade_headers()]) {
        prop_assert_eq!(is_upgrade(&h), upgrade_model(&h), "{:?}", h);
    }
}
