//! What the KPA applies from the decider's count (contract `autoscaler-local.md` §2.6, §3.1;
//! Knative's `kpa/scaler.go` and `kpa.go`): the bounds (min, max, initial scale until the
//! revision first reached it), scale to zero after the grace period or the pod retention
//! period, whether the activator is in the path (the ServerlessService's mode), and the
//! PodAutoscaler's `Active` condition. Pure: the caller gives the time; a returned
//! `recheck_at` asks for the next reconcile.

use super::annotations::Bounds;

/// The PodAutoscaler's `Active` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Active {
    /// `True`: enough pods are ready.
    Ready,
    /// `Unknown` `Queued`: "Requests to the target are being buffered as resources are provisioned."
    Queued,
    /// `False` `NoTraffic`: "The target is not receiving traffic."
    NoTraffic,
    /// `False` `TimedOut`: "The target could not be activated." (activating for longer
    /// than the progress deadline and 30 s).
    TimedOut,
}

/// What one reconcile observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub now: i64,
    /// The decider's count; None: no data yet.
    pub want: Option<u32>,
    /// The decider's excess burst capacity (negative: the activator stays in the path).
    pub excess_burst_capacity: f64,
    pub ready: u32,
    /// False for a revision no route sends traffic to.
    pub reachable: bool,
}

/// What the KPA does now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The replicas to run; None: leave them as they are.
    pub replicas: Option<u32>,
    /// Reconcile again at this second (a grace period, a retention period, a stable window).
    pub recheck_at: Option<i64>,
    pub active: Active,
    /// The activator is in the path (SKS `Proxy`), else pods are served directly (`Serve`).
    pub proxy: bool,
}

/// A revision's PodAutoscaler state between reconciles.
#[derive(Debug, Clone, Default)]
pub struct Scaler {
    /// The initial scale was reached once (`ScaleTargetInitialized`).
    initialized: bool,
    /// Since when the PA has been active (for the hold at 1 of a young revision).
    active_since: Option<i64>,
    /// Since when the PA has been inactive (`Active=False`).
    inactive_since: Option<i64>,
    /// Since when the activator has been in the path.
    proxy_since: Option<i64>,
    /// The last count applied.
    replicas: Option<u32>,
    /// Since when the PA has been activating (`Active=Unknown`: fewer pods ready than it needs).
    activating_since: Option<i64>,
}

/// A stuck activation is given up this long after the progress deadline (Knative's
/// `activationTimeoutBuffer`).
const ACTIVATION_BUFFER: i64 = 30;

/// Knative re-checks an inactive revision whose activator was already in the path after 3 s.
const INACTIVE_RECHECK: i64 = 3;

impl Scaler {
    /// A new revision's PA at `now`; once its first pod is ready it holds that pod for a
    /// stable window even without traffic.
    pub fn new(now: i64) -> Scaler {
        Scaler {
            active_since: Some(now),
            ..Scaler::default()
        }
    }

    pub fn replicas(&self) -> Option<u32> {
        self.replicas
    }

    pub fn reconcile(&mut self, o: Observed, b: &Bounds) -> Outcome {
        let now = o.now;
        let inactive = self.inactive_since.is_some();
        // The activator is in the path at zero, while the burst capacity falls short (as it
        // does for a new revision, whose decider starts short), and while an inactive
        // revision has no decision yet.
        let proxy = match o.want {
            Some(want) => want == 0 || o.excess_burst_capacity < 0.0,
            None => inactive || o.excess_burst_capacity < 0.0,
        };
        match (proxy, self.proxy_since) {
            (true, None) => self.proxy_since = Some(now),
            (false, Some(_)) => self.proxy_since = None,
            _ => {}
        }

        let mut min = if o.reachable { b.min } else { 0 };
        if !self.initialized && b.initial > 1 && o.reachable {
            min = min.max(b.initial);
        }
        // The initial scale is reached once enough pods are ready (`ScaleTargetInitialized`).
        if !self.initialized && o.ready >= min.max(b.initial).max(1) {
            self.initialized = true;
            // Its `Active` turns True now: the hold of a young revision counts from here.
            self.active_since = Some(now);
        }
        let bounded = |x: u32| {
            let x = x.max(min);
            if b.max > 0 {
                x.min(b.max)
            } else {
                x
            }
        };
        let mut recheck_at = None;
        let replicas = match o.want {
            // No data: nothing is applied (a revision never scaled yet starts at its
            // initial scale).
            None => self.replicas.is_none().then(|| bounded(b.initial)),
            Some(want) => match bounded(want) {
                0 => self.toward_zero(now, o, b, &mut recheck_at),
                n => {
                    if self.inactive_since.take().is_some() || self.active_since.is_none() {
                        self.active_since = Some(now);
                    }
                    Some(n)
                }
            },
        };
        if let Some(n) = replicas {
            self.replicas = Some(n);
        }

        let m = if self.initialized {
            min.max(1)
        } else {
            min.max(b.initial)
        };
        let want_some = self.replicas.unwrap_or(0) > 0;
        let mut active = if !want_some || m == 0 {
            Active::NoTraffic
        } else if o.ready < m {
            Active::Queued
        } else {
            Active::Ready
        };
        let mut replicas = replicas;
        if active == Active::Queued {
            // Activating: given up, to zero, once stuck past the deadline (§3.3).
            let since = *self.activating_since.get_or_insert(now);
            let give_up = since + secs(b.progress_deadline.std().as_secs()) + ACTIVATION_BUFFER;
            if now > give_up {
                replicas = Some(0);
                self.replicas = Some(0);
                self.activating_since = None;
                self.inactive_since = Some(now);
                self.active_since = None;
                active = Active::TimedOut;
            } else {
                recheck_at = Some(recheck_at.map_or(give_up + 1, |r: i64| r.min(give_up + 1)));
            }
        } else {
            self.activating_since = None;
        }
        Outcome {
            replicas,
            recheck_at,
            active,
            proxy: self.proxy_since.is_some(),
        }
    }

    /// The decider (within its bounds) wants no pod (§3.1).
    fn toward_zero(
        &mut self,
        now: i64,
        o: Observed,
        b: &Bounds,
        recheck_at: &mut Option<i64>,
    ) -> Option<u32> {
        if !b.scale_to_zero {
            return Some(1);
        }
        if !self.initialized {
            // Still activating (no pod ready yet): the pod on its way is kept (Knative
            // gives up only after the progress deadline).
            return Some(1);
        }
        let stable = i64::from(b.stable_window);
        if let Some(since) = self.active_since {
            if self.inactive_since.is_none() && now < since + stable {
                // A revision active for less than a window holds one pod until then.
                *recheck_at = Some(since + stable);
                return Some(1);
            }
        }
        let Some(inactive_since) = self.inactive_since else {
            // First it goes inactive, the activator in the path; zero comes after.
            let was_proxy = self.proxy_since.is_some_and(|p| p < now);
            self.inactive_since = Some(now);
            self.active_since = None;
            self.proxy_since.get_or_insert(now);
            *recheck_at = Some(if was_proxy {
                now + INACTIVE_RECHECK
            } else {
                now
            });
            return None;
        };
        let retention = secs(b.retention.std().as_secs());
        let grace = secs(b.grace.std().as_secs());
        let inactive_for = now - inactive_since;
        let proxy_for = self.proxy_since.map_or(0, |p| now - p);
        let retention = if o.reachable { retention } else { 0 };
        if inactive_for >= grace.max(retention) {
            Some(0)
        } else if inactive_for < retention {
            *recheck_at = Some(inactive_since + retention);
            None
        } else if proxy_for >= grace {
            Some(0)
        } else {
            *recheck_at = Some(now + (grace - proxy_for));
            None
        }
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
