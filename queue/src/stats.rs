//! Autoscaler stats (contract §8.1): time-averaged concurrency and request rates over 1 s
//! windows, served on :9090 as the `metrics.Stat` protobuf the autoscaler scrapes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::time::Instant;

/// `reportingPeriod`: one report a second; a scrape returns the latest.
pub const REPORTING_PERIOD: Duration = Duration::from_secs(1);

/// One report, as the fields of `metrics.Stat` (`S/pkg/autoscaler/metrics/stat.proto`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub average_concurrent_requests: f64,
    pub average_proxied_concurrent_requests: f64,
    pub request_count: f64,
    pub proxied_request_count: f64,
    pub process_uptime: f64,
}

pub struct Stats {
    pod: String,
    window: Mutex<Window>,
    latest: Mutex<Report>,
}

struct Window {
    started: Instant,
    last_change: Instant,
    concurrency: u32,
    proxied_concurrency: u32,
    /// Σ concurrency × seconds since `started`.
    weighted: f64,
    proxied_weighted: f64,
    requests: u32,
    proxied_requests: u32,
}

/// One counted request: concurrency goes down when it drops (the response was relayed or aborted).
pub struct InFlight {
    stats: Arc<Stats>,
    proxied: bool,
}

impl Stats {
    pub fn new(pod: String) -> Arc<Stats> {
        let now = Instant::now();
        Arc::new(Stats {
            pod,
            window: Mutex::new(Window {
                started: now,
                last_change: now,
                concurrency: 0,
                proxied_concurrency: 0,
                weighted: 0.0,
                proxied_weighted: 0.0,
                requests: 0,
                proxied_requests: 0,
            }),
            latest: Mutex::new(Report::default()),
        })
    }

    /// A request entered the proxy handler; `proxied` is `K-Proxy-Request: activator`.
    pub fn enter(self: &Arc<Self>, proxied: bool) -> InFlight {
        let mut w = self.window.lock();
        w.advance(Instant::now());
        w.concurrency += 1;
        w.requests += 1;
        if proxied {
            w.proxied_concurrency += 1;
            w.proxied_requests += 1;
        }
        InFlight {
            stats: Arc::clone(self),
            proxied,
        }
    }

    /// Closes the window ending `now` into a report; concurrency carries over.
    pub fn tick(&self, now: Instant, uptime: Duration) {
        let report = {
            let mut w = self.window.lock();
            w.advance(now);
            let secs = now.duration_since(w.started).as_secs_f64();
            let period = REPORTING_PERIOD.as_secs_f64();
            let avg = |sum: f64| if secs > 0.0 { sum / secs } else { 0.0 };
            let report = Report {
                average_concurrent_requests: avg(w.weighted),
                average_proxied_concurrent_requests: avg(w.proxied_weighted),
                request_count: f64::from(w.requests) / period,
                proxied_request_count: f64::from(w.proxied_requests) / period,
                process_uptime: uptime.as_secs_f64().floor(),
            };
            w.started = now;
            w.weighted = 0.0;
            w.proxied_weighted = 0.0;
            w.requests = 0;
            w.proxied_requests = 0;
            report
        };
        *self.latest.lock() = report;
    }

    pub fn latest(&self) -> Report {
        self.latest.lock().clone()
    }

    /// The latest report as a proto3 `metrics.Stat` (zero fields omitted, ascending order).
    pub fn protobuf(&self) -> Bytes {
        let r = self.latest();
        let mut buf = BytesMut::with_capacity(64 + self.pod.len());
        if !self.pod.is_empty() {
            buf.extend_from_slice(&[0x0a]);
            crate::readiness::check::put_varint(&mut buf, self.pod.len() as u64);
            buf.extend_from_slice(self.pod.as_bytes());
        }
        for (field, v) in [
            (2u8, r.average_concurrent_requests),
            (3, r.average_proxied_concurrent_requests),
            (4, r.request_count),
            (5, r.proxied_request_count),
            (6, r.process_uptime),
        ] {
            if v != 0.0 {
                buf.extend_from_slice(&[(field << 3) | 1]);
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        buf.freeze()
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

impl Window {
    fn advance(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.weighted += f64::from(self.concurrency) * dt;
        self.proxied_weighted += f64::from(self.proxied_concurrency) * dt;
        self.last_change = now;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut w = self.stats.window.lock();
        w.advance(Instant::now());
        w.concurrency -= 1;
        if self.proxied {
            w.proxied_concurrency -= 1;
        }
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
        *stats.latest.lock() = Report {
            process_uptime: 14.0,
            ..Report::default()
        };
        let mut want = b"\x0a\x05pod-1\x31".to_vec();
        want.extend_from_slice(&14.0f64.to_le_bytes());
        assert_eq!(&stats.protobuf()[..], &want[..]);
    }
}
