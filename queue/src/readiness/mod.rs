//! Readiness of the user container, checked on demand as Knative's queue does (contract §6.2):
//! no background loop; callers arriving during a run share its result.

pub mod check;
pub mod spec;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

use spec::ProbeSpec;

/// Aggressive mode: one attempt every 50 ms, each bounded by 100 ms, for at most 10 s.
const AGGRESSIVE_INTERVAL: Duration = Duration::from_millis(50);
const AGGRESSIVE_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
const AGGRESSIVE_DEADLINE: Duration = Duration::from_secs(10);

pub struct Readiness {
    probes: Vec<Probe>,
    http2_auto: bool,
    /// The run in progress, if any; late callers subscribe to its result.
    running: Mutex<Option<watch::Receiver<Option<bool>>>>,
}

struct Probe {
    spec: ProbeSpec,
    /// Consecutive successes; lives for the process, only a failure resets it (contract §6.2).
    successes: AtomicU32,
}

impl Readiness {
    pub fn new(probes: Vec<ProbeSpec>, http2_auto: bool) -> Arc<Readiness> {
        let probes = probes
            .into_iter()
            .map(|spec| Probe {
                spec,
                successes: AtomicU32::new(0),
            })
            .collect();
        Arc::new(Readiness {
            probes,
            http2_auto,
            running: Mutex::new(None),
        })
    }

    /// Runs every probe (in parallel) or joins the run in progress; true when all pass.
    pub async fn check(self: &Arc<Self>) -> bool {
        if self.probes.is_empty() {
            return true;
        }
        let mut rx = {
            let mut running = self.running.lock();
            match running.as_ref() {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    *running = Some(rx.clone());
                    let this = Arc::clone(self);
                    tokio::spawn(async move {
                        let ok = this.run_all().await;
                        *this.running.lock() = None;
                        let _ = tx.send(Some(ok));
                    });
                    rx
                }
            }
        };
        let passed = rx
            .wait_for(Option::is_some)
            .await
            .map(|v| v.unwrap_or(false))
            .unwrap_or(false);
        passed
    }

    async fn run_all(self: &Arc<Self>) -> bool {
        let tasks: Vec<_> = (0..self.probes.len())
            .map(|i| {
                let this = Arc::clone(self);
                tokio::spawn(async move { this.run_one(&this.probes[i]).await })
            })
            .collect();
        let mut ok = true;
        for task in tasks {
            ok &= task.await.unwrap_or(false);
        }
        ok
    }

    async fn run_one(&self, probe: &Probe) -> bool {
        if !probe.spec.aggressive {
            // Standard mode: one attempt; the kubelet applies the thresholds.
            return match timeout(
                probe.spec.timeout,
                check::attempt(&probe.spec.handler, self.http2_auto),
            )
            .await
            {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    eprintln!("{e}");
                    false
                }
                Err(_) => {
                    eprintln!("probe timed out after {:?}", probe.spec.timeout);
                    false
                }
            };
        }
        let deadline = Instant::now() + AGGRESSIVE_DEADLINE;
        let mut failures = 0u32;
        let mut last_error = String::new();
        loop {
            let started = Instant::now();
            match timeout(
                AGGRESSIVE_ATTEMPT_TIMEOUT,
                check::attempt(&probe.spec.handler, self.http2_auto),
            )
            .await
            {
                Ok(Ok(())) => {
                    let n = probe.successes.fetch_add(1, Ordering::Relaxed) + 1;
                    if n >= probe.spec.success_threshold {
                        return true;
                    }
                }
                outcome => {
                    probe.successes.store(0, Ordering::Relaxed);
                    failures += 1;
                    last_error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "context deadline exceeded".to_owned(),
                    };
                }
            }
            let next = started + AGGRESSIVE_INTERVAL;
            if next >= deadline {
                eprintln!("aggressive probe error (failed {failures} times): {last_error}");
                return false;
            }
            sleep_until_at_least(next).await;
        }
    }
}

async fn sleep_until_at_least(at: Instant) {
    let now = Instant::now();
    if at > now {
        sleep(at - now).await;
    }
}
