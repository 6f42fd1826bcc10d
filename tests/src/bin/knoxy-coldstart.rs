//! Cold starts through the gateway's activator role, measured end to end with one clock:
//! this process is the app (behind real `knoxy-queue`s), writes the config directory the
//! real `knoxy` gateway watches, and sends the requests.
//!
//! 1. Cold start, N times: the revision has no pod; one request is held; the pod's endpoint
//!    turns ready (its EndpointSlice renamed into the directory); the time from that write
//!    to the held request reaching the app.
//! 2. Burst: a zero-pod revision with containerConcurrency 10 gets B concurrent requests,
//!    then 4 pods appear 50 ms apart; every request must succeed.
//!
//! `knoxy-coldstart [N] [B]` (defaults 100 and 1000) prints a Markdown table. The binaries
//! are the ones built beside it (`cargo build --release --bins`); `bench/run` runs it.
//! `KNOXY_COLDSTART_JSON=PATH` also writes the samples there, as JSON (bench/run).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use knoxy_tests::{
    admin_metric, empty, gateway, http1_client, quantile, queue, request_with, revision_objects,
    Proc, TempDir,
};
use tokio::sync::mpsc;

const HOST: &str = "hello.example.com";
/// The app's time per request in the burst, so containerConcurrency matters.
const BURST_WORK: Duration = Duration::from_millis(10);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut number = |default: usize| args.next().and_then(|a| a.parse().ok()).unwrap_or(default);
    let (cold_starts, burst) = (number(100), number(1000));

    let (app_port, mut arrivals) = app().await;
    let dir = TempDir::new("coldstart");
    dir.write(
        "hello.yaml",
        &revision_objects(HOST, &[], "timeoutSeconds: 60"),
    );
    let gw = gateway(&dir.0);

    let pod = queue(app_port).spawn();
    let mut waits = Vec::with_capacity(cold_starts);
    for _ in 0..cold_starts {
        waits.push(cold_start(&gw, &dir, &pod, &mut arrivals).await);
    }
    waits.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(quantile(&waits, q));
    println!("| cold starts | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        waits.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        ms(*waits.last().unwrap_or(&Duration::ZERO)),
    );

    let pods: Vec<Proc> = (0..4)
        .map(|_| queue(app_port).env("CONTAINER_CONCURRENCY", "10").spawn())
        .collect();
    let (ok, failed, took) = burst_through(&gw, &dir, &pods, burst).await;
    println!();
    println!("| burst | containerConcurrency | pods appearing | 200 | failed | all answered in |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {burst} at once, zero pods | 10 | 4, 50 ms apart | {ok} | {failed} | {:.0} ms |",
        ms(took)
    );
    // bench/run draws the distribution from the samples themselves.
    if let Ok(path) = std::env::var("KNOXY_COLDSTART_JSON") {
        let samples: Vec<String> = waits.iter().map(|d| format!("{:.4}", ms(*d))).collect();
        let json = format!(
            "{{\"cold_start_ms\": [{}], \"burst\": {burst}, \"burst_ok\": {ok}, \"burst_failed\": {failed}, \"burst_ms\": {:.1}}}\n",
            samples.join(", "),
            ms(took)
        );
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("knoxy-coldstart: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if failed > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One cold start: the time from the pod's endpoint turning ready to the held request
/// reaching the app.
async fn cold_start(
    gw: &Proc,
    dir: &TempDir,
    pod: &Proc,
    arrivals: &mut mpsc::UnboundedReceiver<Instant>,
) -> Duration {
    let spec = "timeoutSeconds: 60";
    dir.write("hello.yaml", &revision_objects(HOST, &[], spec));
    until_metric(gw, "knoxy_activator_pods", "0").await;
    let request = send(gw);
    until_metric(gw, "knoxy_activator_waiting_requests", "1").await;
    let port = pod.addr("main").port();
    dir.write("hello.yaml", &revision_objects(HOST, &[(port, true)], spec));
    let ready = Instant::now();
    let arrived = tokio::time::timeout(Duration::from_secs(30), arrivals.recv())
        .await
        .expect("the held request reached the app within 30 s")
        .expect("the app runs");
    let status = request.await.expect("the request task");
    assert_eq!(status, StatusCode::OK);
    arrived.saturating_duration_since(ready)
}

/// `n` requests at once to the revision with no pod, then the pods, one every 50 ms:
/// (answered 200, failed, time until the last answer).
async fn burst_through(
    gw: &Proc,
    dir: &TempDir,
    pods: &[Proc],
    n: usize,
) -> (usize, usize, Duration) {
    let spec = "containerConcurrency: 10, timeoutSeconds: 60";
    dir.write("hello.yaml", &revision_objects(HOST, &[], spec));
    until_metric(gw, "knoxy_activator_pods", "0").await;
    let started = Instant::now();
    let requests: Vec<_> = (0..n).map(|_| send_with(gw, "/?work")).collect();
    until_metric(gw, "knoxy_activator_waiting_requests", &n.to_string()).await;
    let mut listed = Vec::new();
    for pod in pods {
        listed.push((pod.addr("main").port(), true));
        dir.write("hello.yaml", &revision_objects(HOST, &listed, spec));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut ok, mut failed) = (0, 0);
    for request in requests {
        match request.await {
            Ok(StatusCode::OK) => ok += 1,
            _ => failed += 1,
        }
    }
    (ok, failed, started.elapsed())
}

fn send(gw: &Proc) -> tokio::task::JoinHandle<StatusCode> {
    send_with(gw, "/")
}

fn send_with(gw: &Proc, path: &str) -> tokio::task::JoinHandle<StatusCode> {
    let req = request_with(
        Method::GET,
        &gw.url("public", path),
        &[("host", HOST)],
        empty(),
    );
    tokio::spawn(async move {
        match http1_client().request(req).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                status
            }
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    })
}

/// Polls the gateway's metrics every millisecond until `name` reads `value` (30 s at most).
async fn until_metric(gw: &Proc, name: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin_metric(gw, name).await.as_deref() != Some(value) {
        assert!(Instant::now() < deadline, "{name} never read {value}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The app: answers every request (after `BURST_WORK` for `?work`), and reports each
/// arrival's instant.
async fn app() -> (u16, mpsc::UnboundedReceiver<Instant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the app");
    let port = listener.local_addr().expect("the app's address").port();
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(tx);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = Arc::clone(&tx);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = Arc::clone(&tx);
                    async move {
                        if req.uri().query() == Some("work") {
                            tokio::time::sleep(BURST_WORK).await;
                        } else {
                            let _ = tx.send(Instant::now());
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            bytes::Bytes::from_static(b"ok\n"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, rx)
}
