//! Property tests of the route table's lookups over what a client sends: any `Host`, path
//! and header set never makes them panic, and each agrees with a reference model written
//! from its docs; `Route::pick` hands out draws in proportion for any percents.

use proptest::prelude::*;

use super::*;
use crate::derive::props::config;

// === Routes: prefix and exact header matches ===

/// Few letters, so that prefixes and paths overlap often.
const PATH: &str = "[/ab%.é]{0,6}";

const MATCH_NAMES: &[&str] = &["x-a", "x-b", "cookie"];

/// Values that overlap on purpose: joined repeats (`v,w`), case, spaces, empty.
const MATCH_VALUES: &[&str] = &["", "v", "V", "w", "v,w", "v, w", " v", "v,w,v"];

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop::sample::select(MATCH_NAMES).prop_map(HeaderName::from_static)
}

/// A value a client may send: one that a rule names, or any bytes a `HeaderValue` holds.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        4 => prop::sample::select(MATCH_VALUES).prop_map(HeaderValue::from_static),
        1 => prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..6)
            .prop_map(|b| HeaderValue::from_bytes(&b).unwrap_or_else(|_| unreachable!())),
    ]
}

fn route_with(prefix: String, headers: Vec<(HeaderName, HeaderValue)>) -> Route {
    Route {
        ingress: "ns/props".into(),
        prefix,
        headers,
        append_headers: vec![],
        rewrite_host: None,
        splits: vec![],
        redirect_https: false,
        probe_hash: "".into(),
    }
}

fn vhost() -> impl Strategy<Value = VirtualHost> {
    let rule = (
        header_name(),
        prop::sample::select(MATCH_VALUES).prop_map(HeaderValue::from_static),
    );
    let route = (PATH, prop::collection::vec(rule, 0..3))
        .prop_map(|(prefix, headers)| route_with(prefix, headers));
    prop::collection::vec(route, 0..6).prop_map(|routes| VirtualHost { routes })
}

fn request_headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((header_name(), header_value()), 0..6).prop_map(|lines| {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(name, value);
        }
        h
    })
}

/// The reference: the index of the first route whose prefix starts the path and whose
/// every rule holds: the header is sent, and an empty `exact` asks no more, else its
/// values joined with `,` are `exact`, byte for byte.
fn reference_route(routes: &[Route], path: &str, headers: &HeaderMap) -> Option<usize> {
    routes.iter().position(|r| {
        path.as_bytes().starts_with(r.prefix.as_bytes())
            && r.headers.iter().all(|(name, exact)| {
                let sent: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
                !sent.is_empty() && (exact.is_empty() || sent.join(&b","[..]) == exact.as_bytes())
            })
    })
}

fn index_of(routes: &[Route], found: Option<&Route>) -> Option<usize> {
    found.and_then(|f| routes.iter().position(|r| std::ptr::eq(r, f)))
}

// === Hosts ===

/// Configured names as `derive` leaves them: lower-cased, no trailing dot, no port; some
/// IP literals and some with non-ASCII letters.
fn configured_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&["a.example.com", "b.example.com", "a.example", "localhost"][..])
            .prop_map(str::to_owned),
        1 => prop::sample::select(&["[::1]", "10.0.0.1", "[fe80::1%25eth0]", "é.example"][..])
            .prop_map(str::to_owned),
        2 => "[a-z0-9][a-z0-9.-]{0,8}[a-z0-9]",
    ]
}

/// A `Host` as a client sends it: a configured name or another, in any case, with or
/// without a trailing dot (or two) and a port; or any string at all.
fn host(names: Vec<String>) -> impl Strategy<Value = String> {
    let shaped = (
        prop_oneof![
            3 => prop::sample::select(names),
            1 => configured_name(),
        ],
        any::<u64>(),
        prop::sample::select(&["", "", ".", "..", ":", "."][..]),
        prop::sample::select(&["", "", ":80", ":8080", ":", ":x", ":80:80", "]:1"][..]),
    )
        .prop_map(|(name, mask, dots, port)| {
            let cased: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            format!("{cased}{dots}{port}")
        });
    prop_oneof![4 => shaped, 1 => any::<String>()]
}

/// A table of `names` (the first claim of a name wins) and maybe a rule without hosts;
/// each vhost says which claim it is in its first route's prefix.
fn table(names: &[String], any: bool) -> HostTable {
    let mut t = HostTable::default();
    for (i, name) in names.iter().enumerate() {
        let vhost = Arc::new(VirtualHost {
            routes: vec![route_with(format!("{i}"), vec![])],
        });
        t.claim(Some(&name.as_str().into()), &vhost);
    }
    if any {
        let vhost = Arc::new(VirtualHost {
            routes: vec![route_with("any".into(), vec![])],
        });
        t.claim(None, &vhost);
    }
    t
}

/// The reference: a `Host` names a configured host when, ASCII case aside, it is the name,
/// then at most one `.`, then at most one `:` and digits (a port). Else the rule without
/// hosts, if any. The answer is the configured name and the claim's tag.
fn reference_host(names: &[String], any: bool, host: &str) -> Option<(Option<String>, String)> {
    let host = host.to_ascii_lowercase();
    let names_it = |name: &str| {
        let Some(rest) = host.strip_prefix(name) else {
            return false;
        };
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
    };
    match names.iter().position(|n| names_it(n)) {
        Some(i) => Some((Some(names[i].clone()), format!("{i}"))),
        None => any.then(|| (None, "any".to_owned())),
    }
}

fn names_and_any() -> impl Strategy<Value = (Vec<String>, bool)> {
    (
        prop::collection::vec(configured_name(), 1..5),
        any::<bool>(),
    )
}

// === Splits ===

fn split(percent: u32) -> Split {
    Split {
        percent,
        backend: Backend::new(Target::Endpoints(vec![]), false),
        append_headers: vec![],
    }
}

fn route_of(percents: &[u32]) -> Route {
    Route {
        splits: percents.iter().copied().map(split).collect(),
        ..route_with("/".into(), vec![])
    }
}

/// Percents that add up to `total`: the gaps between sorted cut points (some zero).
fn percents_summing_to(total: u32) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0..=total, 0..6).prop_map(move |mut cuts| {
        cuts.sort_unstable();
        let mut last = 0;
        let mut percents: Vec<u32> = cuts
            .into_iter()
            .map(|c| {
                let p = c - last;
                last = c;
                p
            })
            .collect();
        percents.push(total - last);
        percents
    })
}

/// How many of the draws `0..100` each split takes, and how many none does.
fn tally(route: &Route) -> (Vec<u32>, u32) {
    let mut taken = vec![0; route.splits.len()];
    let mut none = 0;
    for draw in 0..100 {
        match route.pick(draw) {
            Some(s) => {
                let i = route
                    .splits
                    .iter()
                    .position(|r| std::ptr::eq(r, s))
                    .unwrap_or(usize::MAX);
                taken[i] += 1;
            }
            None => none += 1,
        }
    }
    (taken, none)
}

/// The reference for any percents: the first split with a percent above 0 whose running
/// total (counted without overflow) is above the draw.
fn reference_pick(percents: &[u32], draw: u32) -> Option<usize> {
    let mut total = 0u64;
    percents.iter().position(|&p| {
        total += u64::from(p);
        p > 0 && u64::from(draw) < total
    })
}

fn any_percent() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => 0u32..=100,
        1 => any::<u32>(),
        1 => prop::sample::select(&[u32::MAX, u32::MAX - 1, u32::MAX / 2 + 1, 1 << 31][..]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..config() })]

    #[test]
    fn route_is_the_first_route_whose_prefix_and_headers_match(
        vhost in vhost(),
        path in PATH,
        headers in request_headers(),
    ) {
        let found = vhost.route(&path, &headers);
        prop_assert_eq!(
            index_of(&vhost.routes, found),
            reference_route(&vhost.routes, &path, &headers),
            "{:?} {:?}",
            path,
            headers
        );
        prop_assert_eq!(found.is_some(), index_of(&vhost.routes, found).is_some());
    }

    #[test]
    fn route_never_panics_on_any_path(vhost in vhost(), path in any::<String>(), headers in request_headers()) {
        let found = vhost.route(&path, &headers);
        prop_assert_eq!(
            index_of(&vhost.routes, found),
            reference_route(&vhost.routes, &path, &headers)
        );
    }

    #[test]
    fn find_named_is_the_reference_host_match(
        (names, any, host) in names_and_any()
            .prop_flat_map(|(names, any)| (Just(names.clone()), Just(any), host(names))),
    ) {
        let t = table(&names, any);
        let found = t
            .find_named(&host)
            .map(|(name, vhost)| (name.map(|n| n.to_string()), vhost.routes[0].prefix.clone()));
        prop_assert_eq!(found, reference_host(&names, any, &host), "{:?} in {:?}", host, names);
        prop_assert_eq!(t.find(&host).is_some(), reference_host(&names, any, &host).is_some());
    }

    #[test]
    fn percents_adding_up_to_100_take_their_share_of_the_draws(percents in percents_summing_to(100)) {
        let route = route_of(&percents);
        let (taken, none) = tally(&route);
        prop_assert_eq!(&taken, &percents);
        prop_assert_eq!(none, 0);
    }

    #[test]
    fn percents_adding_up_to_less_leave_the_rest_unpicked(
        (total, percents) in (0u32..100).prop_flat_map(|t| (Just(t), percents_summing_to(t))),
    ) {
        let route = route_of(&percents);
        let (taken, none) = tally(&route);
        prop_assert_eq!(&taken, &percents);
        prop_assert_eq!(none, 100 - total);
        for draw in total..100 {
            prop_assert!(route.pick(draw).is_none(), "draw {}", draw);
        }
    }

    #[test]
    fn any_percents_and_draws_pick_as_the_reference_without_panic(
        percents in prop::collection::vec(any_percent(), 0..6),
        draws in prop::collection::vec(prop_oneof![0u32..100, any::<u32>()], 1..20),
    ) {
        let route = route_of(&percents);
        for draw in (0..100).chain(draws) {
            let picked = route.pick(draw).and_then(|s| route.splits.iter().position(|r| std::ptr::eq(r, s)));
            if draw < 100 {
                prop_assert_eq!(picked, reference_pick(&percents, draw), "draw {}", draw);
            }
            if let Some(i) = picked {
                prop_assert!(percents[i] > 0);
            }
        }
    }
}
