//! `ingressclass` (Knative's class.go): a KIngress whose class annotation is missing, empty,
//! or another class is left alone: not served, and no status is reported for it.

use http::StatusCode;
use serde_json::{json, Value};

use crate::fixture::*;

#[tokio::test]
async fn ingressclass() {
    let mut c = Cluster::new();
    let svc = c.service("class");
    let class = |v: &str| json!({"networking.knative.dev/ingress.class": v});
    let cases: [(&str, Value); 4] = [
        ("nil", Value::Null),
        ("empty-map", json!({})),
        ("incorrect", class("incorrect")),
        ("empty-class", class("")),
    ];
    for (name, annotations) in &cases {
        let host = format!("{name}.example.com");
        c.ingress_with_annotations(name, annotations.clone(), simple(&host, &svc));
    }
    c.ingress("ours", simple("ours.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "ours", None).await;

    for (name, _) in &cases {
        let host = format!("{name}.example.com");
        assert_eq!(
            get_host(&gw, "public", &host, "/").await.0,
            StatusCode::NOT_FOUND,
            "{name}"
        );
        assert_eq!(status_of(&gw, name).await, Value::Null, "{name}: untouched");
    }
}
