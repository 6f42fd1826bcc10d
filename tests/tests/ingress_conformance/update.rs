//! `update` (Knative's update.go): 20 consecutive updates (10 new sentinel headers, then 10
//! new backends) under a continuous prober; no request fails, and the first request after
//! the gateway reports the new hash Ready sees the new configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Method, StatusCode};
use knoxy_tests::{empty, http1_client, request_with, try_send, within, Proc};
use serde_json::{json, Value};

use crate::fixture::*;

const HOST: &str = "update.example.com";

fn spec(svc: &Svc, sentinel: &str) -> Value {
    let paths = json!([{"appendHeaders": {"Who-Are-You": sentinel}, "splits": [split(svc, 100)]}]);
    json!({"rules": [rule(&[HOST], paths)]})
}

#[tokio::test]
async fn update() {
    let mut c = Cluster::new();
    let first = c.service("update-0");
    c.ingress("update", spec(&first, "sentinel-0"));
    let gw = c.gateway();
    let mut hash = ready(&gw, "update", None).await;

    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn({
        let (stop, url) = (Arc::clone(&stop), gw.url("public", "/"));
        async move {
            let client = http1_client();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let req = request_with(Method::GET, &url, &[("host", HOST)], empty());
                match try_send(&client, req).await {
                    Ok(r) if r.status() == StatusCode::OK => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }
    });

    for i in 1..=10 {
        hash = apply(&c, &gw, &hash, &first, &format!("sentinel-{i}")).await;
    }
    for i in 1..=10 {
        let svc = c.service(&format!("update-{i}"));
        hash = apply(&c, &gw, &hash, &svc, &format!("backend-{i}")).await;
    }

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = within("prober", prober).await.unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "the prober ran throughout: {ok}");
}

/// Writes the new spec, waits for its hash to be Ready, and checks the very next request.
async fn apply(c: &Cluster, gw: &Proc, previous: &str, svc: &Svc, sentinel: &str) -> String {
    c.ingress("update", spec(svc, sentinel));
    let hash = ready(gw, "update", Some(previous)).await;
    let (status, body) = get_host(gw, "public", HOST, "/").await;
    let seen = echo(status, &body);
    assert_eq!(header_values(&seen, "who-are-you"), [sentinel]);
    assert_eq!(seen["suffix"], svc.name.as_str());
    hash
}
