//! `update` (Knative's update.go): 20 consecutive updates (10 new sentinel headers, then 10
//! new backends, each previous backend torn down once the next is Ready) under a continuous
//! prober. No probe fails, the first request after the gateway reports the new hash Ready
//! sees the new configuration, and so does every probe sent after that: once a generation
//! is Ready no answer comes from an older one, and never from a removed backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use knoxy_tests::{empty, http1_client, request_with, within, Proc, TIMEOUT};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::fixture::*;

const HOST: &str = "update.example.com";
/// The split-level header that tells which generation of the KIngress answered.
const WHO: &str = "Who-Are-You";

fn spec(svc: &Svc, sentinel: &str) -> Value {
    let paths = json!([{"splits": [split_with(svc, 100, json!({ WHO: sentinel }))]}]);
    json!({"rules": [rule(&[HOST], paths)]})
}

/// One generation of the KIngress: its sentinel, its backend, when it was seen Ready.
struct Generation {
    sentinel: String,
    backend: String,
    ready_at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update() {
    let mut c = Cluster::new();
    let first = c.service("update-0");
    c.ingress("update", spec(&first, "sentinel-0"));
    let gw = c.gateway();
    let mut hash = ready(&gw, "update", None).await;
    let mut generations = vec![Generation {
        sentinel: "sentinel-0".into(),
        backend: first.name.clone(),
        ready_at: Instant::now(),
    }];
    // Backends torn down, and when that began.
    let mut removed: Vec<(String, Instant)> = Vec::new();

    let prober = Prober::start(&gw);
    // Instead of Knative's 1 s head start: the prober has been answered once.
    prober.answered_since(Instant::now()).await;

    for i in 1..=10 {
        let sentinel = format!("sentinel-{i}");
        let ready_at;
        (hash, ready_at) = roll_out(&c, &gw, &hash, &first, &sentinel).await;
        generations.push(Generation {
            sentinel,
            backend: first.name.clone(),
            ready_at,
        });
        prober.answered_since(Instant::now()).await;
    }
    let mut previous = first.name.clone();
    for i in 1..=10 {
        let svc = c.service(&format!("update-{i}"));
        let sentinel = format!("backend-{i}");
        let ready_at;
        (hash, ready_at) = roll_out(&c, &gw, &hash, &svc, &sentinel).await;
        generations.push(Generation {
            sentinel,
            backend: svc.name.clone(),
            ready_at,
        });
        // Once rolled out, the previous version goes (Knative's previousVersionCancel).
        removed.push((previous.clone(), Instant::now()));
        c.tear_down(&previous).await;
        previous = svc.name.clone();
        prober.answered_since(Instant::now()).await;
    }

    let answers = prober.stop().await;
    let failed: Vec<&String> = answers
        .iter()
        .filter_map(|a| a.who.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    for answer in &answers {
        let Ok((sentinel, backend)) = &answer.who else {
            unreachable!()
        };
        let generation = generations
            .iter()
            .position(|g| &g.sentinel == sentinel)
            .unwrap_or_else(|| panic!("unknown sentinel {sentinel:?} from {backend}"));
        assert_eq!(
            backend, &generations[generation].backend,
            "{sentinel} is served by its own backend"
        );
        // The newest generation Ready when the probe left; its answer may not be older.
        let current = generations
            .iter()
            .rposition(|g| g.ready_at <= answer.sent)
            .unwrap_or(0);
        assert!(
            generation >= current,
            "a probe sent after generation {current} ({}) was Ready was answered by generation \
             {generation} ({sentinel} from {backend})",
            generations[current].sentinel
        );
        if let Some((_, at)) = removed.iter().find(|(name, _)| name == backend) {
            assert!(
                answer.sent < *at,
                "{backend} answered a probe sent after it was removed"
            );
        }
    }
}

/// Writes the new spec, waits for its hash to be Ready, and checks the very next request;
/// the hash and when it was seen Ready.
async fn roll_out(
    c: &Cluster,
    gw: &Proc,
    previous: &str,
    svc: &Svc,
    sentinel: &str,
) -> (String, Instant) {
    c.ingress("update", spec(svc, sentinel));
    let hash = ready(gw, "update", Some(previous)).await;
    let ready_at = Instant::now();
    let (status, body) = get_host(gw, "public", HOST, "/").await;
    let seen = echo(status, &body);
    assert_eq!(
        header_values(&seen, &WHO.to_ascii_lowercase()),
        [sentinel],
        "the first request after Ready"
    );
    assert_eq!(seen["suffix"], svc.name.as_str());
    (hash, ready_at)
}

/// One probe: when it was sent, and which (sentinel, backend) answered or why it failed.
struct Answer {
    sent: Instant,
    who: Result<(String, String), String>,
}

/// Knative's `checkOK`: GETs the host back to back on one keep-alive client until stopped.
struct Prober {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    fn start(gw: &Proc) -> Prober {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (answers, stop) = (Arc::clone(&answers), Arc::clone(&stop));
            let url = gw.url("public", "/");
            async move {
                let client = http1_client();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // A query that differs each time, as Knative's `timeQuery`.
                    let req = request_with(
                        Method::GET,
                        &format!("{url}?probe={n}"),
                        &[("host", HOST)],
                        empty(),
                    );
                    let sent = Instant::now();
                    let who = probe(&client, req).await;
                    answers.lock().push(Answer { sent, who });
                }
            }
        });
        Prober {
            answers,
            stop,
            task,
        }
    }

    /// Waits until a probe sent at or after `since` has been answered (or has failed).
    async fn answered_since(&self, since: Instant) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.answers.lock().iter().any(|a| a.sent >= since) {
            assert!(Instant::now() < deadline, "the prober stalled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn stop(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        within("the prober to stop", self.task).await.unwrap();
        Arc::try_unwrap(self.answers)
            .ok()
            .expect("the prober is done")
            .into_inner()
    }
}

async fn probe(
    client: &knoxy_tests::HttpClient,
    req: http::Request<knoxy_tests::Body>,
) -> Result<(String, String), String> {
    let response = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| "no response head in time".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| "body timed out".to_owned())?
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != StatusCode::OK {
        return Err(format!("{status}: {body}"));
    }
    let seen: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let sentinel = header_values(&seen, &WHO.to_ascii_lowercase()).join(",");
    let backend = seen["suffix"].as_str().unwrap_or_default().to_owned();
    Ok((sentinel, backend))
}
