//! Property tests of `check_request` over request heads a stranger may send: any method,
//! HTTP/1.0, 1.1 or 2 (and the odd other version), Host sent 0 to 3 times with any bytes a
//! header value holds, and any Transfer-Encoding values. It never panics, and it answers as
//! a reference model written from its docs (RFC 9112 §3.2 and §6.1, Go's order).

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

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(
        &[
            "GET", "HEAD", "POST", "PUT", "OPTIONS", "CONNECT", "DELETE", "PATCH", "TRACE", "PRI",
            "options", "QUERY",
        ][..],
    )
    .prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap_or_else(|_| unreachable!()))
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        3 => Just(Version::HTTP_11),
        2 => Just(Version::HTTP_10),
        2 => Just(Version::HTTP_2),
        1 => Just(Version::HTTP_09),
        1 => Just(Version::HTTP_3),
    ]
}

/// Request targets of each form: origin, absolute, authority and asterisk.
fn target() -> impl Strategy<Value = http::Uri> {
    prop::sample::select(
        &[
            "*",
            "/",
            "/*",
            "/a?b=*",
            "http://a/",
            "http://a",
            "a:443",
            "/%2A",
        ][..],
    )
    .prop_map(http::Uri::from_static)
}

/// Any bytes a `HeaderValue` holds (HTAB, SP and visible ASCII, obs-text), mostly those of
/// a host.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-zA-Z0-9.:\\[\\]%_~!$&'()*+,;=-]{0,12}".prop_map(String::into_bytes),
        1 => prop::sample::select(&["a.example.com:80", "[::1]:8080", "", "a b", "a/b", "a@b", "a\tb", "é"][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..10),
    ]
}

fn coding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(
            &[
                "chunked", "Chunked", "CHUNKED", " chunked", "chunked\t", "\t chunked ", "gzip",
                "gzip, chunked", "chunked, chunked", "chunked,", "identity", "", "chunked;q=1",
                "chunk ed",
            ][..],
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => value_bytes(),
    ]
}

#[derive(Debug, Clone)]
struct Head {
    method: Method,
    version: Version,
    target: http::Uri,
    hosts: Vec<Vec<u8>>,
    codings: Vec<Vec<u8>>,
    /// Other headers, which the rules do not read.
    other: Vec<Vec<u8>>,
}

fn head() -> impl Strategy<Value = Head> {
    (
        method(),
        version(),
        target(),
        prop::collection::vec(value_bytes(), 0..=3),
        prop_oneof![
            2 => Just(Vec::new()),
            2 => coding().prop_map(|c| vec![c]),
            1 => prop::collection::vec(coding(), 0..=3),
        ],
        prop::collection::vec(value_bytes(), 0..=2),
    )
        .prop_map(|(method, version, target, hosts, codings, other)| Head {
            method,
            version,
            target,
            hosts,
            codings,
            other,
        })
}

fn request(head: &Head) -> Request<()> {
    let value = |b: &[u8]| HeaderValue::from_bytes(b).unwrap_or_else(|_| unreachable!());
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.version_mut() = head.version;
    *req.uri_mut() = head.target.clone();
    let headers = req.headers_mut();
    for o in &head.other {
        headers.append("x-other", value(o));
    }
    for h in &head.hosts {
        headers.append(header::HOST, value(h));
    }
    for c in &head.codings {
        headers.append(header::TRANSFER_ENCODING, value(c));
    }
    req
}

/// RFC 3986 `host [":" port]`, leniently (any order): `unreserved`, `sub-delims`, the `%`
/// of `pct-encoded`, the `[`, `]` and `:` of IP literals and the port.
fn host_byte(b: u8) -> bool {
    let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let sub_delims = b"!$&'()*+,;=".contains(&b);
    unreserved || sub_delims || b"%[]:".contains(&b)
}

/// The rules as `check_request`'s docs state them, for HTTP/1.x only: one Host, of host
/// bytes (none is fine in HTTP/1.0, and on CONNECT); then in HTTP/1.1 no Transfer-Encoding
/// or exactly one that is `chunked` (OWS and case aside); then `OPTIONS *` is answered.
fn reference(head: &Head) -> Result<(), Answer> {
    let h1 = head.version == Version::HTTP_10 || head.version == Version::HTTP_11;
    let bad = |detail: &str| Err(Answer::Reject(Reject::bad_request(detail)));
    if h1 {
        match head.hosts.as_slice() {
            [] if head.version == Version::HTTP_11 && head.method != Method::CONNECT => {
                return bad("missing required Host header");
            }
            [] => {}
            [host] if !host.iter().copied().all(host_byte) => {
                return bad("malformed Host header");
            }
            [_] => {}
            _ => return bad("too many Host headers"),
        }
    }
    if head.version == Version::HTTP_11 {
        let chunked = |c: &[u8]| {
            let c = std::str::from_utf8(c).unwrap_or("");
            c.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked")
        };
        match head.codings.as_slice() {
            [] => {}
            [c] if chunked(c) => {}
            _ => return Err(Answer::Reject(Reject::unsupported_transfer_encoding())),
        }
    }
    if head.method == Method::OPTIONS && head.target.path() == "*" {
        return Err(Answer::ServerOptions);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn check_request_answers_as_its_documented_rules(head in head()) {
        let req = request(&head);
        let got = check_request(&req);
        prop_assert_eq!(&got, &reference(&head), "{:?}", head);
        if let Err(Answer::Reject(r)) = got {
            prop_assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_IMPLEMENTED);
            prop_assert!(r.body.starts_with(r.status.as_str()) || r.status == StatusCode::NOT_IMPLEMENTED);
        }
    }

    #[test]
    fn http2_requests_pass_but_for_options_star(head in head()) {
        let head = Head { version: Version::HTTP_2, ..head };
        let want = if head.method == Method::OPTIONS && head.target.path() == "*" {
            Err(Answer::ServerOptions)
        } else {
            Ok(())
        };
        prop_assert_eq!(check_request(&request(&head)), want);
    }
}
