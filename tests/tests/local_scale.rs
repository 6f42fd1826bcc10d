//! `knoxy local` scales as the KPA says (issue 14's tests), on real processes under real
//! load through its gateway: 6 clients in flight at a per-instance target of 2 make
//! ceil(6 / 2) = 3 instances; with a target of 1, `max-scale: 3` holds 6 clients at 3 with
//! every request answered, and once they stop `min-scale: 2` keeps 2 instances.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use knoxy_tests::local::{revision, Local, FAST_AUTOSCALER};
use knoxy_tests::{empty, fetch, http1_client, request_with, TempDir};

const SERVICES: &str = "apiVersion: knoxy.dev/v1alpha1
kind: LocalConfig
images: {example.org/autoscale: [knoxy-autoscale]}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: busy}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: '2'
        autoscaling.knative.dev/target-utilization-percentage: '100'
    spec:
      containers: [{image: example.org/autoscale}]
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: bounded}
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/target: '1'
        autoscaling.knative.dev/target-utilization-percentage: '100'
        autoscaling.knative.dev/min-scale: '2'
        autoscaling.knative.dev/max-scale: '3'
    spec:
      containers: [{image: example.org/autoscale}]
";

const CLIENTS: usize = 6;

/// `CLIENTS` clients, each with one request of 300 ms in flight at a time, until `stop`;
/// returns every status seen.
fn load(
    local: &Local,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<StatusCode>>> {
    let url = local.gw.url("public", "/?sleep=300");
    (0..CLIENTS)
        .map(|_| {
            let (url, stop) = (url.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = http1_client();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let req = request_with(Method::GET, &url, &[("host", host)], empty());
                    seen.push(fetch(&client, req).await.0);
                }
                seen
            })
        })
        .collect()
}

fn instances(view: &serde_json::Value, rev: &str) -> u64 {
    revision(view, rev)["instances"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn load_scales_to_the_kpa_count_within_min_and_max_scale() {
    let dir = TempDir::new("local-scale");
    dir.write("config.yaml", FAST_AUTOSCALER);
    dir.write("services.yaml", SERVICES);
    let local = Local::start(&dir.0);
    local
        .until("both ready", Duration::from_secs(30), |v| {
            revision(v, "busy-00001")["status"]["actualReplicas"] == 1
                && revision(v, "bounded-00001")["status"]["actualReplicas"] == 2
        })
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = load(&local, "busy.default.example.com", Arc::clone(&stop));
    clients.extend(load(
        &local,
        "bounded.default.example.com",
        Arc::clone(&stop),
    ));
    // Until both are at 3 ready, and then for 6 s more: never above 3.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut settled: Option<Instant> = None;
    let mut last = serde_json::Value::Null;
    while settled.is_none_or(|at| at.elapsed() < Duration::from_secs(6)) {
        assert!(
            Instant::now() < deadline,
            "not settled at 3 and 3: {last:#}"
        );
        last = local.view().await;
        for rev in ["busy-00001", "bounded-00001"] {
            assert!(instances(&last, rev) <= 3, "{rev} above 3: {last:#}");
        }
        let ready = |rev| revision(&last, rev)["status"]["actualReplicas"] == 3;
        if settled.is_none() && ready("busy-00001") && ready("bounded-00001") {
            settled = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The decider's own count: 3 for busy; for bounded it asks for more, held at 3.
    assert_eq!(revision(&last, "busy-00001")["desired"], 3, "{last:#}");
    let asked = revision(&last, "bounded-00001")["desired"]
        .as_u64()
        .unwrap();
    assert!(asked >= 5, "bounded asked for {asked}");
    assert_eq!(
        revision(&last, "bounded-00001")["status"]["desiredReplicas"],
        3
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let seen = c.await.unwrap();
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|s| *s == StatusCode::OK), "{seen:?}");
    }

    // Idle: busy goes to zero, bounded down to its min-scale of 2 and no further.
    local
        .until("idle", Duration::from_secs(60), |v| {
            instances(v, "busy-00001") == 0 && instances(v, "bounded-00001") == 2
        })
        .await;
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(10) {
        let v = local.view().await;
        assert_eq!(instances(&v, "bounded-00001"), 2, "{v:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    local.stop();
}
