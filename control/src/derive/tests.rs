//! Table tests of `derive`: objects in, routes out; each case changes one thing.

use serde_json::json;

use super::*;
use crate::route::HostTable;

// === Builders (they speak KIngress) ===

fn ingress(ns: &str, name: &str, spec: serde_json::Value) -> KIngress {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"networking.knative.dev/ingress.class": KNOXY_INGRESS_CLASS}},
        "spec": spec,
    }))
    .expect("a KIngress")
}

fn rule(hosts: &[&str], visibility: &str, paths: serde_json::Value) -> serde_json::Value {
    json!({"hosts": hosts, "visibility": visibility, "http": {"paths": paths}})
}

fn split(service: &str, port: serde_json::Value, percent: i64) -> serde_json::Value {
    json!({"serviceNamespace": "default", "serviceName": service, "servicePort": port, "percent": percent,
           "appendHeaders": {"Knative-Serving-Revision": service, "Knative-Serving-Namespace": "default"}})
}

/// A revision's public Service (`http` 80 → 8012, or `http2` 81 → 8013) with ready pods.
fn revision(name: &str, h2c: bool, ips: &[&str]) -> (Service, EndpointSlice) {
    let (port_name, port, target) = if h2c {
        ("http2", 81, 8013)
    } else {
        ("http", 80, 8012)
    };
    let service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": port_name, "port": port, "targetPort": target}]},
    }))
    .expect("a Service");
    let slice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-abcde"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": port_name, "port": target}],
    }))
    .expect("an EndpointSlice");
    (service, slice)
}

fn snapshot(ingresses: Vec<KIngress>, revisions: Vec<(Service, EndpointSlice)>) -> Snapshot {
    let mut snap = Snapshot::default();
    for i in ingresses {
        snap.ingresses.insert(i.metadata.key(), Arc::new(i));
    }
    for (svc, slice) in revisions {
        snap.services.insert(svc.metadata.key(), Arc::new(svc));
        snap.endpoint_slices
            .insert(slice.metadata.key(), Arc::new(slice));
    }
    snap
}

fn only_route<'t>(table: &'t HostTable, host: &str) -> &'t Route {
    let vhost = table
        .find(host)
        .unwrap_or_else(|| panic!("{host} is served"));
    assert_eq!(vhost.routes.len(), 1, "{host}: {vhost:?}");
    &vhost.routes[0]
}

fn addrs(split: &Split) -> Vec<String> {
    match &split.backend.target {
        Target::Endpoints(a) => a.iter().map(ToString::to_string).collect(),
        Target::Dns { host, port } => vec![format!("dns:{host}:{port}")],
        Target::Revision(r) => r.ready.iter().map(|a| format!("pod:{a}")).collect(),
    }
}

fn texts(headers: &[(HeaderName, HeaderValue)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().expect("text")))
        .collect()
}

fn hello(spec_rules: serde_json::Value) -> KIngress {
    ingress(
        "default",
        "hello",
        json!({"rules": spec_rules, "httpOption": "Enabled"}),
    )
}

// === Cases ===

#[test]
fn the_worked_example_of_section_2_3() {
    let splits_a = json!([
        split("hello-00001", json!(80), 90),
        split("hello-00002", json!(80), 10)
    ]);
    let splits_b = json!([split("hello-00002", json!(80), 100)]);
    let ing = hello(json!([
        rule(
            &[
                "hello.default",
                "hello.default.svc",
                "hello.default.svc.cluster.local"
            ],
            "ClusterLocal",
            json!([{"splits": splits_a}])
        ),
        rule(
            &["hello.default.example.com"],
            "ExternalIP",
            json!([{"splits": splits_a}])
        ),
        rule(
            &[
                "candidate-hello.default",
                "candidate-hello.default.svc",
                "candidate-hello.default.svc.cluster.local"
            ],
            "ClusterLocal",
            json!([{"splits": splits_b}])
        ),
        rule(
            &["candidate-hello.default.example.com"],
            "ExternalIP",
            json!([{"splits": splits_b}])
        ),
    ]));
    let snap = snapshot(
        vec![ing.clone()],
        vec![
            revision("hello-00001", false, &["10.0.0.1"]),
            revision("hello-00002", false, &["10.0.0.2", "10.0.0.3"]),
        ],
    );
    let out = derive(&snap, &DeriveConfig::default());
    assert_eq!(
        out.status["default/hello"],
        IngressStatus::Ready {
            hash: probe_hash(&ing).into()
        }
    );

    let public = only_route(&out.table.public, "hello.default.example.com");
    assert_eq!(public.prefix, "/");
    assert_eq!(
        public.splits.iter().map(|s| s.percent).collect::<Vec<_>>(),
        [90, 10]
    );
    assert_eq!(addrs(&public.splits[0]), ["10.0.0.1:8012"]);
    assert_eq!(addrs(&public.splits[1]), ["10.0.0.2:8012", "10.0.0.3:8012"]);
    assert_eq!(
        texts(&public.splits[0].append_headers),
        [
            ("knative-serving-namespace", "default"),
            ("knative-serving-revision", "hello-00001")
        ]
    );
    assert!(
        out.table
            .public
            .find("hello.default.svc.cluster.local")
            .is_none(),
        "cluster-local hosts stay private"
    );
    assert!(out.table.public.find("candidate-hello.default").is_none());
    assert_eq!(
        only_route(&out.table.private, "hello.default.svc")
            .splits
            .len(),
        2
    );
    assert_eq!(
        only_route(&out.table.private, "hello.default.example.com")
            .splits
            .len(),
        2,
        "ExternalIP is private too"
    );
    assert_eq!(
        addrs(&only_route(&out.table.public, "candidate-hello.default.example.com").splits[0]),
        ["10.0.0.2:8012", "10.0.0.3:8012"]
    );
}

#[test]
fn ingresses_of_other_classes_get_no_routes_and_no_status() {
    let mut other = hello(json!([rule(
        &["a.example.com"],
        "ExternalIP",
        json!([{"splits": [split("hello-00001", json!(80), 100)]}])
    )]));
    other.metadata.annotations.insert(
        crate::kingress::INGRESS_CLASS_ANNOTATION.into(),
        "kourier.ingress.networking.knative.dev".into(),
    );
    let mut unclassed = other.clone();
    unclassed.metadata.name = "unclassed".into();
    unclassed.metadata.annotations.clear();
    let out = derive(
        &snapshot(
            vec![other, unclassed],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    assert!(out.status.is_empty());
    assert!(out.table.public.is_empty() && out.table.private.is_empty());
}

#[test]
fn named_ports_h2c_and_external_name_services_resolve() {
    let ing = hello(json!([
        rule(
            &["named.example.com"],
            "ExternalIP",
            json!([{"splits": [split("hello-00001", json!("http"), 100)]}])
        ),
        rule(
            &["h2c.example.com"],
            "ExternalIP",
            json!([{"splits": [split("grpc-00001", json!(81), 100)]}])
        ),
        rule(
            &["ext.example.com"],
            "ExternalIP",
            json!([{"splits": [split("ext", json!(80), 100)]}])
        ),
    ]));
    let mut snap = snapshot(
        vec![ing],
        vec![
            revision("hello-00001", false, &["10.0.0.1"]),
            revision("grpc-00001", true, &["10.0.0.9"]),
        ],
    );
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "knoxy-local.knoxy-system.svc.cluster.local.",
                 "ports": [{"name": "http", "port": 80, "appProtocol": "kubernetes.io/h2c"}]},
    }))
    .expect("a Service");
    snap.services.insert(ext.metadata.key(), Arc::new(ext));
    let out = derive(&snap, &DeriveConfig::default());
    let t = &out.table.public;
    assert_eq!(
        addrs(&only_route(t, "named.example.com").splits[0]),
        ["10.0.0.1:8012"]
    );
    let h2c = &only_route(t, "h2c.example.com").splits[0];
    assert!(h2c.backend.h2c);
    assert_eq!(addrs(h2c), ["10.0.0.9:8013"]);
    let ext = &only_route(t, "ext.example.com").splits[0];
    assert_eq!(
        addrs(ext),
        ["dns:knoxy-local.knoxy-system.svc.cluster.local:80"]
    );
    assert!(ext.backend.h2c, "appProtocol kubernetes.io/h2c");
    assert!(!only_route(t, "named.example.com").splits[0].backend.h2c);
}

#[test]
fn missing_backends_keep_the_whole_ingress_not_ready() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 50), split("hello-00009", json!(80), 50)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    let out = derive(
        &snapshot(
            vec![ing.clone()],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    assert!(matches!(
        &out.status["default/hello"],
        IngressStatus::NotReady {
            reason: "ServiceNotFound",
            ..
        }
    ));
    assert!(out.table.public.find("a.example.com").is_none());

    let out = derive(
        &snapshot(
            vec![ing.clone()],
            vec![
                revision("hello-00001", false, &["10.0.0.1"]),
                revision("hello-00009", false, &[]),
            ],
        ),
        &DeriveConfig::default(),
    );
    assert!(matches!(
        &out.status["default/hello"],
        IngressStatus::NotReady {
            reason: "NoReadyEndpoints",
            ..
        }
    ));

    let wrong_port = hello(json!([rule(
        &["a.example.com"],
        "ExternalIP",
        json!([{"splits": [split("hello-00001", json!(8080), 100)]}])
    )]));
    let out = derive(
        &snapshot(
            vec![wrong_port],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    assert!(matches!(
        &out.status["default/hello"],
        IngressStatus::NotReady {
            reason: "PortNotFound",
            ..
        }
    ));
}

#[test]
fn paths_keep_their_order_headers_and_rewrite_host() {
    let paths = json!([
        {"path": "/api", "headers": {"Knative-Serving-Tag": {"exact": "candidate"}}, "rewriteHost": "internal.example",
         "appendHeaders": {"X-Path": "api"}, "splits": [split("hello-00001", json!(80), 100)]},
        {"splits": [split("hello-00001", json!(80), 100)]},
    ]);
    let out = derive(
        &snapshot(
            vec![hello(json!([rule(
                &["a.example.com"],
                "ExternalIP",
                paths
            )]))],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    let vhost = out.table.public.find("a.example.com").expect("served");
    let mut tagged = http::HeaderMap::new();
    tagged.insert("knative-serving-tag", HeaderValue::from_static("candidate"));
    let mut other = http::HeaderMap::new();
    other.insert("knative-serving-tag", HeaderValue::from_static("Candidate"));
    let prefix =
        |path, headers: &http::HeaderMap| vhost.route(path, headers).map(|r| r.prefix.clone());
    assert_eq!(prefix("/api/x", &tagged).as_deref(), Some("/api"));
    assert_eq!(
        prefix("/apix", &tagged).as_deref(),
        Some("/api"),
        "a literal prefix, not a segment"
    );
    for headers in [http::HeaderMap::new(), other] {
        assert_eq!(
            prefix("/api/x", &headers).as_deref(),
            Some("/"),
            "the header must match exactly"
        );
    }
    let first = &vhost.routes[0];
    assert_eq!(
        texts(&first.headers),
        [("knative-serving-tag", "candidate")]
    );
    assert_eq!(
        first.rewrite_host,
        Some(HeaderValue::from_static("internal.example"))
    );
    assert_eq!(texts(&first.append_headers), [("x-path", "api")]);
}

#[test]
fn the_first_ingress_keeps_a_host_and_the_next_one_conflicts() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let a = ingress(
        "default",
        "a",
        json!({"rules": [rule(&["same.example.com"], "ExternalIP", paths.clone())]}),
    );
    let b = ingress(
        "default",
        "b",
        json!({"rules": [rule(&["same.example.com", "b.example.com"], "ExternalIP", paths)]}),
    );
    let out = derive(
        &snapshot(
            vec![b, a],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    assert!(matches!(
        out.status["default/a"],
        IngressStatus::Ready { .. }
    ));
    assert_eq!(
        out.status["default/b"],
        IngressStatus::Conflict {
            host: "same.example.com".into()
        }
    );
    assert_eq!(
        &*only_route(&out.table.public, "same.example.com").ingress,
        "default/a"
    );
    assert!(
        out.table.public.find("b.example.com").is_none(),
        "a conflicting ingress is not served at all"
    );
}

#[test]
fn a_trailing_dot_names_the_same_host_and_a_second_catch_all_conflicts() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let one = |name: &str, hosts: &[&str]| {
        ingress(
            "default",
            name,
            json!({"rules": [rule(hosts, "ExternalIP", paths.clone())]}),
        )
    };
    let out = derive(
        &snapshot(
            vec![
                one("a", &["dot.example.com."]),
                one("b", &["dot.example.com"]),
                one("c", &[]),
                one("d", &[]),
            ],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    assert!(out.table.public.find("dot.example.com").is_some());
    assert_eq!(
        out.status["default/b"],
        IngressStatus::Conflict {
            host: "dot.example.com".into()
        }
    );
    assert!(matches!(
        out.status["default/c"],
        IngressStatus::Ready { .. }
    ));
    assert_eq!(
        out.status["default/d"],
        IngressStatus::Conflict { host: "*".into() }
    );
}

#[test]
fn redirected_applies_to_external_rules_only() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ing = ingress(
        "default",
        "hello",
        json!({"httpOption": "Redirected", "rules": [
        rule(&["a.example.com"], "ExternalIP", paths.clone()), rule(&["a.default.svc"], "ClusterLocal", paths)]}),
    );
    let out = derive(
        &snapshot(
            vec![ing],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    assert!(only_route(&out.table.public, "a.example.com").redirect_https);
    assert!(!only_route(&out.table.private, "a.default.svc").redirect_https);
}

#[test]
fn invalid_ingresses_report_their_fields_and_are_not_served() {
    let ing = hello(json!([rule(
        &["a.example.com"],
        "ExternalIP",
        json!([{"splits": [split("hello-00001", json!(80), 60)]}, {"splits": []}])
    )]));
    let out = derive(
        &snapshot(
            vec![ing],
            vec![revision("hello-00001", false, &["10.0.0.1"])],
        ),
        &DeriveConfig::default(),
    );
    let IngressStatus::Invalid {
        errors,
        serving: None,
    } = &out.status["default/hello"]
    else {
        panic!("{:?}", out.status)
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].http.paths[0].splits",
            "spec.rules[0].http.paths[1].splits"
        ]
    );
    assert!(out.table.public.is_empty());
}

#[test]
fn tls_entries_carry_the_decoded_secret() {
    let ing = ingress(
        "default",
        "hello",
        json!({
        "tls": [{"hosts": ["a.example.com"], "secretName": "cert", "secretNamespace": "default"}],
        "rules": [rule(&["a.example.com"], "ExternalIP", json!([{"splits": [split("hello-00001", json!(80), 100)]}]))]}),
    );
    let mut snap = snapshot(
        vec![ing],
        vec![revision("hello-00001", false, &["10.0.0.1"])],
    );
    let out = derive(&snap, &DeriveConfig::default());
    assert!(matches!(
        &out.status["default/hello"],
        IngressStatus::NotReady {
            reason: "SecretNotReady",
            ..
        }
    ));
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "cert", "namespace": "default"},
        "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}}))
        .expect("a Secret");
    snap.secrets.insert(secret.metadata.key(), Arc::new(secret));
    let out = derive(&snap, &DeriveConfig::default());
    assert_eq!(
        out.table.certs,
        [Arc::new(Cert {
            hosts: vec!["a.example.com".into()],
            cert_pem: b"CERT".to_vec(),
            key_pem: b"KEY".to_vec()
        })]
    );
}

#[test]
fn the_output_does_not_depend_on_insertion_order() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ings: Vec<KIngress> = (0..20)
        .map(|i| ingress("default", &format!("i{i:02}"), json!({"rules": [rule(&[&format!("h{}.example.com", i % 7)], "ExternalIP", paths.clone())]})))
        .collect();
    let forward = snapshot(
        ings.clone(),
        vec![revision("hello-00001", false, &["10.0.0.1", "10.0.0.2"])],
    );
    let backward = snapshot(
        ings.into_iter().rev().collect(),
        vec![revision("hello-00001", false, &["10.0.0.2", "10.0.0.1"])],
    );
    assert_eq!(
        derive(&forward, &DeriveConfig::default()),
        derive(&backward, &DeriveConfig::default())
    );
}

#[test]
fn a_remembering_deriver_gives_what_derive_gives_after_every_change() {
    let paths = |rev: &str| json!([{"splits": [split(rev, json!(80), 100)]}]);
    let on = |name: &str, host: &str, rev: &str| {
        ingress(
            "default",
            name,
            json!({"rules": [rule(&[host], "ExternalIP", paths(rev))]}),
        )
    };
    let mut snap = snapshot(
        vec![
            on("a", "a.example.com", "rev-a"),
            on("b", "b.example.com", "rev-b"),
            on("c", "b.example.com", "rev-a"), // conflicts with b while b exists
        ],
        vec![
            revision("rev-a", false, &["10.0.0.1"]),
            revision("rev-b", false, &["10.0.0.2"]),
        ],
    );
    let mut deriver = Deriver::new(DeriveConfig::default());
    // Told only what moved since the previous snapshot, as the Kubernetes source tells it.
    let mut told = Deriver::new(DeriveConfig::default());
    let mut previous = Derived::default();
    let mut seen = Snapshot::default();
    let mut check = |snap: &Snapshot, step: &str| {
        let remembered = deriver.derive(snap);
        let pure = derive_after(&previous.last_valid, snap, &DeriveConfig::default());
        assert_eq!(remembered, pure, "{step}");
        let hinted = told.derive_moved(snap, &super::props::moved_between(&seen, snap));
        assert_eq!(hinted, pure, "{step}, told what moved");
        previous = pure;
        seen = snap.clone();
        remembered
    };
    let first = check(&snap, "first");

    // Equal objects re-created (as a relisting watch does) keep their translations.
    let a = Arc::new((*snap.ingresses["default/a"]).clone());
    snap.ingresses.insert("default/a".into(), a);
    let again = check(&snap, "re-created");
    let vhost = |d: &Derived, host: &str| d.table.public.find(host).map(|v| v as *const _);
    assert_eq!(
        vhost(&first, "a.example.com"),
        vhost(&again, "a.example.com")
    );

    let (_, moved) = revision("rev-a", false, &["10.0.0.9", "10.0.0.1"]);
    snap.endpoint_slices
        .insert(moved.metadata.key(), Arc::new(moved));
    let moved = check(&snap, "rev-a's endpoints change");
    assert_ne!(
        vhost(&again, "a.example.com"),
        vhost(&moved, "a.example.com")
    );
    assert_eq!(
        vhost(&again, "b.example.com"),
        vhost(&moved, "b.example.com")
    );

    let (_, extra) = revision("rev-b", false, &["10.0.0.3"]);
    let mut extra = extra;
    extra.metadata.name = "rev-b-fghij".into();
    snap.endpoint_slices
        .insert(extra.metadata.key(), Arc::new(extra));
    check(&snap, "a second slice for rev-b");

    let service = snap.services.remove("default/rev-b").expect("rev-b");
    check(&snap, "rev-b's Service is gone");
    snap.services.insert("default/rev-b".into(), service);
    check(&snap, "rev-b's Service is back");

    snap.ingresses.remove("default/b");
    let out = check(&snap, "b is deleted, c gets its host");
    assert!(matches!(
        out.status["default/c"],
        IngressStatus::Ready { .. }
    ));

    snap.ingresses.insert(
        "default/a".into(),
        Arc::new(on("a", "a2.example.com", "rev-b")),
    );
    check(&snap, "a's spec changes");

    let mut other = on("c", "b.example.com", "rev-a");
    other.metadata.annotations.insert(
        crate::kingress::INGRESS_CLASS_ANNOTATION.into(),
        "istio".into(),
    );
    snap.ingresses.insert("default/c".into(), Arc::new(other));
    check(&snap, "c changes class");

    let mut tls = on("t", "t.example.com", "rev-a");
    tls.spec.tls = serde_json::from_value(json!([{"hosts": ["t.example.com"],
        "secretName": "cert", "secretNamespace": "default"}]))
    .expect("tls");
    snap.ingresses.insert("default/t".into(), Arc::new(tls));
    check(&snap, "t waits for its secret");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "cert", "namespace": "default"},
        "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"}}))
        .expect("a Secret");
    snap.secrets.insert(secret.metadata.key(), Arc::new(secret));
    check(&snap, "t's secret arrives");

    let mut broken = on("a", "a3.example.com", "rev-a");
    broken.spec.http_option = "Sometimes".into();
    snap.ingresses
        .insert("default/a".into(), Arc::new(broken.clone()));
    let out = check(&snap, "a turns invalid");
    assert!(
        out.table.public.find("a2.example.com").is_some(),
        "the last valid a is served"
    );
    let (_, moved) = revision("rev-b", false, &["10.0.0.7"]);
    snap.endpoint_slices
        .insert(moved.metadata.key(), Arc::new(moved));
    let out = check(&snap, "the last valid a's backend moves");
    assert!(
        addrs(&only_route(&out.table.public, "a2.example.com").splits[0])
            .contains(&"10.0.0.7:8012".to_owned())
    );
    broken.spec.rules.clear();
    snap.ingresses
        .insert("default/a".into(), Arc::new(broken.clone()));
    check(&snap, "a is invalid in another way");
    snap.ingresses.remove("default/a");
    check(&snap, "a is deleted");
    snap.ingresses.insert("default/a".into(), Arc::new(broken));
    let out = check(&snap, "a comes back invalid");
    assert!(out.table.public.find("a2.example.com").is_none());
    snap.ingresses.insert(
        "default/a".into(),
        Arc::new(on("a", "a4.example.com", "rev-a")),
    );
    check(&snap, "a is valid again");
}

/// A KIngress on `host`, created at `created` (None: no timestamp, as in most files).
fn claiming(name: &str, host: &str, created: Option<&str>) -> KIngress {
    let mut ing = ingress(
        "default",
        name,
        json!({"rules": [rule(&[host], "ExternalIP", json!([{"splits": [split("hello-00001", json!(80), 100)]}]))]}),
    );
    ing.metadata.creation_timestamp = created.map(str::to_owned);
    ing
}

#[test]
fn the_oldest_ingress_keeps_a_contested_host() {
    struct Case {
        name: &'static str,
        objects: Vec<(&'static str, Option<&'static str>)>,
        winner: &'static str,
    }
    let cases = [
        Case {
            name: "older by timestamp wins over an earlier name",
            objects: vec![
                ("a", Some("2024-05-02T00:00:00Z")),
                ("b", Some("2024-05-01T00:00:00Z")),
            ],
            winner: "b",
        },
        Case {
            name: "the same timestamp falls back to namespace/name",
            objects: vec![
                ("b", Some("2024-05-01T00:00:00Z")),
                ("a", Some("2024-05-01T00:00:00Z")),
            ],
            winner: "a",
        },
        Case {
            name: "no timestamp sorts after any timestamp",
            objects: vec![("a", None), ("z", Some("2030-01-01T00:00:00Z"))],
            winner: "z",
        },
        Case {
            name: "an unreadable timestamp counts as none",
            objects: vec![
                ("a", Some("yesterday")),
                ("z", Some("2030-01-01T00:00:00Z")),
            ],
            winner: "z",
        },
        Case {
            name: "offsets compare as instants, not as text",
            objects: vec![
                ("a", Some("2024-05-01T10:00:00Z")),
                ("b", Some("2024-05-01T11:00:00+02:00")),
            ],
            winner: "b",
        },
        Case {
            name: "fractions of a second count",
            objects: vec![
                ("a", Some("2024-05-01T10:00:00.5Z")),
                ("b", Some("2024-05-01T10:00:00.25Z")),
            ],
            winner: "b",
        },
        Case {
            name: "without timestamps, namespace/name decides",
            objects: vec![("b", None), ("a", None), ("c", None)],
            winner: "a",
        },
    ];
    for c in cases {
        let objects = c
            .objects
            .iter()
            .map(|(name, ts)| claiming(name, "same.example.com", *ts))
            .collect();
        let out = derive(
            &snapshot(objects, vec![revision("hello-00001", false, &["10.0.0.1"])]),
            &DeriveConfig::default(),
        );
        assert_eq!(
            &*only_route(&out.table.public, "same.example.com").ingress,
            format!("default/{}", c.winner),
            "case: {}",
            c.name
        );
        for (name, _) in &c.objects {
            let want_ready = *name == c.winner;
            let status = &out.status[&format!("default/{name}")];
            assert_eq!(
                matches!(status, IngressStatus::Ready { .. }),
                want_ready,
                "case: {}: {name} is {status:?}",
                c.name
            );
            if !want_ready {
                assert_eq!(
                    status,
                    &IngressStatus::Conflict {
                        host: "same.example.com".into()
                    },
                    "case: {}",
                    c.name
                );
            }
        }
    }
}

#[test]
fn a_newly_created_ingress_never_takes_a_live_host() {
    let revisions = || vec![revision("hello-00001", false, &["10.0.0.1"])];
    let live = claiming("z-live", "same.example.com", Some("2024-05-01T00:00:00Z"));
    let mut deriver = Deriver::new(DeriveConfig::default());
    let before = deriver.derive(&snapshot(vec![live.clone()], revisions()));
    assert!(matches!(
        before.status["default/z-live"],
        IngressStatus::Ready { .. }
    ));
    // The newcomer's name sorts first, and it arrives first: only its age counts.
    let newcomer = claiming("a-new", "same.example.com", Some("2024-05-01T00:00:01Z"));
    let after = deriver.derive(&snapshot(vec![newcomer, live], revisions()));
    assert_eq!(
        &*only_route(&after.table.public, "same.example.com").ingress,
        "default/z-live"
    );
    assert_eq!(
        after.status["default/a-new"],
        IngressStatus::Conflict {
            host: "same.example.com".into()
        }
    );
}

/// `host` served by revision `rev` (at 100%).
fn on_host(name: &str, host: &str, rev: &str) -> KIngress {
    ingress(
        "default",
        name,
        json!({"rules": [rule(&[host], "ExternalIP", json!([{"splits": [split(rev, json!(80), 100)]}]))]}),
    )
}

/// Splits of `percent` and `100 - percent`: invalid when `percent` is out of 0..=100.
fn split_at(name: &str, host: &str, percent: i64) -> KIngress {
    ingress(
        "default",
        name,
        json!({"rules": [rule(&[host], "ExternalIP", json!([{"splits": [
            split("rev-a", json!(80), percent), split("rev-b", json!(80), 100 - percent)]}]))]}),
    )
}

fn two_revisions() -> Vec<(Service, EndpointSlice)> {
    vec![
        revision("rev-a", false, &["10.0.0.1"]),
        revision("rev-b", false, &["10.0.0.2"]),
    ]
}

#[test]
fn an_invalid_edit_keeps_serving_the_last_valid_version_and_says_why() {
    struct Case {
        name: &'static str,
        /// The versions of `default/x`, applied one after the other.
        versions: Vec<KIngress>,
        /// The splits' percents served on the host of the last valid version, if any.
        served: Option<(&'static str, Vec<u32>)>,
        /// The field named by the last version's error.
        field: &'static str,
    }
    let cases = [
        Case {
            name: "a percent out of range",
            versions: vec![
                split_at("x", "x.example.com", 30),
                split_at("x", "x.example.com", 130),
            ],
            served: Some(("x.example.com", vec![30, 70])),
            field: "spec.rules[0].http.paths[0].splits[0].percent",
        },
        Case {
            name: "the invalid edit also moves the host: the old host stays",
            versions: vec![
                split_at("x", "x.example.com", 30),
                split_at("x", "y.example.com", -5),
            ],
            served: Some(("x.example.com", vec![30, 70])),
            field: "spec.rules[0].http.paths[0].splits[0].percent",
        },
        Case {
            name: "two invalid edits in a row fall back to the same version",
            versions: vec![
                split_at("x", "x.example.com", 40),
                split_at("x", "x.example.com", 140),
                split_at("x", "x.example.com", 150),
            ],
            served: Some(("x.example.com", vec![40, 60])),
            field: "spec.rules[0].http.paths[0].splits[0].percent",
        },
        Case {
            name: "the last valid version, not the first",
            versions: vec![
                split_at("x", "x.example.com", 10),
                split_at("x", "x.example.com", 20),
                split_at("x", "x.example.com", 120),
            ],
            served: Some(("x.example.com", vec![20, 80])),
            field: "spec.rules[0].http.paths[0].splits[0].percent",
        },
        Case {
            name: "a KIngress that was never valid is not served",
            versions: vec![
                split_at("x", "x.example.com", 120),
                split_at("x", "x.example.com", 130),
            ],
            served: None,
            field: "spec.rules[0].http.paths[0].splits[0].percent",
        },
        Case {
            name: "a last valid version that was never ready serves nothing",
            versions: vec![
                on_host("x", "x.example.com", "rev-missing"),
                split_at("x", "x.example.com", 120),
            ],
            served: None,
            field: "spec.rules[0].http.paths[0].splits[0].percent",
        },
    ];
    for c in cases {
        let mut deriver = Deriver::new(DeriveConfig::default());
        let mut out = Derived::default();
        for version in &c.versions {
            out = deriver.derive(&snapshot(vec![version.clone()], two_revisions()));
        }
        let IngressStatus::Invalid { errors, serving } = &out.status["default/x"] else {
            panic!("case: {}: {:?}", c.name, out.status)
        };
        assert!(
            errors.iter().any(|e| e.field == c.field),
            "case: {}: {errors:?}",
            c.name
        );
        match &c.served {
            Some((host, percents)) => {
                let route = only_route(&out.table.public, host);
                assert_eq!(
                    route.splits.iter().map(|s| s.percent).collect::<Vec<_>>(),
                    *percents,
                    "case: {}",
                    c.name
                );
                assert_eq!(
                    serving.as_ref(),
                    Some(&route.probe_hash),
                    "case: {}",
                    c.name
                );
            }
            None => {
                assert_eq!(serving, &None, "case: {}", c.name);
                assert!(out.table.public.is_empty(), "case: {}", c.name);
            }
        }
        assert_eq!(
            out.table.public.len(),
            usize::from(c.served.is_some()),
            "case: {}: only the last valid host is served",
            c.name
        );
    }
}

#[test]
fn an_invalid_ingress_does_not_hold_back_the_others() {
    let mut deriver = Deriver::new(DeriveConfig::default());
    deriver.derive(&snapshot(
        vec![
            split_at("x", "x.example.com", 30),
            on_host("y", "y.example.com", "rev-a"),
        ],
        two_revisions(),
    ));
    let out = deriver.derive(&snapshot(
        vec![
            split_at("x", "x.example.com", 300),
            on_host("y", "y.example.com", "rev-b"),
            on_host("z", "z.example.com", "rev-a"),
        ],
        two_revisions(),
    ));
    assert!(matches!(
        out.status["default/x"],
        IngressStatus::Invalid {
            serving: Some(_),
            ..
        }
    ));
    assert_eq!(
        addrs(&only_route(&out.table.public, "y.example.com").splits[0]),
        ["10.0.0.2:8012"],
        "y's edit is live"
    );
    assert!(matches!(
        out.status["default/z"],
        IngressStatus::Ready { .. }
    ));
}

#[test]
fn the_pure_derive_remembers_nothing_and_derive_after_remembers_what_it_is_given() {
    let valid = split_at("x", "x.example.com", 30);
    let first = derive(
        &snapshot(vec![valid.clone()], two_revisions()),
        &DeriveConfig::default(),
    );
    assert_eq!(
        first.last_valid.get("default/x"),
        Some(&Arc::new(valid)),
        "the output names what an invalid edit falls back to"
    );
    let invalid = snapshot(vec![split_at("x", "x.example.com", 130)], two_revisions());
    let alone = derive(&invalid, &DeriveConfig::default());
    assert!(alone.table.public.is_empty());
    assert!(alone.last_valid.is_empty());
    let after = derive_after(&first.last_valid, &invalid, &DeriveConfig::default());
    assert!(after.table.public.find("x.example.com").is_some());
    assert_eq!(after.last_valid, first.last_valid);
}

#[test]
fn a_last_valid_version_keeps_its_host_only_while_it_is_the_oldest() {
    let mut old = split_at("old", "x.example.com", 30);
    old.metadata.creation_timestamp = Some("2024-01-01T00:00:00Z".into());
    let mut deriver = Deriver::new(DeriveConfig::default());
    deriver.derive(&snapshot(vec![old.clone()], two_revisions()));
    let mut broken = split_at("old", "x.example.com", 130);
    broken.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
    let mut newer = on_host("new", "x.example.com", "rev-b");
    newer.metadata.creation_timestamp = Some("2024-06-01T00:00:00Z".into());
    let out = deriver.derive(&snapshot(vec![broken, newer], two_revisions()));
    assert_eq!(
        &*only_route(&out.table.public, "x.example.com").ingress,
        "default/old",
        "an invalid edit does not hand the host to a newer KIngress"
    );
    assert_eq!(
        out.status["default/new"],
        IngressStatus::Conflict {
            host: "x.example.com".into()
        }
    );
}

// === Revisions: the activator role ===

/// A `serving.knative.dev/v1` Revision and its private Service's EndpointSlice, as the
/// revision controller and Kubernetes write them: queue ports 8012 (`http`) or 8013
/// (`http2`) beside the queue's admin port, pods ready or not.
fn knative_revision(
    name: &str,
    spec: serde_json::Value,
    pods: &[(&str, bool)],
) -> (Revision, EndpointSlice) {
    let revision = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("a Revision");
    let slice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-private-xyz"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("{name}-private")}},
        "addressType": "IPv4",
        "endpoints": pods.iter().map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}})).collect::<Vec<_>>(),
        "ports": [{"name": "http-queueadm", "port": 8022}, {"name": "http", "port": 8012}, {"name": "http2", "port": 8013}],
    }))
    .expect("an EndpointSlice");
    (revision, slice)
}

fn with_revisions(mut snap: Snapshot, revisions: Vec<(Revision, EndpointSlice)>) -> Snapshot {
    for (rev, slice) in revisions {
        snap.revisions.insert(rev.metadata.key(), Arc::new(rev));
        snap.endpoint_slices
            .insert(slice.metadata.key(), Arc::new(slice));
    }
    snap
}

fn revision_of(split: &Split) -> &RevisionTarget {
    match &split.backend.target {
        Target::Revision(r) => r,
        other => panic!("not a revision: {other:?}"),
    }
}

#[test]
fn a_split_naming_a_revision_goes_to_its_private_pods_not_its_public_endpoints() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    // In Proxy mode the public Service's endpoints are the activators: the gateway itself.
    let snap = with_revisions(
        snapshot(
            vec![ing],
            vec![revision("hello-00001", false, &["10.9.9.9"])],
        ),
        vec![knative_revision(
            "hello-00001",
            json!({"containerConcurrency": 10, "timeoutSeconds": 60}),
            &[("10.0.0.2", true), ("10.0.0.1", true), ("10.0.0.3", false)],
        )],
    );
    let out = derive(&snap, &DeriveConfig::default());
    assert!(matches!(
        &out.status["default/hello"],
        IngressStatus::Ready { .. }
    ));
    let route = only_route(&out.table.public, "a.example.com");
    let rev = revision_of(&route.splits[0]);
    assert_eq!((rev.namespace(), rev.name()), ("default", "hello-00001"));
    assert_eq!(
        addrs(&route.splits[0]),
        ["pod:10.0.0.1:8012", "pod:10.0.0.2:8012"]
    );
    assert_eq!(rev.not_ready, ["10.0.0.3:8012".parse().expect("addr")]);
    assert_eq!(rev.settings.container_concurrency, 10);
    assert_eq!(rev.settings.timeout, std::time::Duration::from_secs(60));
    assert!(!route.splits[0].backend.h2c);
    assert_eq!(
        texts(&route.splits[0].append_headers),
        [
            ("knative-serving-namespace", "default"),
            ("knative-serving-revision", "hello-00001")
        ]
    );
}

#[test]
fn a_revision_lists_the_activators_of_its_subset_sorted_as_text() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    // Proxy mode: the public endpoints are activators, sorted by their text as Knative does
    // (10.0.0.10 before 10.0.0.9).
    let snap = with_revisions(
        snapshot(
            vec![ing],
            vec![revision(
                "hello-00001",
                false,
                &["10.0.0.9", "10.0.0.10", "10.0.0.9"],
            )],
        ),
        vec![knative_revision(
            "hello-00001",
            json!({"containerConcurrency": 1}),
            &[("10.1.0.1", true)],
        )],
    );
    let out = derive(&snap, &DeriveConfig::default());
    let rev = revision_of(&only_route(&out.table.public, "a.example.com").splits[0]);
    let ips: Vec<String> = rev.activators.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.0.0.10", "10.0.0.9"]);
}

#[test]
fn an_h2c_revision_uses_the_http2_queue_port_and_a_revision_at_zero_is_still_served() {
    let paths = json!([{"splits": [split("grpc-00001", json!(81), 50), split("zero-00001", json!(80), 50)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    let h2c = json!({"containers": [{"ports": [{"name": "h2c", "containerPort": 8080}]}]});
    let snap = with_revisions(
        snapshot(vec![ing], vec![]),
        vec![
            knative_revision("grpc-00001", h2c, &[("10.0.0.1", true)]),
            knative_revision("zero-00001", json!({}), &[]),
        ],
    );
    let out = derive(&snap, &DeriveConfig::default());
    assert!(
        matches!(&out.status["default/hello"], IngressStatus::Ready { .. }),
        "{:?}",
        out.status
    );
    let route = only_route(&out.table.public, "a.example.com");
    assert_eq!(addrs(&route.splits[0]), ["pod:10.0.0.1:8013"]);
    assert!(route.splits[0].backend.h2c);
    // No pods: routed all the same (the activator holds its requests), none to pick yet.
    assert!(revision_of(&route.splits[1]).ready.is_empty());
    assert_eq!(route.splits[1].backend.pick(), None);
}

#[test]
fn every_valid_revision_is_in_the_table_named_by_a_split_or_not() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    let snap = with_revisions(
        snapshot(vec![ing], vec![]),
        vec![
            knative_revision("hello-00001", json!({}), &[("10.0.0.1", true)]),
            knative_revision("hello-00002", json!({}), &[("10.0.0.2", false)]),
            knative_revision("broken-00001", json!({"containerConcurrency": 5000}), &[]),
        ],
    );
    let table = derive(&snap, &DeriveConfig::default()).table;
    assert_eq!(
        table.revisions.keys().collect::<Vec<_>>(),
        ["default/hello-00001", "default/hello-00002"]
    );
    let unnamed = &table.revisions["default/hello-00002"];
    assert_eq!(unnamed.not_ready, ["10.0.0.2:8012".parse().expect("addr")]);
    let named = revision_of(&only_route(&table.public, "a.example.com").splits[0]);
    assert_eq!(named, &*table.revisions["default/hello-00001"]);
}

#[test]
fn an_invalid_revision_keeps_its_ingress_not_ready_and_says_which_field() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    let snap = with_revisions(
        snapshot(vec![ing], vec![]),
        vec![knative_revision(
            "hello-00001",
            json!({"containerConcurrency": 1001}),
            &[("10.0.0.1", true)],
        )],
    );
    let out = derive(&snap, &DeriveConfig::default());
    assert_eq!(
        out.status["default/hello"],
        IngressStatus::NotReady {
            reason: "RevisionInvalid",
            message: "revision default/hello-00001: expected 0 <= 1001 <= 1000: spec.containerConcurrency".into(),
        }
    );
}

#[test]
fn a_remembering_deriver_sees_a_revisions_pods_and_settings_change() {
    let paths = json!([{"splits": [split("hello-00001", json!(80), 100)]}]);
    let ing = hello(json!([rule(&["a.example.com"], "ExternalIP", paths)]));
    let at = |cc: i64, pods: &[(&str, bool)]| {
        with_revisions(
            snapshot(vec![ing.clone()], vec![]),
            vec![knative_revision(
                "hello-00001",
                json!({"containerConcurrency": cc}),
                pods,
            )],
        )
    };
    let mut deriver = Deriver::new(DeriveConfig::default());
    for snap in [
        at(1, &[]),
        at(1, &[("10.0.0.1", false)]),
        at(1, &[("10.0.0.1", true)]),
        at(2, &[("10.0.0.1", true)]),
    ] {
        assert_eq!(
            deriver.derive(&snap),
            derive(&snap, &DeriveConfig::default())
        );
    }
    let out = deriver.derive(&at(2, &[("10.0.0.1", true)]));
    let rev = revision_of(&only_route(&out.table.public, "a.example.com").splits[0]).clone();
    assert_eq!(
        (rev.ready.len(), rev.settings.container_concurrency),
        (1, 2)
    );
}

#[test]
fn only_the_virtual_hosts_of_a_changed_kingress_are_new() {
    let mut deriver = Deriver::new(DeriveConfig::default());
    let mut snap = snapshot(
        vec![
            on_host("a", "a.example.com", "rev-a"),
            on_host("b", "b.example.com", "rev-b"),
        ],
        two_revisions(),
    );
    let first = deriver.derive(&snap).table;
    snap.ingresses.insert(
        "default/b".into(),
        Arc::new(on_host("b", "b.example.com", "rev-a")),
    );
    let second = deriver.derive(&snap).table;
    // The gateway builds upstream pools only for these (`changed_since`).
    let changed: Vec<_> = second.public.changed_since(&first.public).collect();
    assert_eq!(changed.len(), 1);
    assert!(std::ptr::eq(
        changed[0],
        second.public.find("b.example.com").expect("b")
    ));
    assert_eq!(second.public.changed_since(&second.public).count(), 0);
}
