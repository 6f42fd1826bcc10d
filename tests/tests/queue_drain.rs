//! knoxy-queue's drain and shutdown (contract §7): `/wait-for-drain` on the admin port, SIGTERM
//! with requests in flight, the quiet period that every arriving request restarts, and the exit
//! codes. The quiet period is shortened with `KNOXY_DRAIN_QUIET_PERIOD` (Knative's is 30 s).
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use knoxy_tests::{
    backend, backend_stats, empty, fetch, get, http1_client, json, queue, request_with, within,
    within_for, Proc, Signal,
};

const QUIET: &str = "KNOXY_DRAIN_QUIET_PERIOD";

const KUBE_PROBE: [(&str, &str); 2] = [
    ("user-agent", "kube-probe/1.30"),
    ("k-network-probe", "queue"),
];

fn port(b: &Proc) -> u16 {
    b.addr("backend").port()
}

/// A GET on the serving port with extra headers: (status, body).
async fn call(q: &Proc, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let (status, _, body) = fetch(
        &http1_client(),
        request_with(Method::GET, &q.url("main", path), headers, empty()),
    )
    .await;
    (status, body)
}

async fn kube_probe(q: &Proc) -> (StatusCode, String) {
    call(q, "/", &KUBE_PROBE).await
}

/// Probes every 20 ms until one answers `want` or `limit` passes; returns the last answer.
/// SIGTERM, then waits until probes say the drain started.
async fn terminate(q: &Proc) {
    q.signal(Signal::SIGTERM);
    let (status, _) = probe_until(
        q,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the drain started");
}

async fn probe_until(q: &Proc, want: StatusCode, limit: Duration) -> (StatusCode, String) {
    let deadline = Instant::now() + limit;
    loop {
        let answer = kube_probe(q).await;
        if answer.0 == want || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the backend has `n` requests in flight.
async fn wait_in_flight(b: &Proc, n: i64) {
    within("the backend to have the slow request in flight", async {
        loop {
            if backend_stats(b).await["in_flight"] == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits (without blocking the runtime) for the process to exit within `limit`.
async fn exit_status(q: &mut Proc, limit: Duration) -> ExitStatus {
    within_for(limit, "knoxy-queue to exit", async {
        while q.is_running() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    q.wait_exit(Duration::from_secs(2))
        .expect("the process has exited")
}

fn assert_refused(addr: SocketAddr, what: &str) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => panic!("{what} ({addr}) still accepts connections after exit"),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{what} ({addr}): {e}"
        ),
    }
}

#[tokio::test]
async fn wait_for_drain_without_sigterm_answers_after_about_a_second_while_probes_get_503() {
    let b = backend();
    let mut q = queue(port(&b)).spawn();
    assert_eq!(
        kube_probe(&q).await,
        (StatusCode::OK, "queue".to_owned()),
        "ready before the drain"
    );

    let url = q.url("admin", "/wait-for-drain");
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let answer = get(&url).await;
        (answer, started.elapsed())
    });
    let (status, body) = probe_until(
        &q,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_millis(800),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        "a probe during the second after /wait-for-drain"
    );
    let seen_at = started.elapsed();

    let ((status, _, body), took) = within("/wait-for-drain", waiter).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "", "/wait-for-drain answers with an empty body");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "/wait-for-drain without SIGTERM took {took:?}, expected about 1 s"
    );
    assert!(
        seen_at < took,
        "the 503 ({seen_at:?}) came during the wait ({took:?})"
    );

    // The drain was reset: probes pass again and the process keeps running.
    assert_eq!(
        probe_until(&q, StatusCode::OK, Duration::from_secs(1)).await,
        (StatusCode::OK, "queue".to_owned()),
        "a probe after /wait-for-drain returned"
    );
    assert!(
        q.is_running(),
        "no SIGTERM came, so the queue must not exit"
    );
}

#[tokio::test]
async fn sigterm_keeps_serving_and_finishes_the_request_in_flight_then_exits_zero_and_closes_every_port(
) {
    let b = backend();
    let mut q = queue(port(&b)).env(QUIET, "1s").spawn();
    let ports = [
        ("main", q.addr("main")),
        ("admin", q.addr("admin")),
        ("metrics", q.addr("metrics")),
    ];
    let slow_url = q.url("main", "/slow?sleep=2500");
    let slow = tokio::spawn(async move { get(&slow_url).await });
    wait_in_flight(&b, 1).await;

    let signalled = Instant::now();
    q.signal(Signal::SIGTERM);
    let (status, body) = probe_until(
        &q,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        "probes fail at once after SIGTERM"
    );

    let (status, body) = call(&q, "/during-drain", &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "ordinary requests are served: {body}"
    );
    assert_eq!(json(&body)["uri"], "/during-drain");
    let (status, headers, _) = get(&q.url("metrics", "/metrics")).await;
    assert_eq!(status, StatusCode::OK, "scrapes are served while draining");
    assert_eq!(headers["content-type"], "application/protobuf");
    assert!(q.is_running(), "the request in flight keeps the queue up");

    let (status, _, body) = within("the request in flight", slow).await.unwrap();
    assert_eq!(status, StatusCode::OK, "the request in flight completes");
    assert_eq!(json(&body)["uri"], "/slow?sleep=2500");

    let status = exit_status(&mut q, Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "graceful shutdown exits 0 ({status}) after {:?}\n{}",
        signalled.elapsed(),
        q.stderr_text()
    );
    for (label, addr) in ports {
        assert_refused(addr, label);
    }
}

#[tokio::test]
async fn each_arriving_request_restarts_the_quiet_period() {
    let b = backend();
    let mut q = queue(port(&b)).env(QUIET, "2s").spawn();
    let signalled = Instant::now();
    terminate(&q).await;

    tokio::time::sleep_until((signalled + Duration::from_millis(1200)).into()).await;
    let before_arrival = signalled.elapsed();
    let (status, body) = call(&q, "/late-arrival", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after_arrival = signalled.elapsed();

    // Without the arrival the drain would end 2 s after SIGTERM.
    tokio::time::sleep_until((signalled + Duration::from_millis(2600)).into()).await;
    assert!(
        q.is_running(),
        "the queue exited at the end of the first quiet period although a request arrived at {before_arrival:?}"
    );
    let status = exit_status(&mut q, Duration::from_secs(10)).await;
    let exited = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        exited >= before_arrival + Duration::from_millis(1900),
        "exited {exited:?} after SIGTERM, less than the 2 s quiet period after the arrival at {before_arrival:?}"
    );
    assert!(
        exited <= after_arrival + Duration::from_millis(4500),
        "exited {exited:?} after SIGTERM, long after the quiet period following the arrival at {after_arrival:?}"
    );
}

#[tokio::test]
async fn wait_for_drain_sent_right_after_sigterm_answers_at_the_end_of_the_quiet_period() {
    let b = backend();
    let mut q = queue(port(&b)).env(QUIET, "2s").spawn();
    let url = q.url("admin", "/wait-for-drain");
    let signalled = Instant::now();
    q.signal(Signal::SIGTERM);
    let (status, _, body) = get(&url).await;
    let took = signalled.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "");
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
        "/wait-for-drain after SIGTERM answered after {took:?}, expected the 2 s quiet period"
    );
    let status = exit_status(&mut q, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", q.stderr_text());
}

#[tokio::test]
async fn a_second_sigterm_during_the_drain_exits_with_code_one_at_once() {
    let b = backend();
    let mut q = queue(port(&b)).env(QUIET, "30s").spawn();
    q.signal(Signal::SIGTERM);
    assert_eq!(
        probe_until(
            &q,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(500)
        )
        .await
        .0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the first SIGTERM started the drain"
    );
    assert!(q.is_running(), "a 30 s quiet period is still running");
    let second = Instant::now();
    q.signal(Signal::SIGTERM);
    let status = exit_status(&mut q, Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "exit took {:?} after the second SIGTERM",
        second.elapsed()
    );
}

#[tokio::test]
async fn admin_port_answers_404_for_any_other_path() {
    let b = backend();
    let q = queue(port(&b)).spawn();
    for (method, path) in [
        (Method::GET, "/other"),
        (Method::POST, "/wait-for-drain/x"),
        (Method::GET, "/wait-for-drain/"),
    ] {
        let started = Instant::now();
        let (status, headers, body) = fetch(
            &http1_client(),
            request_with(method.clone(), &q.url("admin", path), &[], empty()),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "404 page not found\n"),
            "{method} {path}"
        );
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "{method} {path} must not wait for a drain"
        );
    }
    assert_eq!(
        kube_probe(&q).await,
        (StatusCode::OK, "queue".to_owned()),
        "a 404 on the admin port starts no drain"
    );
}

#[tokio::test]
async fn ingress_and_activator_probes_get_503_while_draining() {
    let b = backend();
    let q = queue(port(&b)).env(QUIET, "30s").spawn();
    let ingress = [("k-network-probe", "probe"), ("k-network-hash", "abc")];
    let activator = [
        ("user-agent", "Knative-Activator-Probe"),
        ("k-network-probe", "queue"),
    ];
    assert_eq!(
        call(&q, "/", &ingress).await,
        (StatusCode::OK, String::new())
    );
    assert_eq!(
        call(&q, "/healthz", &activator).await,
        (StatusCode::OK, "queue".to_owned())
    );

    terminate(&q).await;
    assert_eq!(
        call(&q, "/", &ingress).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned()
        ),
        "K-Network-Probe: probe while draining"
    );
    assert_eq!(
        call(&q, "/healthz", &activator).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned()
        ),
        "activator probe while draining"
    );
    let (status, body) = call(&q, "/still-served", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        backend_stats(&b).await["requests"],
        1,
        "only the ordinary request reached the user container"
    );
}
