//! The contract's worked examples (§2.7, from Knative's decider tests: utilisation 0.75,
//! panic threshold 2, rate limits 10 unless a case says otherwise) and the seed scenarios.

use super::*;

/// Knative's test decider: per-pod target `t` (T = t / 0.75), TBC `tbc`, θ 2, rates 10.
fn spec(t: f64, tbc: f64) -> Spec {
    Spec {
        target: t,
        total_target: t / 0.75,
        panic_threshold: 2.0,
        max_scale_up_rate: 10.0,
        max_scale_down_rate: 10.0,
        target_burst_capacity: tbc,
        stable_window: 60,
        scale_down_delay: 0,
        activation_scale: 1,
        reachable: true,
    }
}

/// Knative's expected excess burst capacity: floor(T·R − TBC − panic average).
fn ebc(t: f64, tbc: f64, panic: f64, ready: f64) -> f64 {
    (t / 0.75 * ready - tbc - panic).floor()
}

fn desired(d: &mut Decider, now: i64, ready: u32, stable: f64, panic: f64) -> u32 {
    d.tick(now, ready, Some((stable, panic)))
        .expect("data")
        .desired
}

#[test]
fn e1_stable_concurrency_over_the_target() {
    let mut d = Decider::new(spec(10.0, 100.0), 0, 0);
    let got = d.tick(0, 1, Some((50.0, 10.0))).expect("data");
    assert_eq!(got.desired, 5);
    assert_eq!(got.excess_burst_capacity, ebc(10.0, 100.0, 10.0, 1.0));
    assert!(!got.panicking);
    assert_eq!(desired(&mut d, 2, 1, 100.0, 10.0), 10);
}

#[test]
fn e2_a_panic_average_twice_the_pods_is_panic_and_wins() {
    let mut d = Decider::new(spec(10.0, 84.0), 0, 0);
    let got = d.tick(0, 1, Some((50.0, 100.0))).expect("data");
    assert_eq!((got.desired, got.panicking), (10, true));
    assert_eq!(got.excess_burst_capacity, ebc(10.0, 84.0, 100.0, 1.0));
}

#[test]
fn e3_panic_never_scales_down_until_a_stable_window_without_it() {
    let mut d = Decider::new(spec(10.0, 93.0), 0, 0);
    assert_eq!(desired(&mut d, 0, 1, 100.0, 100.0), 10);
    assert_eq!(desired(&mut d, 2, 10, 100.0, 1000.0), 100);
    // The load drops: still 100 while panicking, 1 once a stable window has passed.
    assert_eq!(desired(&mut d, 32, 10, 1.0, 1.0), 100);
    assert_eq!(desired(&mut d, 63, 10, 1.0, 1.0), 1);
}

#[test]
fn e4_rate_limits_bound_each_step() {
    let cases = [
        // (ready, stable, want)
        (1, 1000.0, 10),
        (10, 1000.0, 100),
        (100, 1.0, 10),
        (10, 1.0, 1),
    ];
    for (ready, stable, want) in cases {
        let mut d = Decider::new(spec(10.0, 100.0), 0, 0);
        assert_eq!(
            desired(&mut d, 0, ready, stable, stable),
            want,
            "{ready} pods at {stable}"
        );
    }
    // A small up rate still allows one more pod: ceil(1.1 × 2) = 3.
    let mut d = Decider::new(
        Spec {
            max_scale_up_rate: 1.1,
            ..spec(1.0, 1982.0)
        },
        0,
        0,
    );
    assert_eq!(desired(&mut d, 0, 2, 3.0, 3.1), 3);
    // A small down rate: floor(100 / 1.1) = 90; unreachable, no floor at all.
    let slow_down = Spec {
        max_scale_down_rate: 1.1,
        ..spec(10.0, 1982.0)
    };
    let mut d = Decider::new(slow_down.clone(), 0, 0);
    assert_eq!(desired(&mut d, 0, 100, 1.0, 1.0), 90);
    let mut d = Decider::new(
        Spec {
            reachable: false,
            ..slow_down
        },
        0,
        0,
    );
    assert_eq!(desired(&mut d, 0, 100, 1.0, 1.0), 1);
}

#[test]
fn e5_scale_down_delay_keeps_the_highest_count_of_the_delay() {
    let delayed = Spec {
        scale_down_delay: 300,
        panic_threshold: 100.0,
        ..spec(10.0, 100.0)
    };
    let mut d = Decider::new(delayed, 0, 0);
    assert_eq!(desired(&mut d, 2, 1, 40.0, 40.0), 4);
    assert_eq!(desired(&mut d, 300, 4, 0.0, 0.0), 4, "at 5:00");
    assert_eq!(desired(&mut d, 302, 4, 0.0, 0.0), 0, "at 5:02");
    // Gradually: 4, then 3 (4 dominates), then idle.
    assert_eq!(desired(&mut d, 540, 4, 40.0, 40.0), 4);
    assert_eq!(desired(&mut d, 600, 4, 30.0, 30.0), 4);
    assert_eq!(desired(&mut d, 660, 4, 0.0, 0.0), 4);
    assert_eq!(
        desired(&mut d, 840, 4, 0.0, 0.0),
        3,
        "4 scrolled out at 14:00"
    );
    assert_eq!(desired(&mut d, 900, 3, 0.0, 0.0), 0, "everything at 15:00");
}

#[test]
fn e6_activation_scale_applies_only_to_a_revision_with_demand() {
    let activating = Spec {
        activation_scale: 2,
        ..spec(10.0, 100.0)
    };
    let mut d = Decider::new(activating, 0, 0);
    assert_eq!(desired(&mut d, 0, 0, 0.0, 0.0), 0);
    assert_eq!(desired(&mut d, 2, 0, 1.0, 1.0), 2);
}

#[test]
fn e7_knatives_e2e_target_6_at_70_percent() {
    // t = 4.2: 12, 18 and 24 concurrent requests settle at 3, 5 and 6 pods.
    let e2e = Spec {
        target: 6.0 * 0.7,
        total_target: 6.0,
        ..spec(4.2, 211.0)
    };
    for (clients, want) in [(12.0, 3), (18.0, 5), (24.0, 6)] {
        let mut d = Decider::new(e2e.clone(), 0, 0);
        // Steady: as many pods as wanted, no panic.
        assert_eq!(
            desired(&mut d, 0, want, clients, clients),
            want,
            "{clients} clients"
        );
    }
}

#[test]
fn no_data_decides_nothing() {
    let mut d = Decider::new(spec(10.0, 100.0), 0, 0);
    assert_eq!(d.tick(0, 3, None), None);
}

#[test]
fn in_panic_the_larger_of_stable_panic_and_memory_wins() {
    let mut d = Decider::new(spec(1.0, 100.0), 0, 5);
    assert!(d.tick(0, 5, Some((0.0, 0.0))).expect("data").panicking);
    // Stable 50 over panic 30: 50; then panic 30 over stable 20: the memory of 50 holds.
    assert_eq!(desired(&mut d, 2, 5, 50.0, 30.0), 50);
    assert_eq!(desired(&mut d, 4, 5, 20.0, 30.0), 50);
}

#[test]
fn burst_capacity_zero_and_unlimited() {
    let mut d = Decider::new(spec(10.0, 0.0), 0, 0);
    let got = d.tick(0, 1, Some((50.0, 49.0))).expect("data");
    assert_eq!((got.desired, got.excess_burst_capacity), (5, 0.0));
    let mut d = Decider::new(spec(181.0, -1.0), 0, 0);
    let got = d.tick(0, 1, Some((21.0, 26.0))).expect("data");
    assert_eq!((got.desired, got.excess_burst_capacity), (1, -1.0));
}

/// The seed's settings: `target: "10"`, `target-utilization-percentage: "60"`, defaults
/// otherwise (θ 2, up 1000, down 2, TBC 211).
fn seed() -> Spec {
    Spec {
        target: 6.0,
        total_target: 10.0,
        panic_threshold: 2.0,
        max_scale_up_rate: 1000.0,
        max_scale_down_rate: 2.0,
        target_burst_capacity: 211.0,
        stable_window: 60,
        scale_down_delay: 0,
        activation_scale: 1,
        reachable: true,
    }
}

#[test]
fn s1_twenty_clients_panic_to_four_pods_in_one_tick_and_stay_there() {
    let mut d = Decider::new(seed(), 0, 1);
    let got = d.tick(2, 1, Some((20.0, 20.0))).expect("data");
    assert_eq!((got.desired, got.panicking), (4, true));
    assert!(
        got.excess_burst_capacity < 0.0,
        "the activator stays in the path"
    );
    for t in (4..200).step_by(2) {
        assert_eq!(desired(&mut d, t, 4, 20.0, 20.0), 4, "at {t}s");
    }
    for measured in [18.5, 24.0] {
        assert_eq!(desired(&mut d, 300, 4, measured, measured), 4);
    }
}

#[test]
fn s2_fifty_clients_ask_for_nine() {
    // The KPA's bounds (max-scale 3) clamp it; the decider asks ceil(50 / 6).
    let mut d = Decider::new(seed(), 0, 1);
    assert_eq!(desired(&mut d, 2, 3, 50.0, 50.0), 9);
}

#[test]
fn s3_rps_target_100_at_60_percent() {
    let rps = Spec {
        target: 60.0,
        total_target: 100.0,
        ..seed()
    };
    for (rate, want) in [(200.0, 4), (181.0, 4), (240.0, 4), (150.0, 3)] {
        let mut d = Decider::new(rps.clone(), 0, 0);
        assert_eq!(desired(&mut d, 0, want, rate, rate), want, "{rate} req/s");
    }
}
