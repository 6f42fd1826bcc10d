//! The KPA's decider (contract `autoscaler-local.md` §2.4-2.5, Knative's
//! `scaling/autoscaler.go`): every tick it turns the stable and panic averages into a pod
//! count: the per-pod target, the rate limits, activation scale, panic mode (which never
//! scales down) and the scale-down delay; and the excess burst capacity that says whether the
//! activator stays in the path. Pure: the caller gives the time and the observations.

/// What a revision's annotations and `config-autoscaler` make of its scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Per-pod target t (T × utilisation, at least 0.01).
    pub target: f64,
    /// Total per-pod target T (before utilisation).
    pub total_target: f64,
    /// θ: panic when the panic count reaches θ × ready pods.
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    /// Target burst capacity: 0, a number of requests, or -1 (unlimited).
    pub target_burst_capacity: f64,
    /// Whole seconds.
    pub stable_window: u32,
    /// Whole seconds; 0: none.
    pub scale_down_delay: u32,
    /// A revision leaving zero gets at least this many pods (1: no effect).
    pub activation_scale: u32,
    /// False while the revision gets no traffic (`Unreachable`): no scale-down rate limit.
    pub reachable: bool,
}

/// One tick's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// Excess burst capacity: negative keeps the activator in the path.
    pub excess_burst_capacity: f64,
    pub panicking: bool,
}

/// A revision's decider, with its memory between ticks.
#[derive(Debug, Clone)]
pub struct Decider {
    spec: Spec,
    /// When panic began or was last extended (seconds), and the highest count since.
    panic: Option<(i64, u32)>,
    delay: Option<MaxWindow>,
}

impl Decider {
    /// A decider created at `now` with `ready` pods: more than one, and it starts panicking
    /// with their count as its memory (so it does not scale down at once).
    pub fn new(spec: Spec, now: i64, ready: u32) -> Decider {
        let delay = (spec.scale_down_delay > 0).then(|| MaxWindow::new(spec.scale_down_delay));
        Decider {
            panic: (ready > 1).then_some((now, ready)),
            spec,
            delay,
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// A changed spec (annotations or config): the memory stays, the delay window restarts
    /// when its length changes.
    pub fn update(&mut self, spec: Spec) {
        if spec.scale_down_delay != self.spec.scale_down_delay {
            self.delay = (spec.scale_down_delay > 0).then(|| MaxWindow::new(spec.scale_down_delay));
        }
        self.spec = spec;
    }

    /// The tick at second `now` with `ready` pods and the (stable, panic) averages; None
    /// when there is no data (nothing changes).
    pub fn tick(&mut self, now: i64, ready: u32, averages: Option<(f64, f64)>) -> Option<Decision> {
        let (stable, panic) = averages?;
        let spec = &self.spec;
        let r = f64::from(ready.max(1));
        let up = (spec.max_scale_up_rate * r).ceil();
        let down = if spec.reachable {
            (r / spec.max_scale_down_rate).floor()
        } else {
            0.0
        };
        let wanted_stable = (stable / spec.target).ceil();
        let wanted_panic = (panic / spec.target).ceil();
        let mut stable_count = count(wanted_stable.max(down).min(up));
        let mut panic_count = count(wanted_panic.max(down).min(up));
        if spec.activation_scale > 1 {
            if wanted_stable > 0.0 {
                stable_count = stable_count.max(spec.activation_scale);
            }
            if wanted_panic > 0.0 {
                panic_count = panic_count.max(spec.activation_scale);
            }
        }

        let over = wanted_panic / r >= spec.panic_threshold;
        self.panic = match self.panic {
            _ if over => Some((now, self.panic.map_or(0, |(_, most)| most))),
            Some((since, _)) if since + i64::from(spec.stable_window) < now => None,
            kept => kept,
        };
        let mut desired = stable_count;
        if let Some((since, most)) = self.panic {
            // Panic never scales down: the most asked for since it began.
            desired = stable_count.max(panic_count).max(most);
            self.panic = Some((since, desired));
        }
        if let (true, Some(window)) = (spec.reachable, &mut self.delay) {
            window.record(now, desired);
            desired = window.max(now);
        }

        let tbc = spec.target_burst_capacity;
        let excess_burst_capacity = if tbc == 0.0 {
            0.0
        } else if tbc < 0.0 {
            -1.0
        } else {
            (f64::from(ready) * spec.total_target - tbc - panic).floor()
        };
        Some(Decision {
            desired,
            excess_burst_capacity,
            panicking: self.panic.is_some(),
        })
    }
}

/// The highest count of the last `delay` seconds, in two-second slots (Knative's
/// `max.TimeWindow` behind `scale-down-delay`).
#[derive(Debug, Clone)]
struct MaxWindow {
    /// (slot, highest count recorded in it), a ring of ceil(delay / 2) slots.
    slots: Vec<(i64, u32)>,
}

impl MaxWindow {
    fn new(delay: u32) -> MaxWindow {
        MaxWindow {
            slots: vec![(i64::MIN, 0); delay.div_ceil(2).max(1) as usize],
        }
    }

    fn record(&mut self, now: i64, value: u32) {
        let slot = now.div_euclid(2);
        let n = self.slots.len() as i64;
        let entry = &mut self.slots[slot.rem_euclid(n) as usize];
        *entry = match *entry {
            (s, v) if s == slot => (s, v.max(value)),
            _ => (slot, value),
        };
    }

    fn max(&self, now: i64) -> u32 {
        let slot = now.div_euclid(2);
        let n = self.slots.len() as i64;
        self.slots
            .iter()
            .filter(|(s, _)| *s > slot - n && *s <= slot)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    }
}

/// A non-negative float count as pods.
fn count(pods: f64) -> u32 {
    if pods.is_nan() || pods <= 0.0 {
        0
    } else {
        pods.min(f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests;
