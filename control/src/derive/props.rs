//! Property tests of `derive`: arbitrary KIngress objects (weird hosts, percents, header
//! names, paths, timestamps) never make it panic, every status says why, the output does
//! not depend on the order objects arrive in, and the remembering deriver is the pure fold.
//! The strategies are shared with the file source's property tests.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::kingress::{
    HeaderMatch, HttpIngressPath, HttpIngressRuleValue, IngressRule, IngressSpec, IngressTls,
    ObjectMeta, INGRESS_CLASS_ANNOTATION,
};

/// Few cases, since a debug `cargo test` must stay fast; no files, since a failure is
/// turned into a table test.
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// === Strategies over the real types ===

const HOSTS: &[&str] = &[
    "a.example.com",
    "A.Example.COM.",
    "b.example.com",
    "hello.default.svc.cluster.local",
    "",
    "*",
    "*.example.com",
    "a..b",
    "xn--bcher-kva.example",
    "bücher.example",
    "a.example.com:8080",
    "[::1]",
    "10.0.0.1",
    "weird host",
    ".",
    "on",
    "null",
];
const PATHS: &[&str] = &["", "/", "/api", "/api/", "api", "//", "/ü", "/a b", "/%zz"];
const HEADER_NAMES: &[&str] = &[
    "Knative-Serving-Tag",
    "x-ok",
    "Bad Name",
    "",
    ":authority",
    "ÄÖ",
    "a\nb",
    "host",
];
const HEADER_VALUES: &[&str] = &[
    "",
    "v",
    "candidate",
    "line\nbreak",
    "\u{7f}",
    "ü",
    " padded ",
];
const SERVICES: &[&str] = &["rev-a", "rev-b", "ext", "missing", ""];
const NAMESPACES: &[&str] = &["default", "default", "other", ""];
const NAMES: &[&str] = &["a", "b", "c", "d", "e"];
const VISIBILITIES: &[&str] = &["", "ExternalIP", "ClusterLocal", "Public"];
const HTTP_OPTIONS: &[&str] = &["", "Enabled", "Redirected", "Sometimes"];
const REWRITES: &[&str] = &["", "internal.example", "my host", "a:b:c", "ü.example"];
const TIMESTAMPS: &[&str] = &[
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00Z",
    "2024-06-01T12:00:00.5+02:00",
    "2023-12-31T23:59:59Z",
    "yesterday",
    "",
];
/// What random strings are made of: enough YAML and HTTP syntax to hurt.
const ALPHABET: &[char] = &[
    'a', 'b', 'Z', '0', '9', '.', '-', '_', '/', ':', '*', ' ', '\n', '\t', '#', '"', '\'', '{',
    '}', '[', ']', ',', '&', '!', '|', '>', '%', '@', '`', '?', 'ü', '\u{0}', '\u{7f}', '\u{200b}',
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop::sample::select(pool).prop_map(str::to_owned)
}

fn junk() -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..10)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Mostly from `pool`, sometimes anything.
fn weird(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop_oneof![4 => pick(pool), 1 => junk()]
}

fn percent() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => Just(100i64),
        4 => 0i64..=100,
        1 => any::<i64>(),
        1 => prop::sample::select(&[i64::MIN, i64::MAX, -1, 101][..]),
    ]
}

fn port() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        4 => Just(IntOrString::Int(80)),
        1 => Just(IntOrString::Int(81)),
        1 => any::<i64>().prop_map(IntOrString::Int),
        1 => weird(&["http", "http2", ""]).prop_map(IntOrString::String),
    ]
}

fn headers() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(weird(HEADER_NAMES), weird(HEADER_VALUES), 0..3)
}

fn split() -> impl Strategy<Value = IngressBackendSplit> {
    (
        weird(NAMESPACES),
        weird(SERVICES),
        port(),
        percent(),
        headers(),
    )
        .prop_map(
            |(service_namespace, service_name, service_port, percent, append_headers)| {
                IngressBackendSplit {
                    service_namespace,
                    service_name,
                    service_port,
                    percent,
                    append_headers,
                }
            },
        )
}

fn path() -> impl Strategy<Value = HttpIngressPath> {
    (
        weird(PATHS),
        weird(REWRITES),
        prop::collection::btree_map(
            weird(HEADER_NAMES),
            weird(HEADER_VALUES).prop_map(|exact| HeaderMatch { exact }),
            0..2,
        ),
        prop::option::weighted(0.9, prop::collection::vec(split(), 0..3)),
        headers(),
    )
        .prop_map(
            |(path, rewrite_host, headers, splits, append_headers)| HttpIngressPath {
                path,
                rewrite_host,
                headers,
                splits,
                append_headers,
            },
        )
}

fn rule() -> impl Strategy<Value = IngressRule> {
    (
        prop::collection::vec(weird(HOSTS), 0..3),
        weird(VISIBILITIES),
        prop::option::weighted(
            0.9,
            prop::option::weighted(0.9, prop::collection::vec(path(), 0..3))
                .prop_map(|paths| HttpIngressRuleValue { paths }),
        ),
    )
        .prop_map(|(hosts, visibility, http)| IngressRule {
            hosts,
            visibility,
            http,
        })
}

fn tls() -> impl Strategy<Value = IngressTls> {
    (
        prop::collection::vec(weird(HOSTS), 0..2),
        weird(&["cert", "missing", ""]),
        weird(NAMESPACES),
    )
        .prop_map(|(hosts, secret_name, secret_namespace)| IngressTls {
            hosts,
            secret_name,
            secret_namespace,
        })
}

/// A KIngress of Knoxy's class (mostly), named from a small pool so that keys recur.
pub(crate) fn kingress() -> impl Strategy<Value = KIngress> {
    let class = prop_oneof![
        8 => Just(Some(KNOXY_INGRESS_CLASS)),
        1 => Just(Some("kourier.ingress.networking.knative.dev")),
        1 => Just(None),
    ];
    (
        pick(NAMES),
        pick(&["default", "default", "other"]),
        class,
        prop::option::of(weird(TIMESTAMPS)),
        prop::collection::vec(tls(), 0..2),
        prop::collection::vec(rule(), 0..3),
        weird(HTTP_OPTIONS),
    )
        .prop_map(
            |(name, namespace, class, created, tls, rules, http_option)| KIngress {
                metadata: ObjectMeta {
                    name,
                    namespace,
                    annotations: class
                        .map(|c| BTreeMap::from([(INGRESS_CLASS_ANNOTATION.to_owned(), c.into())]))
                        .unwrap_or_default(),
                    creation_timestamp: created,
                    ..ObjectMeta::default()
                },
                spec: IngressSpec {
                    tls,
                    rules,
                    http_option,
                },
            },
        )
}

/// A mostly valid KIngress: the same shapes with plain values, so that many are served.
pub(crate) fn plain_kingress() -> impl Strategy<Value = KIngress> {
    (
        pick(NAMES),
        prop::collection::vec(pick(&["a.example.com", "b.example.com", "c.example.com"]), 1..3),
        prop::option::of(pick(TIMESTAMPS)),
        pick(&["rev-a", "rev-b"]),
        pick(PATHS),
    )
        .prop_map(|(name, hosts, created, service, path)| {
            let mut ing: KIngress = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default",
                    "annotations": {INGRESS_CLASS_ANNOTATION: KNOXY_INGRESS_CLASS}},
                "spec": {"rules": [{"hosts": hosts, "http": {"paths": [{"path": path, "splits": [
                    {"serviceNamespace": "default", "serviceName": service, "servicePort": 80}]}]}}]},
            }))
            .unwrap_or_default();
            ing.metadata.creation_timestamp = created;
            ing
        })
}

/// The objects KIngresses point at: two revisions with pods, an ExternalName Service, a
/// secret, in `default` and in `other`.
pub(crate) fn backends() -> Snapshot {
    let mut snap = Snapshot::default();
    for ns in ["default", "other"] {
        for (name, port_name, port) in [("rev-a", "http", 80), ("rev-b", "http2", 81)] {
            let service: Service = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [{"name": port_name, "port": port, "targetPort": 8012}]},
            }))
            .unwrap_or_default();
            let slice: EndpointSlice = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-x"), "namespace": ns,
                    "labels": {SERVICE_NAME_LABEL: name}},
                "endpoints": [{"addresses": ["10.0.0.1", "not an ip"]}],
                "ports": [{"name": port_name, "port": 8012}],
            }))
            .unwrap_or_default();
            snap.services
                .insert(service.metadata.key(), Arc::new(service));
            snap.endpoint_slices
                .insert(slice.metadata.key(), Arc::new(slice));
        }
        let ext: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": ns},
            "spec": {"type": "ExternalName", "externalName": "ext.example.",
                "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap_or_default();
        snap.services.insert(ext.metadata.key(), Arc::new(ext));
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "cert", "namespace": ns},
            "data": {"tls.crt": "Q0VSVA==", "tls.key": "not base64!"},
        }))
        .unwrap_or_default();
        snap.secrets.insert(secret.metadata.key(), Arc::new(secret));
    }
    snap
}

/// `backends` and `ingresses`, later ones winning for the same key (as sources do).
pub(crate) fn with(ingresses: impl IntoIterator<Item = KIngress>) -> Snapshot {
    let mut snap = backends();
    for i in ingresses {
        snap.ingresses.insert(i.metadata.key(), Arc::new(i));
    }
    snap
}

/// The keys of each kind whose object differs between two snapshots.
pub(crate) fn moved_between(before: &Snapshot, after: &Snapshot) -> Moved {
    fn keys<T: PartialEq>(
        a: &BTreeMap<String, Arc<T>>,
        b: &BTreeMap<String, Arc<T>>,
    ) -> std::collections::HashSet<String> {
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    }
    Moved {
        all: false,
        ingresses: keys(&before.ingresses, &after.ingresses),
        services: keys(&before.services, &after.services),
        endpoint_slices: keys(&before.endpoint_slices, &after.endpoint_slices),
        secrets: keys(&before.secrets, &after.secrets),
        revisions: keys(&before.revisions, &after.revisions),
    }
}

// === What every output must be ===

/// Every status says why it is not served, and every route served belongs to a KIngress
/// whose status says it is served, with that probe hash.
pub(crate) fn check_well_formed(out: &Derived) -> Result<(), TestCaseError> {
    for (key, status) in &out.status {
        match status {
            IngressStatus::Ready { hash } => prop_assert_eq!(hash.len(), 64, "{}", key),
            IngressStatus::Invalid { errors, .. } => {
                prop_assert!(!errors.is_empty(), "{} is invalid without a reason", key);
                for e in errors {
                    prop_assert!(
                        e.field.starts_with("spec") || e.field.starts_with("metadata"),
                        "{}: {:?} names no field",
                        key,
                        e
                    );
                    prop_assert!(!e.problem.is_empty(), "{}: {:?}", key, e);
                }
            }
            IngressStatus::NotReady { reason, message } => {
                prop_assert!(!reason.is_empty() && !message.is_empty(), "{}", key);
            }
            IngressStatus::Conflict { host } => prop_assert!(!host.is_empty(), "{}", key),
        }
    }
    for vhost in out.table.public.vhosts().chain(out.table.private.vhosts()) {
        for route in &vhost.routes {
            let served = match out.status.get(&*route.ingress) {
                Some(IngressStatus::Ready { hash }) => Some(hash),
                Some(IngressStatus::Invalid {
                    serving: Some(hash),
                    ..
                }) => Some(hash),
                _ => None,
            };
            prop_assert_eq!(served, Some(&route.probe_hash), "{}", route.ingress);
        }
    }
    for key in out.last_valid.keys() {
        prop_assert!(
            out.status.contains_key(key),
            "{} remembered but not ours",
            key
        );
    }
    Ok(())
}

// === Properties ===

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_ingresses_derive_without_panic_and_every_status_says_why(
        objects in prop::collection::vec(kingress(), 0..6),
    ) {
        check_well_formed(&derive(&with(objects), &DeriveConfig::default()))?;
    }

    #[test]
    fn ingresses_arriving_one_by_one_in_any_order_end_where_derive_of_all_ends(
        objects in prop::collection::vec(prop_oneof![kingress(), plain_kingress()], 1..6)
            .prop_flat_map(|objects| {
                let count = objects.len();
                (Just(objects), Just((0..count).collect::<Vec<_>>()).prop_shuffle())
            }),
    ) {
        let (objects, order) = objects;
        let all = with(objects.clone());
        let want = derive(&all, &DeriveConfig::default());
        // Each step holds the final version of each object seen so far, so nothing earlier is remembered.
        let mut deriver = Deriver::new(DeriveConfig::default());
        let mut arrived = backends();
        for &i in &order {
            let key = objects[i].metadata.key();
            arrived.ingresses.insert(key.clone(), Arc::clone(&all.ingresses[&key]));
            check_well_formed(&deriver.derive(&arrived))?;
        }
        prop_assert_eq!(deriver.derive(&all), want);
    }

    #[test]
    fn a_remembering_deriver_is_the_pure_fold_of_derive_after(
        steps in prop::collection::vec(
            prop::collection::vec(prop_oneof![kingress(), plain_kingress()], 0..4), 1..5),
    ) {
        let mut deriver = Deriver::new(DeriveConfig::default());
        let mut previous = Derived::default();
        for objects in steps {
            let snap = with(objects);
            let remembered = deriver.derive(&snap);
            let pure = derive_after(&previous.last_valid, &snap, &DeriveConfig::default());
            check_well_formed(&pure)?;
            prop_assert_eq!(&remembered, &pure);
            previous = pure;
        }
    }

    #[test]
    fn a_deriver_told_what_moved_gives_what_the_pure_fold_gives(
        steps in prop::collection::vec((
            prop::collection::vec(prop_oneof![kingress(), plain_kingress()], 0..4),
            prop::collection::vec(any::<bool>(), 14),
            any::<bool>(),
        ), 1..6),
    ) {
        let mut told = Deriver::new(DeriveConfig::default());
        let mut previous = Derived::default();
        let mut seen = Snapshot::default();
        for (objects, dropped, moved_pods) in steps {
            let mut snap = with(objects);
            // Backends come and go, and pods move, between steps.
            let mut keys: Vec<(u8, String)> = Vec::new();
            keys.extend(snap.services.keys().map(|k| (0, k.clone())));
            keys.extend(snap.endpoint_slices.keys().map(|k| (1, k.clone())));
            keys.extend(snap.secrets.keys().map(|k| (2, k.clone())));
            for ((kind, key), _) in keys.iter().zip(&dropped).filter(|(_, d)| **d) {
                match kind {
                    0 => drop(snap.services.remove(key)),
                    1 => drop(snap.endpoint_slices.remove(key)),
                    _ => drop(snap.secrets.remove(key)),
                }
            }
            if moved_pods {
                if let Some(slice) = snap.endpoint_slices.get_mut("default/rev-a-x") {
                    let mut moved = (**slice).clone();
                    moved.endpoints[0].addresses = vec!["10.0.0.2".into()];
                    *slice = Arc::new(moved);
                }
            }
            let hinted = told.derive_moved(&snap, &moved_between(&seen, &snap));
            let pure = derive_after(&previous.last_valid, &snap, &DeriveConfig::default());
            prop_assert_eq!(&hinted, &pure);
            previous = pure;
            seen = snap;
        }
    }

    #[test]
    fn an_invalid_edit_changes_nothing_that_is_served(
        objects in prop::collection::vec(prop_oneof![plain_kingress(), kingress()], 1..5),
        which in any::<prop::sample::Index>(),
    ) {
        let snap = with(objects);
        let mut deriver = Deriver::new(DeriveConfig::default());
        let before = deriver.derive(&snap);
        let valid: Vec<&String> = before
            .status
            .iter()
            .filter(|(_, s)| !matches!(s, IngressStatus::Invalid { .. }))
            .map(|(k, _)| k)
            .collect();
        if valid.is_empty() {
            return Ok(());
        }
        let key = valid[which.index(valid.len())].clone();
        let mut edited = snap.clone();
        let mut broken = (*snap.ingresses[&key]).clone();
        broken.spec.http_option = "Sometimes".into();
        broken.spec.rules.push(IngressRule::default());
        edited.ingresses.insert(key.clone(), Arc::new(broken));
        let after = deriver.derive(&edited);
        prop_assert_eq!(&after.table, &before.table);
        let was = match &before.status[&key] {
            IngressStatus::Ready { hash } => Some(hash.clone()),
            _ => None,
        };
        let IngressStatus::Invalid { errors, serving } = &after.status[&key] else {
            return Err(TestCaseError::fail(format!("{key}: {:?}", after.status[&key])));
        };
        prop_assert!(errors.iter().any(|e| e.field == "spec.httpOption"));
        prop_assert_eq!(serving, &was);
    }
}
