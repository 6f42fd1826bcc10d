//! `visibility`, `visibility/split`, `visibility/path` (Knative's visibility.go): ClusterLocal
//! rules answer on the private listener (where Knative's in-cluster proxy pod dials) and 404
//! on the public one.

use http::StatusCode;
use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn visibility() {
    let mut c = Cluster::new();
    let svc = c.service("visibility");
    let hosts = [
        "visibility.default.svc.cluster.local",
        "visibility.default.svc",
        "visibility.default",
    ];
    let paths = json!([{"splits": [split(&svc, 100)]}]);
    c.ingress("visibility", json!({"rules": [local_rule(&hosts, paths)]}));
    let gw = c.gateway();
    ready(&gw, "visibility", None).await;

    for host in hosts {
        assert_eq!(
            get_host(&gw, "public", host, "/").await.0,
            StatusCode::NOT_FOUND,
            "{host} is not public"
        );
        let (status, body) = get_host(&gw, "private", host, "/").await;
        assert_eq!(
            echo(status, &body)["suffix"],
            "visibility",
            "{host} privately"
        );
    }
}

#[tokio::test]
async fn visibility_split() {
    const HOST: &str = "vsplit.default.svc.cluster.local";
    let mut c = Cluster::new();
    let weights = [10, 20, 30, 40];
    let splits: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| split(&c.service(&format!("vsplit-{i}")), *w))
        .collect();
    let paths = json!([{"splits": splits}]);
    c.ingress("vsplit", json!({"rules": [local_rule(&[HOST], paths)]}));
    let gw = c.gateway();
    ready(&gw, "vsplit", None).await;

    assert_eq!(
        get_host(&gw, "public", HOST, "/").await.0,
        StatusCode::NOT_FOUND
    );
    let counts = spread(&gw, "private", HOST, "/", 500, 8).await;
    for (i, want) in weights.iter().enumerate() {
        let got = counts.get(&format!("vsplit-{i}")).copied().unwrap_or(0);
        let got_percent = got as f64 / 5.0;
        assert!(
            (got_percent - f64::from(*want)).abs() <= 10.0,
            "vsplit-{i}: {got_percent}% (want {want}% ± 10): {counts:?}"
        );
    }
}

#[tokio::test]
async fn visibility_path() {
    const HOST: &str = "vpath.default.svc.cluster.local";
    let mut c = Cluster::new();
    let (foo, bar, baz, all) = (
        c.service("vfoo"),
        c.service("vbar"),
        c.service("vbaz"),
        c.service("vall"),
    );
    let paths = json!([
        {"path": "/foo", "splits": [split(&foo, 100)]},
        {"path": "/bar", "splits": [split(&bar, 100)]},
        {"path": "/baz", "splits": [split(&baz, 100)]},
        {"splits": [split(&all, 100)]},
    ]);
    c.ingress("vpath", json!({"rules": [local_rule(&[HOST], paths)]}));
    let gw = c.gateway();
    ready(&gw, "vpath", None).await;

    for (path, want) in [
        ("/foo", "vfoo"),
        ("/bar", "vbar"),
        ("/baz", "vbaz"),
        ("/asdf", "vall"),
    ] {
        assert_eq!(
            get_host(&gw, "public", HOST, path).await.0,
            StatusCode::NOT_FOUND,
            "{path} is not public"
        );
        let (status, body) = get_host(&gw, "private", HOST, path).await;
        assert_eq!(echo(status, &body)["suffix"], want, "{path} privately");
    }
}
