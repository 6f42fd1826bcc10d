use super::*;

fn mapping(name: &str, service: &str) -> DomainMapping {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ref": {"name": service, "kind": "Service", "apiVersion": "serving.knative.dev/v1"}},
    }))
    .expect("a DomainMapping")
}

fn state(c: &[Condition], kind: &str) -> (Status, String) {
    c.iter()
        .find(|c| c.kind == kind)
        .map(|c| (c.status, c.reason.clone()))
        .expect("the condition")
}

#[test]
fn the_webhook_wants_a_fqdn_outside_the_cluster_domain_and_a_same_namespace_ref() {
    assert!(mapping("app.example.org", "hello")
        .validate("cluster.local")
        .is_empty());
    let table = [
        ("app", "must be a valid fully qualified domain name"),
        (
            "App.example.org",
            "must be a valid fully qualified domain name",
        ),
        (
            "hello.default.svc.cluster.local",
            "must not be a subdomain of cluster local domain \"svc.cluster.local\"",
        ),
    ];
    for (name, want) in table {
        let errors = mapping(name, "hello").validate("cluster.local");
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{name}: {errors:?}"
        );
    }
    let mut other = mapping("app.example.org", "hello");
    other.spec.reference.namespace = "elsewhere".into();
    let errors = other.validate("cluster.local");
    assert!(errors[0].starts_with("mismatched namespaces: elsewhere: spec.ref.namespace"));
    let missing = mapping("app.example.org", "").validate("cluster.local");
    assert_eq!(missing, ["missing field(s): spec.ref.name"]);
}

/// §5 item 41: unclaimed by default; Ready with autocreate or a claim of its namespace.
#[test]
fn a_mapping_is_ready_once_its_domain_is_claimed_and_its_ref_resolves() {
    let dm = mapping("app.example.org", "hello");
    let resolved = Ok("http://hello.default.svc.cluster.local".to_owned());
    let table = [
        (
            None,
            false,
            resolved.clone(),
            Status::False,
            "DomainAlreadyClaimed",
        ),
        (None, true, resolved.clone(), Status::True, ""),
        (Some("default"), false, resolved.clone(), Status::True, ""),
        (
            Some("other"),
            true,
            resolved.clone(),
            Status::False,
            "DomainAlreadyClaimed",
        ),
        (
            None,
            true,
            Err("services.serving.knative.dev \"hello\" not found".to_owned()),
            Status::False,
            "ResolveFailed",
        ),
    ];
    for (claimed_by, autocreate, resolved, ready, reason) in table {
        let facts = Facts {
            claimed_by: claimed_by.map(str::to_owned),
            autocreate,
            resolved,
            scheme: "http".to_owned(),
        };
        let s = status(&dm, &facts);
        assert_eq!(
            state(&s.conditions, "Ready"),
            (ready, reason.to_owned()),
            "{facts:?}"
        );
        assert_eq!(s.url, "http://app.example.org");
        assert_eq!(s.address.url, "http://app.example.org");
    }
    let types: Vec<&str> = status(
        &dm,
        &Facts {
            claimed_by: None,
            autocreate: true,
            resolved: Ok(String::new()),
            scheme: "https".to_owned(),
        },
    )
    .conditions
    .iter()
    .map(|c| c.kind)
    .collect();
    assert_eq!(
        types,
        [
            "CertificateProvisioned",
            "DomainClaimed",
            "IngressReady",
            "Ready",
            "ReferenceResolved"
        ]
    );
    assert_eq!(
        unclaimed("app.example.org"),
        "no ClusterDomainClaim found for domain \"app.example.org\" (and autocreate-cluster-domain-claims property is not true)"
    );
}

/// `ingress-activator.md` §2.4's example.
#[test]
fn the_kingress_rewrites_the_host_to_the_services_address_and_keeps_the_original() {
    let dm = mapping("app.example.org", "hello");
    let k = ingress(
        &dm,
        "http://hello.default.svc.cluster.local",
        "knoxy.ingress.networking.knative.dev",
    );
    let got = serde_json::to_value(&k).expect("serializes");
    assert_eq!(got["metadata"]["name"], "app.example.org");
    assert_eq!(
        got["metadata"]["labels"]["serving.knative.dev/domainMappingNamespace"],
        "default"
    );
    assert_eq!(
        got["metadata"]["annotations"]["networking.knative.dev/ingress.class"],
        "knoxy.ingress.networking.knative.dev"
    );
    assert_eq!(
        got["spec"]["rules"],
        serde_json::json!([{
            "hosts": ["app.example.org"],
            "visibility": "ExternalIP",
            "http": {"paths": [{
                "rewriteHost": "hello.default.svc.cluster.local",
                "splits": [{
                    "serviceNamespace": "default",
                    "serviceName": "hello",
                    "servicePort": 80,
                    "percent": 100,
                    "appendHeaders": {"K-Original-Host": "app.example.org"},
                }],
            }]},
        }])
    );
}
