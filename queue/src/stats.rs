//! Autoscaler stats (contract §8.1): time-averaged concurrency and request rates over 1 s
//! windows, served on :9090 as the `metrics.Stat` protobuf the autoscaler scrapes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use knoxy_concurrency::{Stat, Window};
use parking_lot::Mutex;
use prost::Message;
use tokio::time::Instant;

/// `reportingPeriod`: one report a second; a scrape returns the latest.
pub const REPORTING_PERIOD: Duration = Duration::from_secs(1);

pub struct Stats {
    pod: String,
    window: Mutex<Window>,
    /// The latest report, as the autoscaler reads it.
    latest: Mutex<Stat>,
}

/// One counted request: concurrency goes down when it drops (the response was relayed or aborted).
pub struct InFlight {
    stats: Arc<Stats>,
    proxied: bool,
}

impl Stats {
    pub fn new(pod: String) -> Arc<Stats> {
        Arc::new(Stats {
            window: Mutex::new(Window::new(Instant::now().into_std())),
            latest: Mutex::new(Stat {
                pod_name: pod.clone(),
                ..Stat::default()
            }),
            pod,
        })
    }

    /// A request entered the proxy handler; `proxied` is `K-Proxy-Request: activator`.
    pub fn enter(self: &Arc<Self>, proxied: bool) -> InFlight {
        self.window.lock().enter(Instant::now().into_std(), proxied);
        InFlight {
            stats: Arc::clone(self),
            proxied,
        }
    }

    /// Closes the window ending `now` into a report; concurrency carries over.
    pub fn tick(&self, now: Instant, uptime: Duration) {
        let closed = self.window.lock().close(now.into_std());
        let per_second = |n: u32| f64::from(n) / REPORTING_PERIOD.as_secs_f64();
        *self.latest.lock() = Stat {
            pod_name: self.pod.clone(),
            average_concurrent_requests: closed.concurrency,
            average_proxied_concurrent_requests: closed.proxied_concurrency,
            request_count: per_second(closed.requests),
            proxied_request_count: per_second(closed.proxied_requests),
            process_uptime: uptime.as_secs_f64().floor(),
            timestamp: 0,
        };
    }

    pub fn latest(&self) -> Stat {
        self.latest.lock().clone()
    }

    /// The latest report as a proto3 `metrics.Stat`.
    pub fn protobuf(&self) -> Bytes {
        self.latest.lock().encode_to_vec().into()
    }

    /// The same report in Prometheus text, under the queue-proxy's former metric names.
    pub fn prometheus_text(&self, labels: &str) -> String {
        let r = self.latest();
        let mut out = String::new();
        for (name, help, v) in [
            (
                "queue_average_concurrent_requests",
                "Average number of concurrent requests in the last window",
                r.average_concurrent_requests,
            ),
            (
                "queue_average_proxied_concurrent_requests",
                "Average number of concurrent requests proxied by the activator in the last window",
                r.average_proxied_concurrent_requests,
            ),
            (
                "queue_requests_per_second",
                "Requests per second in the last window",
                r.request_count,
            ),
            (
                "queue_proxied_operations_per_second",
                "Requests proxied by the activator per second in the last window",
                r.proxied_request_count,
            ),
            (
                "process_uptime",
                "Seconds since the queue started",
                r.process_uptime,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}"
            );
        }
        out
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now().into_std();
        self.stats.window.lock().leave(now, self.proxied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn overlapping_requests_average_over_the_window() {
        let stats = Stats::new("pod-1".into());
        let start = Instant::now();
        let a = stats.enter(false);
        let b = stats.enter(true);
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(a);
        tokio::time::advance(Duration::from_millis(500)).await;
        stats.tick(Instant::now(), start.elapsed());
        let r = stats.latest();
        assert!((r.average_concurrent_requests - 1.5).abs() < 1e-9, "{r:?}");
        assert!(
            (r.average_proxied_concurrent_requests - 1.0).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!((r.request_count, r.proxied_request_count), (2.0, 1.0));
        // Concurrency carries over into the next window; counts do not.
        tokio::time::advance(Duration::from_secs(1)).await;
        stats.tick(Instant::now(), start.elapsed());
        let r = stats.latest();
        assert_eq!(
            (
                r.average_concurrent_requests,
                r.request_count,
                r.process_uptime
            ),
            (1.0, 0.0, 2.0)
        );
        drop(b);
    }

    #[test]
    fn protobuf_omits_zero_fields_and_orders_them() {
        let stats = Stats::new("pod-1".into());
        stats.latest.lock().process_uptime = 14.0;
        let mut want = b"\x0a\x05pod-1\x31".to_vec();
        want.extend_from_slice(&14.0f64.to_le_bytes());
        assert_eq!(&stats.protobuf()[..], &want[..]);
    }
}
