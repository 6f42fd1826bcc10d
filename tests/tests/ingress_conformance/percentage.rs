//! `dispatch/percentage` (Knative's percentage.go).

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn dispatch_percentage() {
    let weights = [1, 2, 4, 8, 16, 32, 37, 0, 0, 0];
    let mut c = Cluster::new();
    let paths = json!([{"splits": weighted_splits(&mut c, "pct", &weights)}]);
    c.ingress(
        "percentage",
        json!({"rules": [rule(&["pct.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "percentage", None).await;

    let counts = spread(&gw, "public", "pct.example.com", "/", 1000, 8).await;
    assert_shares(&counts, "pct", &weights);
}
