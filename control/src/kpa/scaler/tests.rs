//! The KPA's scale-to-zero timelines (contract §3.1.4) and bounds (§2.6, §3.3).

use super::*;
use crate::kpa::goparse::GoDuration;

fn bounds() -> Bounds {
    Bounds {
        min: 0,
        max: 0,
        initial: 1,
        stable_window: 60,
        panic_window: 6,
        retention: GoDuration::ZERO,
        grace: GoDuration::seconds(30),
        scale_to_zero: true,
        progress_deadline: GoDuration::seconds(600),
    }
}

fn seen(now: i64, want: u32, ebc: f64, ready: u32) -> Observed {
    Observed {
        now,
        want: Some(want),
        excess_burst_capacity: ebc,
        ready,
        reachable: true,
    }
}

/// Reconciles at `now`, then at every recheck asked for (none later than `until`); the
/// second at which 0 replicas were applied, if any.
fn zero_at(s: &mut Scaler, b: &Bounds, first: Observed, until: i64) -> Option<i64> {
    let mut at = Some(first.now);
    while let Some(now) = at.filter(|t| *t <= until) {
        let out = s.reconcile(Observed { now, ..first }, b);
        if out.replicas == Some(0) {
            return Some(now);
        }
        at = out.recheck_at;
    }
    None
}

#[test]
fn with_the_activator_in_the_path_zero_comes_3s_after_the_decider_says_so() {
    // Defaults (TBC 211, few pods): the activator was in the path all along.
    let b = bounds();
    let mut s = Scaler::new(0);
    assert_eq!(s.reconcile(seen(2, 1, -200.0, 1), &b).replicas, Some(1));
    // The last request at 0: the decider says 0 at the tick after a stable window.
    assert_eq!(zero_at(&mut s, &b, seen(62, 0, -200.0, 1), 200), Some(65));
}

#[test]
fn with_pods_served_directly_zero_waits_the_grace_period() {
    // TBC 0: the activator comes into the path only now, and must be there 30 s first.
    let b = bounds();
    let mut s = Scaler::new(0);
    let out = s.reconcile(seen(2, 1, 0.0, 1), &b);
    assert!(!out.proxy, "served directly");
    assert_eq!(zero_at(&mut s, &b, seen(62, 0, 0.0, 1), 200), Some(92));
}

#[test]
fn the_pod_retention_period_keeps_the_last_pod_longer() {
    let b = Bounds {
        retention: GoDuration::seconds(120),
        ..bounds()
    };
    let mut s = Scaler::new(0);
    s.reconcile(seen(2, 1, -200.0, 1), &b);
    assert_eq!(zero_at(&mut s, &b, seen(62, 0, -200.0, 1), 400), Some(182));
}

#[test]
fn a_young_revision_holds_one_pod_for_a_stable_window() {
    let b = bounds();
    let mut s = Scaler::new(0);
    // Its first pod is ready at 10: Active from then.
    let out = s.reconcile(seen(10, 0, -200.0, 1), &b);
    assert_eq!((out.replicas, out.recheck_at), (Some(1), Some(70)));
}

#[test]
fn without_scale_to_zero_or_with_min_scale_it_stays_up() {
    let off = Bounds {
        scale_to_zero: false,
        ..bounds()
    };
    let mut s = Scaler::new(0);
    assert_eq!(s.reconcile(seen(100, 0, -200.0, 1), &off).replicas, Some(1));
    let min = Bounds { min: 2, ..bounds() };
    let mut s = Scaler::new(0);
    assert_eq!(s.reconcile(seen(100, 0, -200.0, 2), &min).replicas, Some(2));
    // Unreachable (no route sends to it), min-scale does not hold.
    let mut s = Scaler::new(0);
    s.reconcile(seen(0, 2, -200.0, 2), &min);
    let unreachable = Observed {
        reachable: false,
        ..seen(100, 0, -200.0, 2)
    };
    assert_eq!(zero_at(&mut s, &min, unreachable, 400), Some(103));
}

#[test]
fn max_scale_caps_and_initial_scale_holds_until_first_reached() {
    let b = Bounds {
        max: 3,
        initial: 2,
        ..bounds()
    };
    let mut s = Scaler::new(0);
    // No data yet: the initial scale.
    let first = s.reconcile(
        Observed {
            want: None,
            ..seen(0, 0, 0.0, 0)
        },
        &b,
    );
    assert_eq!((first.replicas, first.active), (Some(2), Active::Queued));
    assert_eq!(
        s.reconcile(seen(2, 9, -10.0, 0), &b).replicas,
        Some(3),
        "max 3"
    );
    // Not yet initialised: 1 wanted, 2 applied; once 2 were ready, 1 is allowed.
    assert_eq!(s.reconcile(seen(4, 1, -10.0, 1), &b).replicas, Some(2));
    assert_eq!(s.reconcile(seen(6, 1, -10.0, 2), &b).active, Active::Ready);
    assert_eq!(s.reconcile(seen(8, 1, -10.0, 2), &b).replicas, Some(1));
}

#[test]
fn the_active_condition_follows_ready_pods() {
    let b = bounds();
    let mut s = Scaler::new(0);
    assert_eq!(
        s.reconcile(seen(0, 1, -200.0, 0), &b).active,
        Active::Queued
    );
    assert_eq!(s.reconcile(seen(2, 1, -200.0, 1), &b).active, Active::Ready);
    zero_at(&mut s, &b, seen(70, 0, -200.0, 1), 200).expect("to zero");
    let out = s.reconcile(seen(80, 0, -200.0, 0), &b);
    assert_eq!((out.active, out.proxy), (Active::NoTraffic, true));
    // A request at zero: the decider wants 1 again, buffered until a pod is ready.
    let out = s.reconcile(seen(90, 1, -200.0, 0), &b);
    assert_eq!((out.replicas, out.active), (Some(1), Active::Queued));
}

#[test]
fn the_activator_leaves_the_path_once_the_burst_capacity_is_covered() {
    let b = bounds();
    let mut s = Scaler::new(0);
    assert!(s.reconcile(seen(0, 3, -5.0, 3), &b).proxy);
    assert!(!s.reconcile(seen(2, 3, 10.0, 3), &b).proxy);
    assert!(
        s.reconcile(seen(4, 0, 10.0, 3), &b).proxy,
        "at zero it is back"
    );
}

#[test]
fn a_new_revision_starts_with_the_activator_in_the_path() {
    // Knative's decider starts with a negative excess burst capacity (TBC 211): Proxy mode
    // from creation, so an idle new revision takes the fast path a window later.
    let b = bounds();
    let mut s = Scaler::new(0);
    let out = s.reconcile(
        Observed {
            want: None,
            ..seen(0, 0, -1.0, 0)
        },
        &b,
    );
    assert!(out.proxy);
    s.reconcile(seen(2, 1, -200.0, 1), &b);
    assert_eq!(zero_at(&mut s, &b, seen(62, 0, -200.0, 1), 200), Some(65));
}

#[test]
fn a_revision_still_activating_keeps_its_pod() {
    let b = bounds();
    let mut s = Scaler::new(0);
    // No pod ready for two minutes: the decider says 0, the starting pod stays.
    for t in (0..120).step_by(2) {
        assert_eq!(
            s.reconcile(seen(t, 0, -200.0, 0), &b).replicas,
            Some(1),
            "at {t}"
        );
    }
    // Ready at 120: Active from then, so it holds the pod a window more.
    s.reconcile(seen(120, 0, -200.0, 1), &b);
    assert_eq!(zero_at(&mut s, &b, seen(122, 0, -200.0, 1), 300), Some(183));
}

/// §3.3, §5 item 39: pods that never turn ready are given up at the progress deadline + 30 s.
#[test]
fn a_revision_stuck_activating_is_given_up_at_the_progress_deadline_and_30s() {
    let b = bounds();
    let mut s = Scaler::new(0);
    let first = s.reconcile(seen(0, 1, -1.0, 0), &b);
    assert_eq!((first.replicas, first.active), (Some(1), Active::Queued));
    assert_eq!(first.recheck_at, Some(631));
    let waiting = s.reconcile(seen(630, 1, -1.0, 0), &b);
    assert_eq!(waiting.active, Active::Queued);
    let out = s.reconcile(seen(631, 1, -1.0, 0), &b);
    assert_eq!((out.replicas, out.active), (Some(0), Active::TimedOut));
    // A pod that turns ready in time ends the activation.
    let mut s = Scaler::new(0);
    s.reconcile(seen(0, 1, -1.0, 0), &b);
    assert_eq!(s.reconcile(seen(100, 1, -1.0, 1), &b).active, Active::Ready);
    assert_eq!(s.reconcile(seen(700, 1, -1.0, 1), &b).replicas, Some(1));
}
