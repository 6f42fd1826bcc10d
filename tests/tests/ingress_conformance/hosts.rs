//! `hosts/multiple` (Knative's hosts.go).

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn hosts_multiple() {
    let mut c = Cluster::new();
    let svc = c.service("multiple");
    let hosts = [
        "a.example.com",
        "unrelated.example.org",
        "x.y.z.example.net",
        "multiple.default.example.com",
    ];
    let paths = json!([{"splits": [split(&svc, 100)]}]);
    c.ingress("multiple", json!({"rules": [rule(&hosts, paths)]}));
    let gw = c.gateway();
    ready(&gw, "multiple", None).await;

    for host in hosts {
        let (status, body) = get_host(&gw, "public", host, "/").await;
        assert_eq!(echo(status, &body)["suffix"], "multiple", "{host}");
    }
}
