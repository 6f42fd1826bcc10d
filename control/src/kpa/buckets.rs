//! The KPA's averaging windows (contract `autoscaler-local.md` §2.3, Knative's
//! `aggregation/bucketing.go`): one bucket a second over the window, values recorded in the
//! same second add up (the revision's total for that second), and the average counts only
//! the seconds of the current run of data (a young run is averaged over the seconds seen, a
//! trailing gap is not counted as zeros; interior gaps are).

/// How a window's buckets become one value (`metric-aggregation-algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// The mean of the run's seconds in the window.
    #[default]
    Linear,
    /// Recent seconds weigh more: bucket × m × (1 − m)^age, m = max(1 − 0.0001^(1/n), 0.2).
    WeightedExponential,
}

/// A window of one-second buckets. Times are whole seconds on the caller's clock.
#[derive(Debug, Clone)]
pub struct Buckets {
    values: Vec<f64>,
    algorithm: Algorithm,
    /// The first second of the current run of data, and the last second written.
    run: Option<(i64, i64)>,
}

impl Buckets {
    /// A window of `seconds` (at least 1) buckets.
    pub fn new(seconds: u32, algorithm: Algorithm) -> Buckets {
        Buckets {
            values: vec![0.0; seconds.max(1) as usize],
            algorithm,
            run: None,
        }
    }

    fn len(&self) -> i64 {
        self.values.len() as i64
    }

    fn slot(&self, second: i64) -> usize {
        second.rem_euclid(self.len()) as usize
    }

    /// Adds `value` to second `t`.
    pub fn record(&mut self, t: i64, value: f64) {
        let n = self.len();
        match self.run {
            // A run that ended a window or more ago: start over.
            Some((_, last)) if t - last >= n => self.start(t),
            None => self.start(t),
            // Older than the window: dropped.
            Some((_, last)) if last - t >= n => return,
            Some((first, last)) if t > last => {
                for s in last + 1..=t {
                    let slot = self.slot(s);
                    self.values[slot] = 0.0;
                }
                self.run = Some((first, t));
            }
            Some(_) => {}
        }
        let slot = self.slot(t);
        self.values[slot] += value;
    }

    fn start(&mut self, t: i64) {
        self.values.iter_mut().for_each(|v| *v = 0.0);
        self.run = Some((t, t));
    }

    /// The window's value at second `now`, rounded to 6 decimals: 0 when the last write is
    /// a window or more behind; None before any data.
    pub fn average(&self, now: i64) -> Option<f64> {
        let (first, last) = self.run?;
        let n = self.len();
        let gap = now - last;
        if gap >= n {
            return Some(0.0);
        }
        // The seconds still inside the window, newest first.
        let oldest = (now - n + 1).max(first);
        let seconds = (oldest..=last).rev();
        let value = match self.algorithm {
            Algorithm::Linear => {
                let sum: f64 = seconds.map(|s| self.values[self.slot(s)]).sum();
                let seen = (last - first + 1).min(n - gap.max(0));
                sum / seen as f64
            }
            Algorithm::WeightedExponential => {
                let m = (1.0 - 0.0001f64.powf(1.0 / n as f64)).max(0.2);
                seconds
                    .enumerate()
                    .map(|(k, s)| {
                        let age = gap.max(0) + k as i64;
                        self.values[self.slot(s)] * m * (1.0 - m).powi(age as i32)
                    })
                    .sum()
            }
        };
        Some((value * 1e6).round() / 1e6)
    }

    /// Seconds since the last write (None before any).
    pub fn idle_for(&self, now: i64) -> Option<i64> {
        self.run.map(|(_, last)| now - last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_run_is_averaged_over_the_seconds_seen() {
        let mut b = Buckets::new(60, Algorithm::Linear);
        b.record(100, 10.0);
        b.record(100, 5.0);
        assert_eq!(b.average(100), Some(15.0), "same-second values add up");
        b.record(101, 5.0);
        assert_eq!(b.average(101), Some(10.0));
    }

    #[test]
    fn interior_gaps_count_as_zeros_a_trailing_gap_does_not() {
        let mut b = Buckets::new(10, Algorithm::Linear);
        b.record(0, 6.0);
        b.record(2, 6.0);
        // Seconds 0, 1 (a gap: zero) and 2.
        assert_eq!(b.average(2), Some(4.0));
        // Two seconds later, nothing new: still over the 3 seconds of the run.
        assert_eq!(b.average(4), Some(4.0));
    }

    #[test]
    fn the_window_slides_and_a_window_of_silence_ends_the_run() {
        let mut b = Buckets::new(3, Algorithm::Linear);
        for t in 0..6 {
            b.record(t, t as f64);
        }
        // Seconds 3, 4, 5.
        assert_eq!(b.average(5), Some(4.0));
        // At 6 the window is 4..=6 with 6 unwritten: (4 + 5) / 2.
        assert_eq!(b.average(6), Some(4.5));
        assert_eq!(b.average(8), Some(0.0), "3 seconds since the last write");
        b.record(20, 1.0);
        assert_eq!(b.average(20), Some(1.0), "a new run");
        b.record(15, 100.0);
        assert_eq!(b.average(20), Some(1.0), "older than the window: dropped");
    }

    #[test]
    fn weighted_exponential_uses_knatives_decay() {
        // m for 6 buckets: 1 - 0.0001^(1/6) = 0.78456.
        let mut b = Buckets::new(6, Algorithm::WeightedExponential);
        b.record(10, 1.0);
        let m = 1.0 - 0.0001f64.powf(1.0 / 6.0);
        assert_eq!(b.average(10), Some((m * 1e6).round() / 1e6));
        assert_eq!(b.average(11), Some((m * (1.0 - m) * 1e6).round() / 1e6));
        // 60 buckets: the floor of 0.2.
        let mut b = Buckets::new(60, Algorithm::WeightedExponential);
        b.record(0, 10.0);
        assert_eq!(b.average(0), Some(2.0));
    }
}
