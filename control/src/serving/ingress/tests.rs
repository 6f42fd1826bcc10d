//! The contract's example (`ingress-activator.md` §2.3, Knative's
//! `TestMakeIngressSpecCorrectRules`) and its variants.

use super::*;

fn target(revision: &str, percent: i64, tag: Option<&str>, latest: bool) -> Target {
    Target {
        tag: tag.map(str::to_owned),
        revision: revision.to_owned(),
        percent,
        configuration: latest.then(|| "hello".to_owned()),
        h2c: false,
    }
}

/// `hello` in `default`: 90% to hello-00001, 10% (tag `candidate`) to the latest, hello-00002.
fn hello() -> Route {
    Route {
        name: "hello".into(),
        namespace: "default".into(),
        labels: BTreeMap::from([("serving.knative.dev/service".into(), "hello".into())]),
        annotations: BTreeMap::from([
            ("serving.knative.dev/creator".into(), "someone".into()),
            (LAST_APPLIED.into(), "{}".into()),
        ]),
        targets: vec![
            target("hello-00001", 90, None, false),
            target("hello-00002", 10, Some("candidate"), true),
        ],
        ..Route::default()
    }
}

fn split(revision: &str, percent: i64) -> IngressBackendSplit {
    IngressBackendSplit {
        service_namespace: "default".into(),
        service_name: revision.into(),
        service_port: IntOrString::Int(80),
        percent,
        append_headers: BTreeMap::from([
            ("Knative-Serving-Namespace".into(), "default".into()),
            ("Knative-Serving-Revision".into(), revision.into()),
        ]),
    }
}

fn rule(hosts: &[&str], visibility: &str, splits: Vec<IngressBackendSplit>) -> IngressRule {
    IngressRule {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        visibility: visibility.into(),
        http: Some(HttpIngressRuleValue {
            paths: Some(vec![HttpIngressPath {
                splits: Some(splits),
                ..HttpIngressPath::default()
            }]),
        }),
    }
}

#[test]
fn the_contracts_example_field_by_field() {
    let k = ingress(&hello(), &Network::default());
    let a = || vec![split("hello-00001", 90), split("hello-00002", 10)];
    let b = || vec![split("hello-00002", 100)];
    assert_eq!(
        k.spec.rules,
        [
            rule(
                &[
                    "hello.default",
                    "hello.default.svc",
                    "hello.default.svc.cluster.local"
                ],
                "ClusterLocal",
                a()
            ),
            rule(&["hello.default.example.com"], "ExternalIP", a()),
            rule(
                &[
                    "candidate-hello.default",
                    "candidate-hello.default.svc",
                    "candidate-hello.default.svc.cluster.local"
                ],
                "ClusterLocal",
                b()
            ),
            rule(&["candidate-hello.default.example.com"], "ExternalIP", b()),
        ]
    );
    assert_eq!(k.spec.http_option, "Enabled");
    assert!(k.spec.tls.is_empty());
    assert_eq!(
        (k.metadata.name.as_str(), k.metadata.namespace.as_str()),
        ("hello", "default")
    );
    let labels = &k.metadata.labels;
    assert_eq!(labels["serving.knative.dev/route"], "hello");
    assert_eq!(labels["serving.knative.dev/routeNamespace"], "default");
    assert_eq!(labels["serving.knative.dev/service"], "hello");
    let notes = &k.metadata.annotations;
    assert!(k.is_knoxy());
    assert_eq!(notes["serving.knative.dev/creator"], "someone");
    assert!(!notes.contains_key(LAST_APPLIED));
    assert_eq!(
        notes[TAG_TO_HOST],
        r#"{"candidate":["candidate-hello.default.svc.cluster.local","candidate-hello.default.example.com"]}"#
    );
    let rollout: serde_json::Value = serde_json::from_str(&notes[ROLLOUT]).expect("JSON");
    assert_eq!(
        rollout,
        serde_json::json!({"configurations": [
            {"configurationName": "hello", "percent": 10,
             "revisions": [{"revisionName": "hello-00002", "percent": 10}], "stepParams": {}},
            {"configurationName": "hello", "tag": "candidate", "percent": 100,
             "revisions": [{"revisionName": "hello-00002", "percent": 100}], "stepParams": {}}
        ]})
    );
    // What the gateway derives its table from parses back unchanged.
    let text = serde_json::to_string(&k).expect("JSON");
    assert_eq!(
        serde_json::from_str::<KIngress>(&text).expect("a KIngress"),
        k
    );
}

#[test]
fn a_cluster_local_route_gets_only_its_cluster_local_rules() {
    let local = Route {
        cluster_local: true,
        ..hello()
    };
    let k = ingress(&local, &Network::default());
    let visibilities: Vec<&str> = k.spec.rules.iter().map(|r| r.visibility.as_str()).collect();
    assert_eq!(visibilities, ["ClusterLocal", "ClusterLocal"]);
    // So does a tag whose placeholder Service is labelled so, and every route without a domain.
    let tag_local = Route {
        cluster_local_tags: BTreeSet::from(["candidate".to_owned()]),
        ..hello()
    };
    assert_eq!(ingress(&tag_local, &Network::default()).spec.rules.len(), 3);
    let no_domain = Network {
        domain: None,
        ..Network::default()
    };
    assert_eq!(ingress(&hello(), &no_domain).spec.rules.len(), 2);
}

#[test]
fn duplicates_merge_zero_percent_targets_are_left_out_and_h2c_uses_port_81() {
    let route = Route {
        targets: vec![
            Target {
                h2c: true,
                ..target("hello-00003", 42, None, true)
            },
            Target {
                h2c: true,
                ..target("hello-00003", 16, None, true)
            },
            target("hello-00001", 42, None, false),
            target("hello-00002", 0, Some("next"), false),
        ],
        ..hello()
    };
    let k = ingress(&route, &Network::default());
    let default = k.spec.rules[0]
        .http
        .as_ref()
        .and_then(|h| h.paths.as_ref())
        .and_then(|p| p[0].splits.clone())
        .expect("splits");
    let ports: Vec<(String, i64, IntOrString)> = default
        .into_iter()
        .map(|s| (s.service_name, s.percent, s.service_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("hello-00003".to_owned(), 58, IntOrString::Int(81)),
            ("hello-00001".to_owned(), 42, IntOrString::Int(80))
        ]
    );
    // The tag of a 0% target still gets its host, at 100%.
    assert_eq!(k.spec.rules[2].hosts[0], "next-hello.default");
}

#[test]
fn the_http_option_comes_from_the_annotation_else_the_config() {
    let mut route = hello();
    route.annotations.insert(
        "networking.knative.dev/http-protocol".into(),
        "Redirected".into(),
    );
    assert_eq!(
        ingress(&route, &Network::default()).spec.http_option,
        "Redirected"
    );
    let disabled = Network {
        http_protocol: "disabled".into(),
        ..Network::default()
    };
    assert_eq!(ingress(&hello(), &disabled).spec.http_option, "");
    let custom = Network {
        domain_template: "{{.Name}}-{{.Namespace}}.{{.Domain}}".into(),
        ..Network::default()
    };
    assert_eq!(
        ingress(&hello(), &custom).spec.rules[1].hosts,
        ["hello-default.example.com"]
    );
}

/// §5 items 10, 11, 13, 14: the URLs a Route's status names.
#[test]
fn urls_follow_the_domain_and_tag_templates_and_the_external_scheme() {
    let net = Network::default();
    assert_eq!(
        url("hello", "default", "", &net),
        "http://hello.default.example.com"
    );
    assert_eq!(
        url("hello", "default", "candidate", &net),
        "http://candidate-hello.default.example.com"
    );
    let local = Network {
        domain: None,
        ..Network::default()
    };
    assert_eq!(
        url("hello", "default", "", &local),
        "http://hello.default.svc.cluster.local"
    );
    let custom = Network {
        domain_template: "{{.Name}}-{{.Namespace}}.{{.Domain}}".into(),
        tag_template: "{{.Name}}-{{.Tag}}".into(),
        external_scheme: "https".into(),
        ..Network::default()
    };
    assert_eq!(
        url("hello", "default", "", &custom),
        "https://hello-default.example.com"
    );
    assert_eq!(
        url("hello", "default", "candidate", &custom),
        "https://hello-candidate-default.example.com"
    );
}

/// §1.8: a rendered host Kubernetes would refuse is the Route's `ErrorConfig`.
#[test]
fn a_host_over_63_characters_a_label_is_named() {
    let net = Network::default();
    assert_eq!(invalid_host("hello", "default", ["candidate"], &net), None);
    let long = "a".repeat(60);
    assert_eq!(invalid_host(&long, "default", [], &net), None);
    let got = invalid_host(&long, "default", ["candidate"], &net).expect("too long");
    assert_eq!(
        got,
        format!(
            "domain name error: invalid domain name \"candidate-{long}.default.example.com\": must be no more than 63 characters"
        )
    );
}
