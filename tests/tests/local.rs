//! `knoxy local` end to end: the real gateway binary runs a Service from YAML as real
//! processes (knoxy-helloworld behind knoxy-queue), serves it by host, and on SIGTERM
//! stops everything it started.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_tests::local::Local;
use knoxy_tests::{alive, bin_path, children, get_host, Signal, TempDir};

const HELLO: &str = "apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: greeter}
spec:
  template:
    spec:
      containers:
      - image: example.org/greeter
        env: [{name: TARGET, value: Local}]
---
apiVersion: knoxy.dev/v1alpha1
kind: LocalConfig
images: {example.org/greeter: [knoxy-helloworld]}
";

#[tokio::test]
async fn a_service_from_yaml_is_served_and_everything_stops_with_the_gateway() {
    let dir = TempDir::new("local");
    dir.write("greeter.yaml", HELLO);
    let mut gw = Local::start(&dir.0).gw;
    assert!(
        gw.wait_for_output(
            "answers at http://greeter.default.example.com/",
            Duration::from_secs(20)
        ),
        "{}",
        gw.stdout_text()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = get_host(&gw, "public", "greeter.default.example.com", "/").await;
        if status == StatusCode::OK {
            assert_eq!(body, "Hello Local!\n");
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The instance's app and queue are the gateway's children; SIGTERM takes them along.
    let started = children(gw.pid());
    assert_eq!(started.len(), 2, "an app and its queue: {started:?}");
    assert!(bin_path("knoxy-helloworld").is_file());
    gw.signal(Signal::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("the gateway exits");
    assert!(status.success(), "{status:?}");
    for pid in started {
        assert!(!alive(pid), "{pid} outlived the gateway");
    }
}

#[tokio::test]
async fn a_killed_knoxy_local_takes_its_instances_along() {
    let dir = TempDir::new("local-killed");
    dir.write("greeter.yaml", HELLO);
    let mut gw = Local::start(&dir.0).gw;
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let (status, _, _) = get_host(&gw, "public", "greeter.default.example.com", "/").await;
        let kids = children(gw.pid());
        if status == StatusCode::OK && kids.len() == 2 {
            break kids;
        }
        assert!(Instant::now() < deadline, "{status}, children {kids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // No drain, no cleanup code runs: the kernel ends them (PR_SET_PDEATHSIG).
    gw.signal(Signal::SIGKILL);
    gw.wait_exit(Duration::from_secs(10)).expect("killed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "outlived a SIGKILLed knoxy local: {started:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
