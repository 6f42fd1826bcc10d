//! Gradual rollout (contract `autoscaler-local.md` §4.4, §5 item 21): when a
//! `latestRevision` target's revision changes and a rollout duration is set, the new
//! revision starts at 1 %, taken from the newest older revision with traffic, and then takes
//! traffic in even steps from the oldest, until it has the target's whole percent. Knative
//! computes the steps when the KIngress turns Ready: f = max(1 s, ceil(ready - start)),
//! d = max(1 s, duration - f), steps = min(percent - 1, max(1, d / f)), step size =
//! round((percent - 1) / steps), one step every d / steps. Pure: the caller gives the time.

/// One `latestRevision` target's traffic over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The target's percent.
    pub percent: i64,
    /// (revision, percent), oldest first; the last is the newest.
    pub revisions: Vec<(String, i64)>,
    /// Percent moved per step, and seconds between steps.
    step: i64,
    interval: f64,
    next_at: f64,
}

impl Rollout {
    /// A target whose traffic all goes to `revision`.
    pub fn settled(revision: &str, percent: i64) -> Rollout {
        Rollout {
            percent,
            revisions: vec![(revision.to_owned(), percent)],
            step: 0,
            interval: 0.0,
            next_at: f64::INFINITY,
        }
    }

    /// The revision that ends up with all the traffic.
    pub fn newest(&self) -> &str {
        self.revisions.last().map_or("", |(r, _)| r.as_str())
    }

    /// Still moving traffic.
    pub fn in_progress(&self) -> bool {
        self.revisions.len() > 1
    }

    /// `revision` became the target's latest ready at `start`, and its KIngress turned
    /// Ready at `ready` (seconds): it gets 1 % now and the rest over `duration` seconds. A
    /// target of 1 % or less, or no duration, switches at once.
    pub fn begin(&mut self, revision: &str, duration: f64, start: f64, ready: f64) {
        if self.percent <= 1 || duration <= 0.0 {
            *self = Rollout::settled(revision, self.percent);
            return;
        }
        // The 1 % comes from the newest revision that still has traffic.
        if let Some((_, p)) = self.revisions.iter_mut().rev().find(|(_, p)| *p > 0) {
            *p -= 1;
        }
        self.revisions.push((revision.to_owned(), 1));
        self.revisions.retain(|(_, p)| *p > 0);
        let f = (ready - start).ceil().max(1.0);
        let d = (duration - f).max(1.0);
        let steps = ((d / f).floor().max(1.0)).min((self.percent - 1) as f64);
        self.step = (((self.percent - 1) as f64) / steps).round().max(1.0) as i64;
        self.interval = d / steps;
        self.next_at = ready + self.interval;
    }

    /// Takes every step due at `now`; true when the traffic changed.
    pub fn advance(&mut self, now: f64) -> bool {
        let mut changed = false;
        while self.in_progress() && now >= self.next_at {
            let mut moving = self.step;
            // From the oldest revisions, to the newest.
            for (_, p) in self.revisions.iter_mut().rev().skip(1).rev() {
                let taken = moving.min(*p);
                *p -= taken;
                moving -= taken;
                if moving == 0 {
                    break;
                }
            }
            let given = self.step - moving;
            if let Some((_, p)) = self.revisions.last_mut() {
                *p += given;
            }
            self.revisions.retain(|(_, p)| *p > 0);
            self.next_at += self.interval;
            changed = true;
        }
        if !self.in_progress() {
            self.next_at = f64::INFINITY;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Knative's example (`rollout_test.go`): 120 s, the KIngress Ready 2.4 s after the
    /// start: f = 3 s, 39 steps of 3 %, every 3 s.
    #[test]
    fn knatives_example_moves_three_percent_every_three_seconds() {
        let mut r = Rollout::settled("a", 100);
        r.begin("b", 120.0, 0.0, 2.4);
        assert_eq!(r.revisions, [("a".to_owned(), 99), ("b".to_owned(), 1)]);
        assert_eq!(r.step, 3);
        assert!((r.interval - 3.0).abs() < 1e-9, "{}", r.interval);
        assert!(!r.advance(5.3));
        assert!(r.advance(5.4));
        assert_eq!(r.revisions, [("a".to_owned(), 96), ("b".to_owned(), 4)]);
        // To the end: b has it all, a is gone.
        r.advance(1000.0);
        assert_eq!(r.revisions, [("b".to_owned(), 100)]);
        assert!(!r.in_progress());
    }

    #[test]
    fn a_third_revision_joins_and_steps_take_from_the_oldest_first() {
        let mut r = Rollout::settled("a", 100);
        r.begin("b", 10.0, 0.0, 0.0);
        // f = 1 s, d = 9 s, 9 steps of 11 %, every second.
        assert_eq!((r.step, r.interval), (11, 1.0));
        r.advance(2.0);
        assert_eq!(r.revisions, [("a".to_owned(), 77), ("b".to_owned(), 23)]);
        r.begin("c", 10.0, 2.0, 2.0);
        assert_eq!(
            r.revisions,
            [
                ("a".to_owned(), 77),
                ("b".to_owned(), 22),
                ("c".to_owned(), 1)
            ]
        );
        r.advance(3.0);
        assert_eq!(
            r.revisions,
            [
                ("a".to_owned(), 66),
                ("b".to_owned(), 22),
                ("c".to_owned(), 12)
            ]
        );
        r.advance(100.0);
        assert_eq!(r.revisions, [("c".to_owned(), 100)]);
    }

    #[test]
    fn without_a_duration_or_with_one_percent_the_switch_is_at_once() {
        let mut r = Rollout::settled("a", 100);
        r.begin("b", 0.0, 0.0, 0.0);
        assert_eq!(r.revisions, [("b".to_owned(), 100)]);
        let mut one = Rollout::settled("a", 1);
        one.begin("b", 60.0, 0.0, 0.0);
        assert_eq!(one.revisions, [("b".to_owned(), 1)]);
    }
}
