//! `headers/pre-split`, `headers/post-split`, `headers/probe`, `headers/tags` (Knative's
//! headers.go).

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn headers_pre_split() {
    let mut c = Cluster::new();
    let svc = c.service("pre-split");
    let paths = json!([{"appendHeaders": {"Foo": "bar"}, "splits": [split(&svc, 100)]}]);
    c.ingress(
        "pre-split",
        json!({"rules": [rule(&["pre.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "pre-split", None).await;

    for client_value in [None, Some("baz")] {
        let headers: Vec<(&str, &str)> = client_value.map(|v| ("foo", v)).into_iter().collect();
        let (status, _, body) =
            get_host_with(&gw, "public", "pre.example.com", "/", &headers).await;
        assert_eq!(
            header_values(&echo(status, &body), "foo"),
            ["bar"],
            "client sent {client_value:?}: the path's value overwrites it"
        );
    }
}

#[tokio::test]
async fn headers_post_split() {
    let mut c = Cluster::new();
    let svc = c.service("post-split");
    let splits: Vec<_> = (0..4)
        .map(|i| split_with(&svc, 25, json!({"Foo": format!("split-{i}")})))
        .collect();
    c.ingress(
        "post-split",
        json!({"rules": [rule(&["post.example.com"], json!([{"splits": splits}]))]}),
    );
    let gw = c.gateway();
    ready(&gw, "post-split", None).await;

    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        let (status, _, body) =
            get_host_with(&gw, "public", "post.example.com", "/", &[("foo", "client")]).await;
        let values = header_values(&echo(status, &body), "foo");
        assert_eq!(values.len(), 1, "one value, the split's: {values:?}");
        assert!(values[0].starts_with("split-"), "{values:?}");
        seen.insert(values[0].clone());
        if seen.len() == 4 {
            break;
        }
    }
    assert_eq!(seen.len(), 4, "every split's header is seen: {seen:?}");
}

#[tokio::test]
async fn headers_probe() {
    let mut c = Cluster::new();
    let svc = c.service("probe");
    let spec = simple("probe.example.com", &svc);
    c.ingress("probe", spec.clone());
    let gw = c.gateway();
    let reported = ready(&gw, "probe", None).await;

    // The hash Knative's prober computes from the stored (defaulted) object.
    let mut ingress: knoxy_control::kingress::KIngress = serde_json::from_value(
        json!({"metadata": {"name": "probe", "namespace": NS}, "spec": spec}),
    )
    .unwrap();
    knoxy_control::validate::set_defaults(&mut ingress.spec);
    let want = knoxy_control::probe_hash::probe_hash(&ingress);
    assert_eq!(reported, want);

    for (sent, seen) in [
        ("override", want.as_str()),
        ("a-different-hash", "a-different-hash"),
    ] {
        let probe = [("k-network-probe", "probe"), ("k-network-hash", sent)];
        let (status, _, body) =
            get_host_with(&gw, "public", "probe.example.com", "/", &probe).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_values(&echo(status, &body), "k-network-hash"),
            [seen]
        );
    }
}

#[tokio::test]
async fn headers_tags() {
    let mut c = Cluster::new();
    let (tagged, fallback) = (c.service("tagged"), c.service("fallback"));
    let paths = json!([
        {"headers": {"Knative-Serving-Tag": {"exact": "the-tag"}}, "splits": [split(&tagged, 100)]},
        {"splits": [split(&fallback, 100)]},
    ]);
    c.ingress(
        "tags",
        json!({"rules": [rule(&["tags.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "tags", None).await;

    for (tag, want) in [
        (Some("the-tag"), "tagged"),
        (None, "fallback"),
        (Some(""), "fallback"),
        (Some("nonexistent"), "fallback"),
    ] {
        let headers: Vec<(&str, &str)> = tag
            .map(|t| ("knative-serving-tag", t))
            .into_iter()
            .collect();
        let (status, _, body) =
            get_host_with(&gw, "public", "tags.example.com", "/", &headers).await;
        assert_eq!(echo(status, &body)["suffix"], want, "tag {tag:?}");
    }
}
