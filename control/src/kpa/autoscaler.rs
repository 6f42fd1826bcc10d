//! One revision's KPA, end to end on the caller's clock (contract `autoscaler-local.md`
//! §2.1, §3.2): samples go into the collector each second, the decider ticks every 2 s (and
//! at once when the activator reports demand for a revision at zero), and the scaler turns
//! the decision into replicas. `knoxy local` drives one per revision.

use super::annotations::{Bounds, Metric, Scaling};
use super::collector::{Collector, Sample};
use super::config::AutoscalerConfig;
use super::decider::{Decider, Decision};
use super::scaler::{Observed, Outcome, Scaler};

/// The decider's period.
pub const TICK: i64 = 2;

pub struct RevisionScaler {
    metric: Metric,
    bounds: Bounds,
    collector: Collector,
    decider: Decider,
    scaler: Scaler,
    /// The last valid decision (none yet: Knative's desired -1).
    decided: Option<Decision>,
    next_tick: i64,
    /// When the scaler asked to look again.
    recheck_at: Option<i64>,
    /// The (stable, panic) averages of the last tick, and its outcome (for the operator).
    observed: Option<(f64, f64)>,
    outcome: Option<Outcome>,
}

impl RevisionScaler {
    /// A revision's KPA, created at `now` with `ready` pods.
    pub fn new(
        scaling: &Scaling,
        cc: u32,
        config: &AutoscalerConfig,
        now: i64,
        ready: u32,
    ) -> RevisionScaler {
        let bounds = scaling.bounds(config);
        let algorithm = scaling.algorithm.unwrap_or_default();
        RevisionScaler {
            metric: scaling.metric(),
            collector: Collector::new(bounds.stable_window, bounds.panic_window, algorithm),
            decider: Decider::new(scaling.spec(cc, config, true), now, ready),
            scaler: Scaler::new(now),
            bounds,
            decided: None,
            next_tick: now,
            recheck_at: None,
            observed: None,
            outcome: None,
        }
    }

    /// The revision's queues, scraped at second `now` (already scaled to all ready pods).
    pub fn scraped(&mut self, now: i64, sample: Sample) {
        self.collector.record(now, sample);
    }

    /// The activator's report for this revision: recorded, and if the revision is at zero
    /// and the report shows demand, the decider ticks at once (Knative's poke).
    pub fn activator_reported(&mut self, now: i64, sample: Sample) {
        self.collector.record(now, sample);
        let at_zero = self.decided.is_some_and(|d| d.desired == 0);
        if at_zero && sample.average_concurrent_requests != 0.0 {
            self.next_tick = now;
        }
    }

    /// The next second something is due (a tick or a recheck).
    pub fn due_at(&self) -> i64 {
        self.recheck_at
            .map_or(self.next_tick, |r| r.min(self.next_tick))
    }

    /// Runs what is due at `now` with `ready` pods: the decider's tick (if due), then the
    /// scaler. None when nothing was due.
    pub fn run(&mut self, now: i64, ready: u32, reachable: bool) -> Option<Outcome> {
        if now < self.due_at() {
            return None;
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            let averages = self.collector.averages(now, self.metric);
            self.observed = averages;
            if let Some(decision) = self.decider.tick(now, ready, averages) {
                self.decided = Some(decision);
            }
        }
        let outcome = self.scaler.reconcile(
            Observed {
                now,
                want: self.decided.map(|d| d.desired),
                excess_burst_capacity: self.decided.map_or(-1.0, |d| d.excess_burst_capacity),
                ready,
                reachable,
            },
            &self.bounds,
        );
        self.recheck_at = outcome.recheck_at;
        self.outcome = Some(outcome);
        Some(outcome)
    }

    /// The last decision (for the operator view).
    pub fn decided(&self) -> Option<Decision> {
        self.decided
    }

    /// The metric scaled on and its (stable, panic) averages at the last tick.
    pub fn observed(&self) -> (Metric, Option<(f64, f64)>) {
        (self.metric, self.observed)
    }

    /// The last reconcile's outcome (`Active`, whether the activator is in the path).
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Its scale at creation (`initial-scale`).
    pub fn initial_scale(&self) -> u32 {
        self.bounds.initial
    }

    /// Target burst capacity -1: the activator is always in the path and reports every
    /// request, so the queues are never scraped (§2.2).
    pub fn activator_only(&self) -> bool {
        self.decider.spec().target_burst_capacity < 0.0
    }

    /// The replicas last applied.
    pub fn replicas(&self) -> Option<u32> {
        self.scaler.replicas()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn seed(extra: &[(&str, &str)]) -> Scaling {
        let mut a: BTreeMap<String, String> =
            [("target", "10"), ("target-utilization-percentage", "60")]
                .iter()
                .chain(extra)
                .map(|(k, v)| (format!("autoscaling.knative.dev/{k}"), (*v).to_owned()))
                .collect();
        a.insert("unrelated".into(), "x".into());
        Scaling::from_annotations(&a, &AutoscalerConfig::default(), "metadata.annotations")
            .expect("valid")
    }

    /// Runs second by second from `from` to `to`: `pods` follow the replicas at once (a
    /// local instance starts in well under a second), each second records `load(t)` in
    /// flight as the queues see it; returns the replicas at each second.
    fn simulate(
        kpa: &mut RevisionScaler,
        from: i64,
        to: i64,
        load: impl Fn(i64) -> f64,
        pods: &mut u32,
    ) -> Vec<u32> {
        let mut seen = Vec::new();
        for t in from..to {
            if *pods > 0 {
                kpa.scraped(
                    t,
                    Sample {
                        average_concurrent_requests: load(t),
                        ..Sample::default()
                    },
                );
            } else if load(t) > 0.0 {
                // At zero the activator holds the requests and reports them.
                kpa.activator_reported(
                    t,
                    Sample {
                        average_concurrent_requests: load(t),
                        request_count: 1.0,
                        ..Sample::default()
                    },
                );
            }
            if let Some(out) = kpa.run(t, *pods, true) {
                if let Some(n) = out.replicas {
                    *pods = n;
                }
            }
            seen.push(*pods);
        }
        seen
    }

    #[test]
    fn twenty_clients_settle_at_four_then_the_revision_goes_to_zero() {
        let config = AutoscalerConfig::default();
        let mut pods = 1;
        let mut kpa = RevisionScaler::new(&seed(&[]), 0, &config, 0, pods);
        let busy = simulate(&mut kpa, 0, 120, |_| 20.0, &mut pods);
        assert_eq!(busy[4..], [4; 116], "4 within the first ticks: {busy:?}");
        // The load stops at 120: zero a stable window (and a tick, and 3 s) later.
        let idle = simulate(&mut kpa, 120, 260, |_| 0.0, &mut pods);
        let zero_at = 120 + idle.iter().position(|&n| n == 0).expect("to zero") as i64;
        assert!((180..=190).contains(&zero_at), "zero at {zero_at}s");
    }

    #[test]
    fn max_scale_holds_fifty_clients_at_three() {
        let config = AutoscalerConfig::default();
        let mut pods = 1;
        let mut kpa = RevisionScaler::new(&seed(&[("max-scale", "3")]), 0, &config, 0, pods);
        let seen = simulate(&mut kpa, 0, 60, |_| 50.0, &mut pods);
        assert!(seen[4..].iter().all(|&n| n == 3), "{seen:?}");
        assert_eq!(
            kpa.decided().map(|d| d.desired),
            Some(9),
            "the decider asks for 9"
        );
    }

    #[test]
    fn unlimited_burst_capacity_means_the_activator_alone_reports() {
        let config = AutoscalerConfig::default();
        let kpa = RevisionScaler::new(&seed(&[]), 0, &config, 0, 1);
        assert!(!kpa.activator_only());
        let all = RevisionScaler::new(&seed(&[("target-burst-capacity", "-1")]), 0, &config, 0, 1);
        assert!(all.activator_only());
        let lazy = RevisionScaler::new(&seed(&[("initial-scale", "3")]), 0, &config, 0, 1);
        assert_eq!(lazy.initial_scale(), 3);
    }

    #[test]
    fn a_request_at_zero_gets_a_pod_at_once() {
        let config = AutoscalerConfig::default();
        let mut pods = 1;
        let mut kpa = RevisionScaler::new(&seed(&[]), 0, &config, 0, pods);
        simulate(&mut kpa, 0, 10, |_| 1.0, &mut pods);
        simulate(&mut kpa, 10, 200, |_| 0.0, &mut pods);
        assert_eq!(pods, 0);
        // A request arrives at 301 (the activator reports it): a pod in the same second.
        let seen = simulate(&mut kpa, 301, 303, |_| 1.0, &mut pods);
        assert_eq!(seen[0], 1, "{seen:?}");
    }
}
