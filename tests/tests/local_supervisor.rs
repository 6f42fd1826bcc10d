//! `knoxy local`'s instances: a real app (knoxy-helloworld) behind a real knoxy-queue,
//! started, probed, served, stopped with nothing left behind.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_local::supervisor::{Instance, InstanceSpec};
use knoxy_tests::{bin_path, get};

fn spec() -> InstanceSpec {
    InstanceSpec {
        namespace: "default".into(),
        service: "hello".into(),
        configuration: "hello".into(),
        revision: "hello-00001".into(),
        argv: vec![bin_path("knoxy-helloworld").display().to_string()],
        env: vec![("TARGET".into(), "Knoxy".into())],
        container_concurrency: 0,
        timeout_seconds: 300,
        queue: bin_path("knoxy-queue"),
        launcher: None,
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: reaped or not, it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

fn until_ready(instance: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !instance.ready() {
        assert!(Instant::now() < deadline, "not ready within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn an_instance_serves_through_its_queue_and_stops_leaving_nothing() {
    let instance = Instance::start(&spec(), "hello-00001-1").unwrap();
    until_ready(&instance);
    let (status, _, body) = get(&format!("http://{}/", instance.endpoint)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello Knoxy!\n"));
    let metrics = get(&format!("http://{}/metrics", instance.metrics)).await;
    assert_eq!(metrics.0, StatusCode::OK);
    let pids = instance.pids();
    assert!(pids.iter().all(|p| alive(*p)));
    instance.stop(Duration::from_secs(5));
    for pid in pids {
        assert!(!alive(pid), "{pid} still runs");
    }
}

#[tokio::test]
async fn a_crashed_app_is_reported_and_a_dropped_instance_is_killed() {
    let mut instance = Instance::start(&spec(), "hello-00001-2").unwrap();
    until_ready(&instance);
    let [app, queue] = instance.pids();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = loop {
        if let Some(why) = instance.exited() {
            break why;
        }
        assert!(Instant::now() < deadline, "the crash went unseen");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(why.contains("the app exited"), "{why}");
    drop(instance);
    assert!(!alive(queue), "the queue outlived its instance");
}
