//! `dispatch/percentage` (Knative's percentage.go).

use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn dispatch_percentage() {
    let mut c = Cluster::new();
    let weights = [1, 2, 4, 8, 16, 32, 37, 0, 0, 0];
    let splits: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| split(&c.service(&format!("pct-{i}")), *w))
        .collect();
    let paths = json!([{"splits": splits}]);
    c.ingress(
        "percentage",
        json!({"rules": [rule(&["pct.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "percentage", None).await;

    let counts = spread(&gw, "public", "pct.example.com", "/", 1000, 8).await;
    for (i, want) in weights.iter().enumerate() {
        let got = counts.get(&format!("pct-{i}")).copied().unwrap_or(0);
        let got_percent = got as f64 / 10.0;
        assert!(
            (got_percent - f64::from(*want)).abs() <= 10.0,
            "pct-{i}: {got_percent}% (want {want}% ± 10): {counts:?}"
        );
        if *want == 0 {
            assert_eq!(got, 0, "a 0% split gets nothing: {counts:?}");
        }
    }
}
