//! Knative's webhook wording for bad annotations (`annotation_validation_test.go`, as the
//! contract quotes it) and its target arithmetic (`target_test.go`).

use super::*;

const PATH: &str = "spec.template.metadata.annotations";

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), (*v).to_owned()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> Result<Scaling, Vec<String>> {
    Scaling::from_annotations(&annotations(pairs), &AutoscalerConfig::default(), PATH)
}

fn error(pairs: &[(&str, &str)]) -> String {
    parse(pairs).expect_err("invalid").join("\n")
}

fn at(key: &str) -> String {
    format!("{PATH}.{PREFIX}{key}")
}

#[test]
fn bad_values_are_reported_in_knatives_words() {
    let cases: Vec<(Vec<(&str, &str)>, String)> = vec![
        (
            vec![("class", "unsupported.knative.dev")],
            format!("invalid value: unsupported.knative.dev: {}", at("class")),
        ),
        (
            vec![("metric", "cpu")],
            format!("invalid value: cpu: {}", at("metric")),
        ),
        (
            vec![("target", "0")],
            format!("target 0 should be at least 0.01: {}", at("target")),
        ),
        (
            vec![("target-utilization-percentage", "101")],
            format!(
                "expected 1 <= 101 <= 100: {}",
                at("target-utilization-percentage")
            ),
        ),
        (
            vec![("target-burst-capacity", "-11")],
            format!("invalid value: -11: {}", at("target-burst-capacity")),
        ),
        (
            vec![("min-scale", "-1")],
            format!("expected 0 <= -1 <= 2147483647: {}", at("min-scale")),
        ),
        (
            vec![("min-scale", "5"), ("max-scale", "2")],
            format!(
                "max-scale=2 is less than min-scale=5: {}, {}",
                at("max-scale"),
                at("min-scale")
            ),
        ),
        (
            vec![("initial-scale", "-1")],
            format!(
                "invalid value: -1: {}/initial-scale must be greater than 0",
                at("initial-scale")
            ),
        ),
        (
            vec![("initial-scale", "0")],
            format!(
                "invalid value: 0: {}/initial-scale=0 not allowed by cluster",
                at("initial-scale")
            ),
        ),
        (
            vec![("activation-scale", "1")],
            format!(
                "activation-scale=1 must be greater than 1: {}",
                at("activation-scale")
            ),
        ),
        (
            vec![("min-scale", "3"), ("activation-scale", "2")],
            format!(
                "min-scale=3 is greater than activation-scale=2: {}",
                at("activation-scale")
            ),
        ),
        (
            vec![("max-scale", "1"), ("activation-scale", "2")],
            format!(
                "max-scale=1 is less than activation-scale=2: {}",
                at("activation-scale")
            ),
        ),
        (
            vec![("window", "1s")],
            format!("expected 6s <= 1s <= 1h0m0s: {}", at("window")),
        ),
        (
            vec![("window", "6500ms")],
            format!(
                "must be specified with at most second precision: {}",
                at("window")
            ),
        ),
        (
            vec![("panic-window-percentage", "202")],
            format!(
                "expected 1 <= 202 <= 100: {}",
                at("panic-window-percentage")
            ),
        ),
        (
            vec![("panic-threshold-percentage", "109")],
            format!(
                "expected 110 <= 109 <= 1000: {}",
                at("panic-threshold-percentage")
            ),
        ),
        (
            vec![("scale-down-delay", "311m")],
            format!("expected 0s <= 311m <= 1h0m0s: {}", at("scale-down-delay")),
        ),
        (
            vec![("scale-to-zero-pod-retention-period", "-42s")],
            format!(
                "expected 0s <= -42s <= 1h0m0s: {}",
                at("scale-to-zero-pod-retention-period")
            ),
        ),
        (
            vec![
                ("class", KPA_CLASS),
                ("metric-aggregation-algorithm", "random-selection"),
            ],
            format!(
                "invalid value: random-selection: {}",
                at("metric-aggregation-algorithm")
            ),
        ),
    ];
    for (pairs, want) in cases {
        assert_eq!(error(&pairs), want, "{pairs:?}");
    }
}

#[test]
fn every_failure_is_reported_and_aliases_are_read() {
    let all = error(&[("target", "0"), ("window", "1s")]);
    assert_eq!(all.lines().count(), 2, "{all}");
    let s = parse(&[
        ("minScale", "2"),
        ("maxScale", "4"),
        ("targetUtilizationPercentage", "60"),
    ])
    .expect("valid");
    assert_eq!((s.min_scale, s.max_scale), (Some(2), Some(4)));
    assert_eq!(s.target_utilization_percentage, Some(60.0));
    // The kebab-case key wins over its alias.
    let s = parse(&[("min-scale", "1"), ("minScale", "3")]).expect("valid");
    assert_eq!(s.min_scale, Some(1));
    // Unknown domains' classes and their metrics are not checked; HPA's metric must be set.
    assert!(parse(&[("class", "custom.example.com"), ("metric", "cpu")]).is_ok());
    assert!(parse(&[("class", HPA_CLASS), ("metric", "cpu")]).is_ok());
    assert!(parse(&[("class", HPA_CLASS), ("metric", "")]).is_err());
}

#[test]
fn the_max_scale_limit_bounds_max_scale() {
    let config = AutoscalerConfig {
        max_scale_limit: 10,
        ..AutoscalerConfig::default()
    };
    let check = |pairs: &[(&str, &str)]| {
        Scaling::from_annotations(&annotations(pairs), &config, PATH)
            .expect_err("invalid")
            .join("\n")
    };
    assert_eq!(
        check(&[("max-scale", "11")]),
        format!("expected 1 <= 11 <= 10: {}", at("max-scale"))
    );
    assert_eq!(
        check(&[("max-scale", "0")]),
        format!(
            "max-scale=0 (unlimited), must be less than 10: {}",
            at("max-scale")
        )
    );
}

/// Knative's target tests use a config whose concurrency fraction is 1.0.
fn whole() -> AutoscalerConfig {
    AutoscalerConfig {
        target_fraction: 1.0,
        ..AutoscalerConfig::default()
    }
}

fn target(pairs: &[(&str, &str)], cc: u32, config: &AutoscalerConfig) -> (f64, f64) {
    let s = Scaling::from_annotations(&annotations(pairs), config, PATH).expect("valid");
    let spec = s.spec(cc, config, true);
    (spec.target, spec.total_target)
}

#[test]
fn targets_are_knatives() {
    assert_eq!(
        target(&[("target-utilization-percentage", "75")], 12, &whole()),
        (9.0, 12.0)
    );
    assert_eq!(target(&[("target", "10")], 1, &whole()), (1.0, 1.0));
    let three_quarters = AutoscalerConfig {
        target_fraction: 0.75,
        ..AutoscalerConfig::default()
    };
    assert_eq!(target(&[("target", "10")], 0, &three_quarters), (7.5, 10.0));
    assert_eq!(target(&[("metric", "rps")], 0, &whole()), (140.0, 200.0));
    let (t, total) = target(&[("metric", "rps"), ("target", "300")], 0, &whole());
    assert_eq!(total, 300.0);
    assert!((t - 210.0).abs() < 1e-9, "{t}");
    // The seed: target 10 at 60 %: 6 per pod; defaults: 100 × 0.7.
    let (t, total) = target(
        &[("target", "10"), ("target-utilization-percentage", "60")],
        0,
        &AutoscalerConfig::default(),
    );
    assert!((t - 6.0).abs() < 1e-9 && total == 10.0, "{t} {total}");
    let (t, _) = target(&[], 0, &AutoscalerConfig::default());
    assert!((t - 70.0).abs() < 1e-9, "{t}");
}

#[test]
fn bounds_and_windows_come_from_annotations_else_the_config() {
    let s = parse(&[
        ("min-scale", "1"),
        ("max-scale", "3"),
        ("window", "10s"),
        ("initial-scale", "2"),
    ])
    .expect("valid");
    let b = s.bounds(&AutoscalerConfig::default());
    assert_eq!((b.min, b.max, b.initial), (1, 3, 2));
    assert_eq!((b.stable_window, b.panic_window), (10, 1));
    let b = Scaling::default().bounds(&AutoscalerConfig::default());
    assert_eq!(
        (b.min, b.max, b.initial, b.stable_window, b.panic_window),
        (0, 0, 1, 60, 6)
    );
    assert_eq!(b.grace, GoDuration::seconds(30));
}
