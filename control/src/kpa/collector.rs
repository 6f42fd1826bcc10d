//! What the autoscaler records for a revision each second (contract `autoscaler-local.md`
//! §2.2, Knative's `metrics/collector.go` and `stats_scraper.go`): a scrape of a sample of
//! its ready pods' queues, scaled up to all of them, and the activator's pushed stats, each
//! into the stable and the panic windows; requests the activator proxied count only there.

use super::annotations::Metric;
use super::buckets::{Algorithm, Buckets};

/// One revision's windows, for concurrency and for requests per second.
#[derive(Debug, Clone)]
pub struct Collector {
    concurrency: (Buckets, Buckets),
    rps: (Buckets, Buckets),
    stable_window: i64,
}

/// One observation, as a queue's or the activator's `Stat` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub average_concurrent_requests: f64,
    pub average_proxied_concurrent_requests: f64,
    pub request_count: f64,
    pub proxied_request_count: f64,
}

impl Collector {
    /// Windows of `stable` and `panic` seconds.
    pub fn new(stable: u32, panic: u32, algorithm: Algorithm) -> Collector {
        let pair = || {
            (
                Buckets::new(stable, algorithm),
                Buckets::new(panic, algorithm),
            )
        };
        Collector {
            concurrency: pair(),
            rps: pair(),
            stable_window: i64::from(stable),
        }
    }

    /// Records a revision-wide sample at second `now`: what the queues saw of requests that
    /// did not come through the activator (it reports those itself), or the activator's.
    pub fn record(&mut self, now: i64, s: Sample) {
        let concurrency = s.average_concurrent_requests - s.average_proxied_concurrent_requests;
        let rps = s.request_count - s.proxied_request_count;
        self.concurrency.0.record(now, concurrency);
        self.concurrency.1.record(now, concurrency);
        self.rps.0.record(now, rps);
        self.rps.1.record(now, rps);
    }

    /// (stable, panic) averages of `metric` at `now`; None ("no data") before any sample,
    /// or when the last is more than a stable window old.
    pub fn averages(&self, now: i64, metric: Metric) -> Option<(f64, f64)> {
        let (stable, panic) = match metric {
            Metric::Concurrency => &self.concurrency,
            Metric::Rps => &self.rps,
        };
        if stable.idle_for(now)? > self.stable_window {
            return None;
        }
        Some((stable.average(now)?, panic.average(now)?))
    }
}

/// How many of `ready` pods are scraped each second: all up to 3, then
/// ceil(N·X / (N + X − 1)) with X = 15.3664 (Knative's sample size for a 95% confidence).
pub fn sample_size(ready: usize) -> usize {
    const X: f64 = 15.3664;
    if ready <= 3 {
        return ready;
    }
    let n = ready as f64;
    (n * X / (n + X - 1.0)).ceil() as usize
}

/// The sum of the scraped pods' samples, scaled to all `ready` pods.
pub fn scaled(samples: &[Sample], ready: usize) -> Option<Sample> {
    if samples.is_empty() || ready == 0 {
        return None;
    }
    let factor = ready as f64 / samples.len() as f64;
    let sum = samples.iter().fold(Sample::default(), |a, s| Sample {
        average_concurrent_requests: a.average_concurrent_requests + s.average_concurrent_requests,
        average_proxied_concurrent_requests: a.average_proxied_concurrent_requests
            + s.average_proxied_concurrent_requests,
        request_count: a.request_count + s.request_count,
        proxied_request_count: a.proxied_request_count + s.proxied_request_count,
    });
    Some(Sample {
        average_concurrent_requests: sum.average_concurrent_requests * factor,
        average_proxied_concurrent_requests: sum.average_proxied_concurrent_requests * factor,
        request_count: sum.request_count * factor,
        proxied_request_count: sum.proxied_request_count * factor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sizes_are_knatives() {
        for (ready, n) in [
            (0, 0),
            (1, 1),
            (3, 3),
            (5, 4),
            (10, 7),
            (100, 14),
            (1000, 16),
        ] {
            assert_eq!(sample_size(ready), n, "{ready} pods");
        }
    }

    #[test]
    fn a_sample_of_pods_stands_for_all() {
        let one = Sample {
            average_concurrent_requests: 2.0,
            request_count: 10.0,
            ..Sample::default()
        };
        let all = scaled(&[one, one], 6).expect("samples");
        assert_eq!(
            (all.average_concurrent_requests, all.request_count),
            (12.0, 60.0)
        );
        assert_eq!(scaled(&[], 6), None);
    }

    #[test]
    fn proxied_requests_count_once_and_same_second_samples_add_up() {
        let mut c = Collector::new(60, 6, Algorithm::Linear);
        assert_eq!(c.averages(0, Metric::Concurrency), None, "no data yet");
        // The queues saw 5 in flight, 3 of them through the activator, which reports its 4.
        c.record(
            10,
            Sample {
                average_concurrent_requests: 5.0,
                average_proxied_concurrent_requests: 3.0,
                request_count: 50.0,
                proxied_request_count: 30.0,
            },
        );
        c.record(
            10,
            Sample {
                average_concurrent_requests: 4.0,
                request_count: 40.0,
                ..Sample::default()
            },
        );
        assert_eq!(c.averages(10, Metric::Concurrency), Some((6.0, 6.0)));
        assert_eq!(c.averages(10, Metric::Rps), Some((60.0, 60.0)));
        // The panic window forgets first; a stable window later, 0; after that, no data.
        assert_eq!(c.averages(20, Metric::Concurrency), Some((6.0, 0.0)));
        assert_eq!(c.averages(70, Metric::Concurrency), Some((0.0, 0.0)));
        assert_eq!(c.averages(71, Metric::Concurrency), None);
        // Idle seconds recorded as such bring the average down to 0 over the window.
        for t in 11..=69 {
            c.record(t, Sample::default());
        }
        assert_eq!(c.averages(69, Metric::Concurrency), Some((0.1, 0.0)));
        c.record(70, Sample::default());
        assert_eq!(c.averages(70, Metric::Concurrency), Some((0.0, 0.0)));
    }
}
