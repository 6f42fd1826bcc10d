//! `host-rewrite` (Knative's rewrite.go, beta): an ExternalIP KIngress for vanity hosts
//! rewrites the Host to a ClusterLocal host and targets an ExternalName Service (port named
//! `http2`) that points back at the gateway's private listener; the request loops through
//! the private listener and reaches the backend.

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn host_rewrite() {
    const PRIVATE: &str = "rewrite.default.svc.cluster.local";
    let mut c = Cluster::new();
    let svc = c.service("rewrite");
    let paths = json!([{"splits": [split(&svc, 100)]}]);
    c.ingress("private", json!({"rules": [local_rule(&[PRIVATE], paths)]}));
    let gw = c.gateway();
    ready(&gw, "private", None).await;

    // The private load balancer, named by DNS as Knative's ExternalName Services do.
    c.write(
        "external.yaml",
        &[json!({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "rewrite-ext", "namespace": NS},
                 "spec": {"type": "ExternalName", "externalName": "localhost",
                          "ports": [{"name": "http2", "port": gw.addr("private").port()}]}})],
    );
    let external = Svc {
        name: "rewrite-ext".into(),
        port: gw.addr("private").port(),
    };
    let vanity = ["vanity.example.com", "another-vanity.example.org"];
    let paths = json!([{"rewriteHost": PRIVATE, "splits": [split(&external, 100)]}]);
    c.ingress("vanity", json!({"rules": [rule(&vanity, paths)]}));
    ready(&gw, "vanity", None).await;

    for host in vanity {
        let (status, body) = get_host(&gw, "public", host, "/").await;
        let seen = echo(status, &body);
        assert_eq!(seen["suffix"], "rewrite", "{host}");
        assert_eq!(seen["host"], PRIVATE, "{host}: the Host was rewritten");
    }
    assert_eq!(
        get_host(&gw, "public", PRIVATE, "/").await.0,
        http::StatusCode::NOT_FOUND,
        "the private host itself stays private"
    );
}
