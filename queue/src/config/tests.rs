use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = [
        ("CONTAINER_CONCURRENCY", "0"),
        ("QUEUE_SERVING_PORT", "8012"),
        ("QUEUE_SERVING_TLS_PORT", "8112"),
        ("USER_PORT", "8080"),
        ("REVISION_TIMEOUT_SECONDS", "300"),
        ("SERVING_LOGGING_CONFIG", ""),
        ("SERVING_LOGGING_LEVEL", ""),
        ("SERVING_NAMESPACE", "default"),
        ("SERVING_CONFIGURATION", "hello"),
        ("SERVING_REVISION", "hello-00001"),
        ("SERVING_POD", "hello-00001-deployment-abc"),
        ("SERVING_POD_IP", "10.0.0.1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in pairs {
        if v.is_empty() && k.starts_with('-') {
            m.remove(&k[1..]);
        } else {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    m
}

fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
    match Config::from_env(&env(pairs)) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_twelve_required_variables_are_enough() {
    let cfg = Config::from_env(&env(&[])).expect("valid");
    assert_eq!(cfg.serving_port, 8012);
    assert_eq!(cfg.admin_port, DEFAULT_ADMIN_PORT);
    assert_eq!(cfg.revision_timeout, Duration::from_secs(300));
    assert_eq!(cfg.response_start_timeout, None);
    assert_eq!(cfg.breaker_capacity(), None);
    assert!(cfg.readiness.is_empty());
    assert_eq!(cfg.drain_quiet, Duration::from_secs(30));
    assert_eq!(cfg.tls_min, TlsVersion::Tls13);
}

#[test]
fn missing_variables_are_named_in_knatives_words() {
    assert_eq!(
        errors(&[("-CONTAINER_CONCURRENCY", "")]),
        ["required key CONTAINER_CONCURRENCY missing value"]
    );
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let errs = errors(&[
        ("CONTAINER_CONCURRENCY", "ten"),
        ("QUEUE_SERVING_PORT", "70000"),
        ("ENABLE_HTTP_FULL_DUPLEX", ""),
        ("SERVING_READINESS_PROBE", "{bad"),
        ("QUEUE_PROXY_TLS_MIN_VERSION", "1.1"),
    ]);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with("CONTAINER_CONCURRENCY=\"ten\" is not valid"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("QUEUE_SERVING_PORT=\"70000\""),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("ENABLE_HTTP_FULL_DUPLEX=\"\""),
        "{}",
        errs[2]
    );
    assert!(
        errs[3].contains("Queue container failed to parse readiness probe"),
        "{}",
        errs[3]
    );
    assert!(
        errs[4].contains("must be \"1.2\" or \"1.3\""),
        "{}",
        errs[4]
    );
}

#[test]
fn concurrency_sizes_the_breaker_at_eleven_times() {
    let cfg = Config::from_env(&env(&[("CONTAINER_CONCURRENCY", "0x2")])).expect("valid");
    assert_eq!(cfg.breaker_capacity(), Some((2, 22)));
    let cfg = Config::from_env(&env(&[("CONTAINER_CONCURRENCY", "-1")])).expect("valid");
    assert_eq!(cfg.breaker_capacity(), None);
}

#[test]
fn observability_config_selects_prometheus_user_metrics() {
    let cfg = Config::from_env(&env(&[(
        "OBSERVABILITY_CONFIG",
        r#"{"requestMetrics":{"protocol":"prometheus"}}"#,
    )]))
    .expect("valid");
    assert_eq!(cfg.metrics_protocol, MetricsProtocol::Prometheus);
    assert_eq!(errors(&[("OBSERVABILITY_CONFIG", "{")]).len(), 1);
}

#[test]
fn go_integer_syntax() {
    for (s, want) in [
        ("10", Some(10)),
        ("0x10", Some(16)),
        ("010", Some(8)),
        ("0b11", Some(3)),
        ("-5", Some(-5)),
        ("1_000", Some(1000)),
    ] {
        assert_eq!(parse_go_int(s), want, "{s}");
    }
    for s in ["", "ten", "1.5", "0x", "_1", "1_"] {
        assert_eq!(parse_go_int(s), None, "{s}");
    }
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_duration("soon"), None);
}

#[test]
fn tls_names_follow_go_and_unimplemented_ones_are_set_aside() {
    let cfg = Config::from_env(&env(&[
        (
            "QUEUE_PROXY_TLS_CIPHER_SUITES",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_CBC_SHA",
        ),
        (
            "QUEUE_PROXY_TLS_CURVE_PREFERENCES",
            "X25519,CurveP521,P-256",
        ),
    ]))
    .expect("valid");
    assert_eq!(cfg.tls_cipher_suites.map(|s| s.len()), Some(1));
    assert_eq!(cfg.tls_curves.map(|c| c.len()), Some(2));
    assert_eq!(
        cfg.tls_unsupported,
        ["TLS_RSA_WITH_AES_128_CBC_SHA", "CurveP521"]
    );
    let errs = errors(&[
        ("QUEUE_PROXY_TLS_CIPHER_SUITES", "TLS_NOPE"),
        ("QUEUE_PROXY_TLS_CURVE_PREFERENCES", "P-521"),
    ]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].contains("unknown cipher suite \"TLS_NOPE\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains("none of these is supported"),
        "{}",
        errs[1]
    );
}

/// Extreme numbers are config errors naming the variable and the accepted range, never a
/// panic at start or on the first request (a deadline past what an `Instant` holds).
#[test]
fn numbers_out_of_range_are_errors_not_panics() {
    const MAX: &str = "9223372036854775807";
    const MIN: &str = "-9223372036854775808";
    const PAST_I64: &str = "9223372036854775808";
    for (name, value, want) in [
        (
            "CONTAINER_CONCURRENCY",
            MAX,
            Some("no greater than 1000000"),
        ),
        (
            "CONTAINER_CONCURRENCY",
            "1000001",
            Some("no greater than 1000000"),
        ),
        (
            "CONTAINER_CONCURRENCY",
            PAST_I64,
            Some("expected an integer"),
        ),
        ("CONTAINER_CONCURRENCY", "1000000", None),
        ("CONTAINER_CONCURRENCY", MIN, None),
        (
            "REVISION_TIMEOUT_SECONDS",
            MAX,
            Some("no greater than 3153600000 (100 years)"),
        ),
        (
            "REVISION_TIMEOUT_SECONDS",
            "3153600001",
            Some("no greater than 3153600000"),
        ),
        ("REVISION_TIMEOUT_SECONDS", "3153600000", None),
        ("REVISION_TIMEOUT_SECONDS", MIN, None),
        (
            "REVISION_RESPONSE_START_TIMEOUT_SECONDS",
            MAX,
            Some("100 years"),
        ),
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", MIN, None),
        ("REVISION_IDLE_TIMEOUT_SECONDS", MAX, Some("100 years")),
        (
            "REVISION_IDLE_TIMEOUT_SECONDS",
            "0x7fffffffffffffff",
            Some("100 years"),
        ),
        (
            "KNOXY_DRAIN_QUIET_PERIOD",
            "99999999999999h",
            Some("at most 100 years"),
        ),
        (
            "KNOXY_DRAIN_QUIET_PERIOD",
            "1e300",
            Some("expected a duration"),
        ),
        (
            "KNOXY_DRAIN_QUIET_PERIOD",
            "-5s",
            Some("expected a duration"),
        ),
        ("KNOXY_DRAIN_QUIET_PERIOD", "876000h", None),
        ("QUEUE_SERVING_PORT", "-1", Some("port number")),
        ("USER_PORT", MAX, Some("port number")),
    ] {
        let errs = errors(&[(name, value)]);
        match want {
            None => assert!(errs.is_empty(), "{name}={value}: {errs:?}"),
            Some(want) => {
                assert_eq!(errs.len(), 1, "{name}={value}: {errs:?}");
                let prefix = format!("{name}={value:?} is not valid: ");
                assert!(
                    errs[0].starts_with(&prefix) && errs[0].contains(want),
                    "{name}={value}: {:?} should start {prefix:?} and say {want:?}",
                    errs[0]
                );
            }
        }
    }
}

#[test]
fn the_largest_accepted_values_build_a_breaker_and_deadlines_without_overflow() {
    let cfg = Config::from_env(&env(&[
        ("CONTAINER_CONCURRENCY", "1000000"),
        ("REVISION_TIMEOUT_SECONDS", "3153600000"),
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "3153600000"),
        ("REVISION_IDLE_TIMEOUT_SECONDS", "3153600000"),
    ]))
    .expect("valid");
    assert_eq!(cfg.breaker_capacity(), Some((1_000_000, 11_000_000)));
    let now = std::time::Instant::now();
    for d in [
        Some(cfg.revision_timeout),
        cfg.response_start_timeout,
        cfg.idle_timeout,
    ] {
        let d = d.expect("set");
        assert!(now.checked_add(d).is_some(), "{d:?} fits an Instant");
    }
    // Negative timeouts are Go's 0: every request times out; the others are off.
    let cfg = Config::from_env(&env(&[
        ("REVISION_TIMEOUT_SECONDS", "-1"),
        ("REVISION_IDLE_TIMEOUT_SECONDS", "-1"),
    ]))
    .expect("valid");
    assert_eq!(cfg.revision_timeout, Duration::ZERO);
    assert_eq!(cfg.idle_timeout, None);
}
