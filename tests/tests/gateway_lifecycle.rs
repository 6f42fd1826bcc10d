//! Stopping and upgrading the gateway as Kubernetes and operators do it: SIGTERM turns
//! `/ready` to 503 at once and keeps serving for the drain delay; a new process started with
//! `--upgrade` takes the listening sockets over (SIGQUIT to the old one) while a client keeps
//! a steady rate, with no failed request and no refused connection.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fixture::{kingress, one_host_with, revision, rule};
use http::{Method, StatusCode};
use knoxy_tests::{backend, empty, http1_client, request_with, Proc, TempDir};
use nix::sys::signal::Signal;

const HOST: &str = "hello.example.com";

async fn status_of(url: &str, host: &str) -> Option<StatusCode> {
    let req = request_with(
        Method::GET,
        url,
        &[("host", host), ("connection", "close")],
        empty(),
    );
    http1_client().request(req).await.ok().map(|r| r.status())
}

#[tokio::test]
async fn sigterm_makes_ready_503_at_once_serves_through_the_drain_delay_then_stops() {
    let (_pod, _dir, mut gw) = one_host_with("hello", HOST, &["--drain-delay", "2"]);
    let (ready, public) = (gw.url("admin", "/ready"), gw.url("public", "/"));
    assert_eq!(status_of(&ready, "x").await, Some(StatusCode::OK));
    gw.signal(Signal::SIGTERM);
    let term = Instant::now();
    let deadline = term + Duration::from_secs(1);
    while status_of(&ready, "x").await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(Instant::now() < deadline, "/ready must answer 503 at once");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Load balancers still send requests while they take the pod out: those are served.
    while term.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            status_of(&public, HOST).await,
            Some(StatusCode::OK),
            "during the delay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // After the delay the listeners close, and an idle process exits 0.
    let exited = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        term.elapsed() >= Duration::from_secs(2),
        "exited during the delay"
    );
    assert_eq!(exited.map(|s| s.code()), Some(Some(0)), "exit 0");
}

#[tokio::test]
async fn an_upgrade_under_steady_load_fails_no_request_and_refuses_no_connection() {
    let pod = backend();
    let dir = TempDir::new("gw-upgrade");
    dir.write("revision.yaml", &revision("hello-00001", &pod));
    dir.write(
        "hello.yaml",
        &kingress(
            "hello",
            "Enabled",
            &rule(HOST, "ExternalIP", &[("hello-00001", 100)]),
        ),
    );
    // Not in the watched directory: the socket file would be a change there.
    let run = TempDir::new("gw-upgrade-sock");
    let sock = run.0.join("upgrade.sock");
    let sock = sock.to_str().unwrap();
    let labels = ["public", "https", "private", "private-https", "admin"];
    let flags = [
        "--http",
        "--https",
        "--private-http",
        "--private-https",
        "--admin",
    ];
    let start = |addrs: &[String], upgrade: bool, wait: &[&str]| {
        let mut b = Proc::builder("knoxy")
            .arg("--config-dir")
            .arg(&dir.0)
            .args(["--drain-delay", "0", "--upgrade-sock", sock]);
        if upgrade {
            b = b.arg("--upgrade");
        }
        for (flag, addr) in flags.iter().zip(addrs) {
            b = b.args([*flag, addr.as_str()]);
        }
        b.wait_for(wait).spawn()
    };
    let any = vec!["127.0.0.1:0".to_owned(); 5];
    let mut old = start(&any, false, &labels);
    let addrs: Vec<String> = labels.iter().map(|l| old.addr(l).to_string()).collect();
    let url = old.url("public", "/");

    // Two steady clients: one keeps connections alive, one opens a new one per request.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for fresh in [false, true] {
        let (stop, failures, sent, url) =
            (stop.clone(), failures.clone(), sent.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let client = http1_client();
            while !stop.load(Ordering::Relaxed) {
                let mut headers = vec![("host", HOST)];
                if fresh {
                    headers.push(("connection", "close"));
                }
                let req = request_with(Method::GET, &url, &headers, empty());
                let outcome =
                    tokio::time::timeout(Duration::from_secs(5), client.request(req)).await;
                match outcome {
                    Ok(Ok(r)) if r.status() == StatusCode::OK => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                    }
                    Ok(Ok(r)) => failures.lock().push(format!("status {}", r.status())),
                    Ok(Err(e)) => failures.lock().push(format!("error {e:?}")),
                    Err(_) => failures.lock().push("timed out".to_owned()),
                }
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process waits (Pingora: 5 s) on the upgrade socket for the old one's sockets.
    let new = start(&addrs, true, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::path::Path::new(sock).exists() {
        assert!(
            Instant::now() < deadline,
            "the new process must open {sock}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    old.signal(Signal::SIGQUIT);
    assert!(
        new.wait_for_output("listening on admin", Duration::from_secs(10)),
        "the new process serves: {}",
        new.stderr_text()
    );
    // The old process keeps accepting for Pingora's 5 s close timeout, then drains and exits.
    let exited = tokio::task::spawn_blocking(move || {
        let status = old.wait_exit(Duration::from_secs(20));
        (status, old)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}\nold: {}\nnew: {}",
        failures.len(),
        sent.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)],
        exited.1.stderr_text(),
        new.stderr_text()
    );
    assert_eq!(
        exited.0.map(|s| s.code()),
        Some(Some(0)),
        "the old process drains and exits 0"
    );
    assert!(
        sent.load(Ordering::Relaxed) > 200,
        "a steady load throughout"
    );
    // The new process serves the same sockets.
    assert_eq!(status_of(&url, HOST).await, Some(StatusCode::OK));
    let metrics = knoxy_tests::get(&new.url("admin", "/metrics")).await.2;
    assert!(metrics.contains("knoxy_requests_total{"), "{metrics}");
}
