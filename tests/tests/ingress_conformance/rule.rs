//! `dispatch/rule` (Knative's rule.go).

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn dispatch_rule() {
    let mut c = Cluster::new();
    let (one, two) = (c.service("rule-one"), c.service("rule-two"));
    let path = |svc: &Svc, name: &str| json!([{"appendHeaders": {"Which-Rule": name}, "splits": [split(svc, 100)]}]);
    c.ingress(
        "rule",
        json!({"rules": [
            rule(&["one.example.com"], path(&one, "one")),
            rule(&["two.example.com"], path(&two, "two")),
        ]}),
    );
    let gw = c.gateway();
    ready(&gw, "rule", None).await;

    for (host, want) in [("one.example.com", "one"), ("two.example.com", "two")] {
        let (status, body) = get_host(&gw, "public", host, "/").await;
        let seen = echo(status, &body);
        assert_eq!(seen["suffix"], format!("rule-{want}"), "{host}");
        assert_eq!(header_values(&seen, "which-rule"), [want], "{host}");
    }
}
