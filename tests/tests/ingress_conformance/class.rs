//! `ingressclass` (Knative's class.go): a KIngress whose class annotation is missing, empty,
//! or another class is left alone: not served, no status reported for it, its object left
//! byte-identical, and (as in Knative's test, where all four share one host) it contests no
//! host. Knative looks again after 2 s; here, after the gateway has taken a later change.

use http::StatusCode;
use serde_json::{json, Value};

use crate::fixture::*;

/// The host every KIngress of the test lists, as Knative's cases all use the same one.
const SHARED: &str = "class.example.com";

#[tokio::test]
async fn ingressclass() {
    let mut c = Cluster::new();
    let (svc, ours) = (c.service("class"), c.service("class-ours"));
    let class = |v: &str| json!({"networking.knative.dev/ingress.class": v});
    let cases: [(&str, Value); 4] = [
        ("nil", Value::Null),
        ("empty-map", json!({})),
        ("incorrect", class("incorrect")),
        ("empty-class", class("")),
    ];
    let spec = |svc: &Svc, host: &str| {
        let paths = json!([{"splits": [split(svc, 100)]}]);
        json!({"rules": [rule(&[host, SHARED], paths)]})
    };
    // Without timestamps the gateway ranks KIngresses by namespace/name: all four names sort
    // before `ours`, so one that contested the shared host would take it.
    for (name, annotations) in &cases {
        let host = format!("{name}.example.com");
        c.ingress_with_annotations(name, annotations.clone(), spec(&svc, &host));
    }
    let files = |c: &Cluster| {
        cases
            .iter()
            .map(|(name, _)| std::fs::read(c.dir.0.join(format!("ing-{name}.yaml"))).unwrap())
            .collect::<Vec<_>>()
    };
    let written = files(&c);
    c.ingress("ours", spec(&ours, "ours.example.com"));
    let gw = c.gateway();
    ready(&gw, "ours", None).await;
    check_left_alone(&gw, &cases).await;

    // A later change the gateway takes; the others are still left alone.
    c.ingress("later", simple("later.example.com", &ours));
    ready(&gw, "later", None).await;
    check_left_alone(&gw, &cases).await;
    assert!(
        files(&c) == written,
        "the objects are left byte-identical (Knative compares them whole)"
    );
}

async fn check_left_alone(gw: &knoxy_tests::Proc, cases: &[(&str, Value)]) {
    for (name, _) in cases {
        let host = format!("{name}.example.com");
        assert_eq!(
            get_host(gw, "public", &host, "/").await.0,
            StatusCode::NOT_FOUND,
            "{name}"
        );
        assert_eq!(status_of(gw, name).await, Value::Null, "{name}: untouched");
    }
    let (status, body) = get_host(gw, "public", SHARED, "/").await;
    assert_eq!(
        echo(status, &body)["suffix"],
        "class-ours",
        "the shared host is ours: the others contest nothing"
    );
}
