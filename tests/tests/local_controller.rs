//! `knoxy local`'s controller on real processes (knoxy-helloworld behind knoxy-queue), its
//! clock sped up: a Service gets its first revision and instance, served by the gateway's
//! derivation; idle, it goes to zero; the activator's report brings an instance back.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_control::derive::{derive, DeriveConfig, IngressStatus};
use knoxy_control::kpa::Sample;
use knoxy_local::controller::Controller;
use knoxy_local::input;
use knoxy_tests::{bin_path, get, TempDir};

const HELLO: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    metadata: {annotations: {autoscaling.knative.dev/window: 6s}}
    spec:
      containers:
      - image: ghcr.io/knative/helloworld-go
        env: [{name: TARGET, value: Knoxy}]
---
apiVersion: knoxy.dev/v1alpha1
kind: LocalConfig
images: {ghcr.io/knative/helloworld-go: [knoxy-helloworld]}
";

/// Steps the controller one (simulated) second at a time until `done`, for at most `limit`
/// simulated seconds; the real time between steps lets processes start.
fn until(
    c: &mut Controller,
    now: &mut i64,
    limit: i64,
    activator: &[(String, Sample)],
    done: impl Fn(&Controller) -> bool,
) {
    let end = *now + limit;
    let real = Instant::now() + Duration::from_secs(30);
    while !done(c) {
        assert!(
            *now < end && Instant::now() < real,
            "not done by {now}: {:?}",
            c.view().revisions
        );
        c.step(*now, activator);
        *now += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_service_runs_is_served_goes_to_zero_and_comes_back() {
    let dir = TempDir::new("local-controller");
    dir.write("hello.yaml", HELLO);
    let read = input::read(std::slice::from_ref(&dir.0));
    assert!(read.errors.is_empty(), "{:?}", read.errors);
    let bins: PathBuf = bin_path("knoxy-queue").parent().unwrap().to_owned();
    let mut c = Controller::new(bin_path("knoxy-queue"), vec![bins]);
    let mut now = 0;
    c.load(read, now);
    let ready = |c: &Controller| c.view().revisions[0].status.actual_replicas == 1;
    until(&mut c, &mut now, 200, &[], ready);
    assert_eq!(c.view().revisions[0].name, "hello-00001");

    let snap = c.reconcile(None);
    // The Service's status as Knative writes it once its revision is ready.
    let view = serde_json::to_value(c.view()).unwrap();
    let status = &view["services"][0]["status"];
    assert_eq!(status["url"], "http://hello.default.example.com");
    assert_eq!(
        status["address"]["url"],
        "http://hello.default.svc.cluster.local"
    );
    assert_eq!(status["latestReadyRevisionName"], "hello-00001");
    assert_eq!(
        status["traffic"],
        serde_json::json!([{"revisionName": "hello-00001", "percent": 100, "latestRevision": true}])
    );
    assert_eq!(
        status["conditions"],
        serde_json::json!([
            {"type": "ConfigurationsReady", "status": "True"},
            {"type": "Ready", "status": "True"},
            {"type": "RoutesReady", "status": "True"},
        ])
    );
    let derived = derive(&snap, &DeriveConfig::default());
    assert!(
        matches!(derived.status["default/hello"], IngressStatus::Ready { .. }),
        "{:?}",
        derived.status
    );
    let target = &derived.table.revisions["default/hello-00001"];
    assert_eq!(target.ready.len(), 1);
    let (status, _, body) = get(&format!("http://{}/", target.ready[0])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello Knoxy!\n"));
    assert!(derived
        .table
        .public
        .find("hello.default.example.com")
        .is_some());
    // The queue reports in real seconds, each many of this test's: let that request's
    // second pass before the idle part.
    std::thread::sleep(Duration::from_millis(1500));

    // Idle: a 6 s window, then the grace period since the activator came into the path (the
    // revision's creation), and it is at zero.
    let at_zero = |c: &Controller| c.view().revisions[0].instances == 0;
    until(&mut c, &mut now, 60, &[], at_zero);
    assert!((28..=40).contains(&now), "at zero at {now}");
    // At zero the revision is Ready and not Active, and the Service stays Ready (§5 item 20).
    c.reconcile(None);
    let view = serde_json::to_value(c.view()).unwrap();
    let revision = &view["revisions"][0]["status"];
    assert_eq!(revision["actualReplicas"], 0);
    let conditions = |v: &serde_json::Value| {
        v["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_owned(),
                    c["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(conditions(revision).contains(&("Active".into(), "False".into())));
    assert!(conditions(revision).contains(&("Ready".into(), "True".into())));
    assert!(conditions(&view["services"][0]["status"]).contains(&("Ready".into(), "True".into())));
    // A request held by the activator brings one back at once.
    let demand = [(
        "default/hello-00001".to_owned(),
        Sample {
            average_concurrent_requests: 1.0,
            request_count: 1.0,
            ..Sample::default()
        },
    )];
    until(&mut c, &mut now, 200, &demand, ready);
    c.shutdown();
}
