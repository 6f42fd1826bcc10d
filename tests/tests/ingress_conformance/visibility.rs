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
    let weights = DOUBLING_WEIGHTS;
    let mut c = Cluster::new();
    let paths = json!([{"splits": weighted_splits(&mut c, "vsplit", &weights)}]);
    c.ingress("vsplit", json!({"rules": [local_rule(&[HOST], paths)]}));
    let gw = c.gateway();
    ready(&gw, "vsplit", None).await;

    assert_eq!(
        get_host(&gw, "public", HOST, "/").await.0,
        StatusCode::NOT_FOUND
    );
    // Knative's test: 1000 requests, 8 at a time, through its in-cluster proxy.
    let counts = spread(&gw, "private", HOST, "/", 1000, 8).await;
    assert_shares(&counts, "vsplit", &weights);
}

#[tokio::test]
async fn visibility_path() {
    const HOST: &str = "vpath.default.svc.cluster.local";
    let mut c = Cluster::new();
    let paths = path_dispatch(&mut c, "v");
    c.ingress("vpath", json!({"rules": [local_rule(&[HOST], paths)]}));
    let gw = c.gateway();
    ready(&gw, "vpath", None).await;

    for (path, want) in PATH_CASES {
        assert_eq!(
            get_host(&gw, "public", HOST, path).await.0,
            StatusCode::NOT_FOUND,
            "{path:?} is not public"
        );
        let (status, body) = get_host(&gw, "private", HOST, path).await;
        assert_eq!(
            which_backend(&echo(status, &body)),
            format!("v{want}"),
            "{path:?} privately"
        );
    }
}
