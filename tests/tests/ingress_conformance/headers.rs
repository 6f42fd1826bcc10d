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
    // Knative's test: 4 Services at 25% each, each split appending its own Service's name.
    let services: Vec<Svc> = (0..4).map(|i| c.service(&format!("post-{i}"))).collect();
    let splits: Vec<_> = services
        .iter()
        .map(|svc| split_with(svc, 25, json!({"Foo-Bar-Baz": svc.name})))
        .collect();
    c.ingress(
        "post-split",
        json!({"rules": [rule(&["post.example.com"], json!([{"splits": splits}]))]}),
    );
    let gw = c.gateway();
    ready(&gw, "post-split", None).await;

    let names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    for client_value in [None, Some("bogus")] {
        let headers: Vec<(&str, &str)> = client_value
            .map(|v| ("foo-bar-baz", v))
            .into_iter()
            .collect();
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            let (status, _, body) =
                get_host_with(&gw, "public", "post.example.com", "/", &headers).await;
            let answer = echo(status, &body);
            let values = header_values(&answer, "foo-bar-baz");
            assert_eq!(
                values,
                [answer["suffix"].as_str().unwrap()],
                "client sent {client_value:?}: one value, set by the split that answered"
            );
            seen.insert(values[0].clone());
            if seen == names {
                break;
            }
        }
        assert_eq!(
            seen, names,
            "client sent {client_value:?}: every split's header within 100 requests"
        );
    }
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

    // Knative's cases: `override` comes back as the KIngress's hash, any other is echoed.
    let other = "2701a1b241db6af811992c57a5e11171847148ac3d2e1a8cc992a62f9e4fa111";
    for (sent, back) in [("override", want.as_str()), (other, other)] {
        let probe = [("k-network-probe", "probe"), ("k-network-hash", sent)];
        let (status, headers, body) =
            get_host_with(&gw, "public", "probe.example.com", "/", &probe).await;
        assert_eq!(status, StatusCode::OK, "{sent}: {body}");
        assert_eq!(
            headers.get("k-network-hash").map(|v| v.to_str().unwrap()),
            Some(back),
            "{sent}: the response's K-Network-Hash"
        );
    }

    // The backend answered both, seeing the real hash in place of `override`.
    let stats = c.backend_stats("probe").await;
    let probes: Vec<Vec<String>> = stats["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| header_values(p, "k-network-hash"))
        .collect();
    assert_eq!(probes, [[want.as_str()], [other]], "{stats}");
}

#[tokio::test]
async fn headers_tags() {
    let mut c = Cluster::new();
    let (tagged, fallback) = (c.service("tagged"), c.service("fallback"));
    let paths = json!([
        {"headers": {"Knative-Serving-Tag": {"exact": "the-tag"}},
         "appendHeaders": {"Which-Backend": "tag"}, "splits": [split(&tagged, 100)]},
        {"appendHeaders": {"Which-Backend": "no-tag"}, "splits": [split(&fallback, 100)]},
    ]);
    c.ingress(
        "tags",
        json!({"rules": [rule(&["tags.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "tags", None).await;

    for (tag, want, path_header) in [
        (Some("the-tag"), "tagged", "tag"),
        (None, "fallback", "no-tag"),
        (Some(""), "fallback", "no-tag"),
        (Some("not-the-tag"), "fallback", "no-tag"),
    ] {
        let headers: Vec<(&str, &str)> = tag
            .map(|t| ("knative-serving-tag", t))
            .into_iter()
            .collect();
        let (status, _, body) =
            get_host_with(&gw, "public", "tags.example.com", "/", &headers).await;
        let seen = echo(status, &body);
        assert_eq!(seen["suffix"], want, "tag {tag:?}");
        assert_eq!(
            header_values(&seen, "which-backend"),
            [path_header],
            "tag {tag:?}"
        );
    }
}
