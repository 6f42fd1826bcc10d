//! The route table the gateway serves: what `derive` produces, read on every request.
//! Lookups are by host, then first matching route; weights are pre-summed for the pick.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::revision::Settings;

/// Everything the gateway's listeners need, swapped in whole when the objects change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable {
    /// Public listeners: ExternalIP rules.
    pub public: HostTable,
    /// Private (cluster-local) listeners: ClusterLocal and ExternalIP rules.
    pub private: HostTable,
    /// Certificates for the TLS listeners, chosen by SNI.
    pub certs: Vec<Arc<Cert>>,
    /// Every valid revision by `namespace/name`, whether a KIngress names it or not: the
    /// activator role serves them all.
    pub revisions: BTreeMap<String, Arc<RevisionTarget>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostTable {
    /// Lower-cased names; shared with the translation that claimed them. A fast hash: the
    /// keys come from the table, clients only look up.
    hosts: HashMap<Arc<str>, Arc<VirtualHost>, foldhash::fast::RandomState>,
    /// Rules with no hosts match every host.
    any: Option<Arc<VirtualHost>>,
}

/// The routes of one host, in the order they are tried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VirtualHost {
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `namespace/name` of the KIngress, for metrics and logs.
    pub ingress: Arc<str>,
    /// A literal prefix (`/` when the KIngress left it empty).
    pub prefix: String,
    /// Exact matches.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Set (not appended) before the split's own; parsed once here, not per request.
    pub append_headers: Vec<(HeaderName, HeaderValue)>,
    pub rewrite_host: Option<HeaderValue>,
    pub splits: Vec<Split>,
    /// `httpOption: Redirected` on an ExternalIP rule: plain HTTP gets a 301 to https.
    pub redirect_https: bool,
    /// What `K-Network-Hash: override` becomes (contract §3.3).
    pub probe_hash: Arc<str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// 0-100; a split with 0 never receives traffic.
    pub percent: u32,
    pub backend: Backend,
    pub append_headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub target: Target,
    /// The Service port speaks h2c (named `http2`/`h2c`, or appProtocol `kubernetes.io/h2c`).
    pub h2c: bool,
    /// Where the round robin over `target`'s endpoints is, shared by every thread.
    pub next: RoundRobin,
}

/// A backend's round-robin position. It is serving state, not configuration: it compares
/// equal whatever its value, and a clone starts over.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Ready addresses of the Service's EndpointSlices, on the target port.
    Endpoints(Vec<SocketAddr>),
    /// An ExternalName Service: resolved by DNS at connect time.
    Dns { host: String, port: u16 },
    /// A Knative revision: the gateway is its activator and sends to its pods directly.
    Revision(Arc<RevisionTarget>),
}

/// A revision as the activator role sees it: its settings and its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionTarget {
    /// `namespace/name`: the key of its throttler, and of `RouteTable::revisions`.
    pub key: String,
    pub settings: Settings,
    /// Ready pods on the queue port, sorted by address.
    pub ready: Vec<SocketAddr>,
    /// Pods Kubernetes does not call ready yet, sorted; not used until they are.
    pub not_ready: Vec<SocketAddr>,
    /// The ready addresses of the revision's public Service, sorted as text as Knative's
    /// activators sort them: in Proxy mode these are the activators in its subset, and a
    /// gateway among them takes its index's share of the pods (§4.3).
    pub activators: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    pub hosts: Vec<String>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

// === Lookup ===

impl HostTable {
    /// The virtual host for a `Host` header, port and one trailing dot ignored, case-insensitive.
    pub fn find(&self, host: &str) -> Option<&VirtualHost> {
        self.find_named(host).map(|(_, vhost)| vhost)
    }

    /// `find`, with the configured name that matched (None: a rule without hosts matched).
    pub fn find_named(&self, host: &str) -> Option<(Option<&Arc<str>>, &VirtualHost)> {
        // One dot: `a.example.com.` is the FQDN of `a.example.com`; `a.example.com..` is no name.
        let name = strip_port(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get_key_value(name.to_ascii_lowercase().as_str())
        } else {
            self.hosts.get_key_value(name)
        };
        match found {
            Some((name, vhost)) => Some((Some(name), vhost)),
            None => self.any.as_deref().map(|vhost| (None, vhost)),
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len() + usize::from(self.any.is_some())
    }

    /// Every virtual host (one shared by several hosts comes once per host).
    pub fn vhosts(&self) -> impl Iterator<Item = &VirtualHost> {
        self.hosts.values().chain(&self.any).map(Arc::as_ref)
    }

    /// The virtual hosts that are not the very ones `before` has under the same name (a
    /// KIngress translated again gets new ones; an unchanged one keeps its own).
    pub fn changed_since<'a>(
        &'a self,
        before: &'a HostTable,
    ) -> impl Iterator<Item = &'a VirtualHost> {
        let hosts = self
            .hosts
            .iter()
            .filter(|(name, v)| before.hosts.get(*name).is_none_or(|b| !Arc::ptr_eq(b, v)))
            .map(|(_, v)| v);
        let any = self
            .any
            .iter()
            .filter(|v| before.any.as_ref().is_none_or(|b| !Arc::ptr_eq(b, v)));
        hosts.chain(any).map(Arc::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a host's routes unless an earlier rule claimed it (the first rule wins); the
    /// name is already lower-cased.
    pub(crate) fn claim(&mut self, host: Option<&Arc<str>>, vhost: &Arc<VirtualHost>) {
        match host {
            Some(h) => {
                self.hosts
                    .entry(Arc::clone(h))
                    .or_insert_with(|| Arc::clone(vhost));
            }
            None => {
                self.any.get_or_insert_with(|| Arc::clone(vhost));
            }
        }
    }

    /// Whether a lower-cased name is claimed.
    pub(crate) fn has(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// Whether a rule without hosts is claimed.
    pub(crate) fn has_any(&self) -> bool {
        self.any.is_some()
    }

    pub(crate) fn reserve(&mut self, hosts: usize) {
        self.hosts.reserve(hosts);
    }
}

impl VirtualHost {
    /// The first route whose prefix and headers match. An absent header matches nothing; an
    /// empty `exact` only asks for the header to be present (as Kourier does).
    pub fn route(&self, path: &str, headers: &HeaderMap) -> Option<&Route> {
        self.routes.iter().find(|r| {
            path.starts_with(r.prefix.as_str())
                && r.headers
                    .iter()
                    .all(|(name, value)| header_matches(headers, name, value))
        })
    }
}

impl Route {
    /// Picks a split for a number in `0..100` (the caller's random draw); percent-0 splits never win.
    pub fn pick(&self, draw: u32) -> Option<&Split> {
        let mut acc = 0u32;
        self.splits.iter().find(|s| {
            // Saturating: `pick` is public, and percents past 100 must not panic a debug build.
            acc = acc.saturating_add(s.percent);
            s.percent > 0 && draw < acc
        })
    }
}

impl Backend {
    pub fn new(target: Target, h2c: bool) -> Backend {
        Backend {
            target,
            h2c,
            next: RoundRobin::default(),
        }
    }

    /// The next endpoint in turn; None when there is none.
    pub fn pick(&self) -> Option<SocketAddr> {
        let addrs = match &self.target {
            Target::Endpoints(addrs) => addrs,
            // Until the throttler: the ready pods in turn.
            Target::Revision(revision) => &revision.ready,
            Target::Dns { .. } => return None,
        };
        (!addrs.is_empty())
            .then(|| addrs[self.next.0.fetch_add(1, Ordering::Relaxed) % addrs.len()])
    }
}

impl RevisionTarget {
    pub fn namespace(&self) -> &str {
        self.key.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.key.split_once('/').map_or(&self.key, |(_, name)| name)
    }
}

impl Clone for RoundRobin {
    fn clone(&self) -> Self {
        RoundRobin::default()
    }
}

impl PartialEq for RoundRobin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RoundRobin {}

/// A header sent several times is matched as its values joined with `,` (as Envoy does).
fn header_matches(headers: &HeaderMap, name: &HeaderName, exact: &HeaderValue) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    if exact.is_empty() {
        return true;
    }
    match values.next() {
        None => first == exact,
        Some(second) => {
            let mut joined = [first.as_bytes(), second.as_bytes()].join(&b","[..]);
            for v in values {
                joined.push(b',');
                joined.extend_from_slice(v.as_bytes());
            }
            joined == exact.as_bytes()
        }
    }
}

/// `host:port` → `host`, keeping IPv6 literals (`[::1]:80` → `[::1]`).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_a_port_a_trailing_dot_or_other_case() {
        let mut t = HostTable::default();
        let v = Arc::new(VirtualHost::default());
        t.claim(Some(&"hello.example.com".into()), &v);
        for h in [
            "hello.example.com",
            "hello.example.com:80",
            "HELLO.example.com.",
            "hello.example.com.:8080",
        ] {
            assert!(t.find(h).is_some(), "{h}");
        }
        assert!(t.find("other.example.com").is_none());
        // Found by the property tests: every trailing dot went, not one.
        for h in [
            "hello.example.com..",
            "hello.example.com..:80",
            "hello.example.com:80.",
        ] {
            assert!(t.find(h).is_none(), "{h}");
        }
        let named = t
            .find_named("HELLO.example.com:80")
            .and_then(|(name, _)| name);
        assert_eq!(
            named.map(|n| &**n),
            Some("hello.example.com"),
            "the configured name"
        );
        t.claim(None, &v);
        assert!(matches!(t.find_named("other.example.com"), Some((None, _))));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn header_matches_are_exact_and_an_empty_exact_asks_for_presence() {
        let route = |exact: &'static str| Route {
            ingress: "ns/a".into(),
            prefix: "/".into(),
            headers: vec![(
                HeaderName::from_static("x-tag"),
                HeaderValue::from_static(exact),
            )],
            append_headers: vec![],
            rewrite_host: None,
            splits: vec![],
            redirect_https: false,
            probe_hash: "".into(),
        };
        let request = |tag: Option<&'static str>| {
            let mut h = HeaderMap::new();
            for t in tag.iter().flat_map(|t| t.split('|')) {
                h.append("x-tag", HeaderValue::from_static(t));
            }
            h
        };
        for (exact, tag, matches) in [
            ("v", Some("v"), true),
            ("v", Some("V"), false),
            ("v", Some(""), false),
            ("v", None, false),
            ("", Some("anything"), true),
            ("", Some(""), true),
            ("", None, false),
            ("v,a", Some("v|a"), true), // sent twice: matched joined
            ("v", Some("v|a"), false),
        ] {
            let vhost = VirtualHost {
                routes: vec![route(exact)],
            };
            assert_eq!(
                vhost.route("/", &request(tag)).is_some(),
                matches,
                "exact {exact:?}, sent {tag:?}"
            );
        }
    }

    #[test]
    fn percent_zero_splits_are_never_picked() {
        let split = |percent| Split {
            percent,
            backend: Backend::new(Target::Endpoints(vec![]), false),
            append_headers: vec![],
        };
        let route = Route {
            ingress: "ns/a".into(),
            prefix: "/".into(),
            headers: vec![],
            append_headers: vec![],
            rewrite_host: None,
            splits: vec![split(0), split(90), split(10)],
            redirect_https: false,
            probe_hash: "".into(),
        };
        let picks: Vec<u32> = (0..100)
            .map(|d| route.pick(d).map_or(999, |s| s.percent))
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 90).count(), 90);
        assert_eq!(picks.iter().filter(|p| **p == 10).count(), 10);
    }

    /// Found by the property tests: the running total overflowed (a panic in debug builds).
    #[test]
    fn percents_past_u32_max_pick_without_overflow() {
        let split = |percent| Split {
            percent,
            backend: Backend::new(Target::Endpoints(vec![]), false),
            append_headers: vec![],
        };
        let route = |percents: &[u32]| Route {
            ingress: "ns/a".into(),
            prefix: "/".into(),
            headers: vec![],
            append_headers: vec![],
            rewrite_host: None,
            splits: percents.iter().copied().map(split).collect(),
            redirect_https: false,
            probe_hash: "".into(),
        };
        for (percents, draw, picked) in [
            (&[50, u32::MAX][..], 60, Some(u32::MAX)),
            (&[50, u32::MAX, 7], 99, Some(u32::MAX)),
            (&[1 << 31, 1 << 31, 3], 99, Some(1 << 31)),
            (&[1 << 31, 1 << 31, 3], u32::MAX, None),
            (&[0, u32::MAX], 0, Some(u32::MAX)),
            (&[u32::MAX, u32::MAX], u32::MAX - 1, Some(u32::MAX)),
        ] {
            let r = route(percents);
            assert_eq!(
                r.pick(draw).map(|s| s.percent),
                picked,
                "{percents:?}, draw {draw}"
            );
        }
    }

    #[test]
    fn each_backend_takes_its_endpoints_in_turn_whatever_other_backends_do() {
        let addrs = |a: &str, b: &str| {
            Target::Endpoints(vec![a.parse().expect("addr"), b.parse().expect("addr")])
        };
        let one = Backend::new(addrs("10.0.0.1:80", "10.0.0.2:80"), false);
        let two = Backend::new(addrs("10.0.1.1:80", "10.0.1.2:80"), false);
        // Alternating between the backends (a 50/50 split) must not pin either to one pod.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            seen.insert(one.pick());
            seen.insert(two.pick());
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(Backend::new(Target::Endpoints(vec![]), false).pick(), None);
    }
}
