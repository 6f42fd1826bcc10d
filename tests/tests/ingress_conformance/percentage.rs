//! `dispatch/percentage` (Knative's percentage.go): 10 splits at doubling weights (three at
//! 0%), 1000 requests 8 at a time; each split within ±10 points, a 0% split gets nothing, and
//! every answer comes from a split of the path whose header names it.

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn dispatch_percentage() {
    let weights = DOUBLING_WEIGHTS;
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
