//! The example apps `knoxy local` runs: Knative's autoscale sample and helloworld, as real
//! processes on loopback.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_tests::{get, Proc, Signal};

fn app(bin: &str, env: &[(&str, &str)]) -> Proc {
    Proc::builder(bin)
        .env("PORT", "0")
        .envs(env.iter().copied())
        .wait_for(&["http"])
        .spawn()
}

#[tokio::test]
async fn the_autoscale_app_sleeps_computes_and_bloats_as_asked() {
    let app = app("knoxy-autoscale", &[]);
    let started = Instant::now();
    let (status, _, body) = get(&app.url("http", "/?sleep=100&prime=10000&bloat=5")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "Allocated 5 Mb of memory.");
    assert_eq!(lines[1], "The largest prime less than 10000 is 9973.");
    assert!(lines[2].starts_with("Slept for 10"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(100));
    // Nothing asked, nothing done; a bad number is the client's error, named.
    let (status, _, body) = get(&app.url("http", "/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let (status, _, body) = get(&app.url("http", "/?bloat=lots")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("bloat"), "{body}");
}

#[tokio::test]
async fn helloworld_greets_its_target_and_stops_on_sigterm() {
    let mut app = app("knoxy-helloworld", &[("TARGET", "Knoxy")]);
    let (status, _, body) = get(&app.url("http", "/anything")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Hello Knoxy!\n"));
    app.signal(Signal::SIGTERM);
    let exit = app.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn a_bad_port_is_named() {
    let (status, _, stderr) = Proc::builder("knoxy-helloworld")
        .env("PORT", "eighty")
        .run_to_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(stderr.contains("PORT \"eighty\""), "{stderr}");
}
