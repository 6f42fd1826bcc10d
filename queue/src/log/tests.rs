use std::time::Duration;

use super::*;

/// config-logging's `zap-logger-config` as Knative ships it (`config/core/configmaps/logging.yaml`).
const KNATIVE_DEFAULT: &str = r#"{
  "level": "info",
  "development": false,
  "outputPaths": ["stdout"],
  "errorOutputPaths": ["stderr"],
  "encoding": "json",
  "encoderConfig": {
    "timeKey": "timestamp",
    "levelKey": "severity",
    "nameKey": "logger",
    "callerKey": "caller",
    "messageKey": "message",
    "stacktraceKey": "stacktrace",
    "lineEnding": "",
    "levelEncoder": "",
    "timeEncoder": "iso8601",
    "durationEncoder": "",
    "callerEncoder": ""
  }
}"#;

/// 2025-12-01T05:13:30.041234567Z.
fn at() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_764_566_010, 41_234_567)
}

fn line(settings: &Settings, level: Level, message: &str, fields: &[(&str, &str)]) -> String {
    let f = &settings.format;
    let context = f.context(&settings.fields, "default/hello-00001", "hello-pod");
    let entry = Entry {
        level,
        caller: "queue/src/app.rs:180",
        message,
        fields,
    };
    f.line(settings.name, &context, &entry, at())
}

#[test]
fn knatives_default_config_writes_stackdriver_json_on_stdout() {
    let s = Settings::from_knative(KNATIVE_DEFAULT, "");
    assert_eq!(s.level, Level::Info);
    assert_eq!(s.outputs, [Output::Stdout]);
    assert_eq!(s.name, "queueproxy");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(
        line(&s, Level::Info, "listening on main 0.0.0.0:8012", &[]),
        concat!(
            r#"{"severity":"info","timestamp":"2025-12-01T05:13:30.041Z","logger":"queueproxy","#,
            r#""caller":"src/app.rs:180","message":"listening on main 0.0.0.0:8012","#,
            r#""knative.dev/key":"default/hello-00001","knative.dev/pod":"hello-pod"}"#,
            "\n"
        )
    );
    assert!(line(&s, Level::Warn, "x", &[]).starts_with(r#"{"severity":"warn","#));
    assert!(line(&s, Level::Error, "x", &[]).starts_with(r#"{"severity":"error","#));
}

#[test]
fn an_empty_or_broken_config_gives_knatives_fallback_logger_on_stderr() {
    for (config, error) in [
        ("", "empty logger configuration"),
        ("{bad", "key must be a string"),
        (r#"{"level":"loud"}"#, r#"unrecognized level: "loud""#),
        (
            r#"{"encoding":"yaml"}"#,
            r#"no encoder registered for name "yaml""#,
        ),
        (r#"{"outputPaths":"stdout"}"#, "invalid type"),
    ] {
        let s = Settings::from_knative(config, "");
        assert_eq!(s.outputs, [Output::Stderr], "{config}");
        assert_eq!(s.name, "fallback-logger.queueproxy", "{config}");
        assert_eq!(s.format, stackdriver().format, "{config}");
        assert_eq!(s.warnings.len(), 1, "{config}");
        assert_eq!(
            s.warnings[0].message,
            "Failed to parse logging config - using default zap production config"
        );
        assert!(
            s.warnings[0].error.contains(error),
            "{config}: {:?}",
            s.warnings[0].error
        );
    }
    // The warning carries zap's `error` field.
    let s = Settings::from_knative("", "");
    let w = &s.warnings[0];
    assert!(
        line(&s, Level::Warn, &w.message, &[("error", &w.error)]).ends_with(
            r#""knative.dev/pod":"hello-pod","error":"empty logger configuration"}
"#
        )
    );
}

#[test]
fn serving_logging_level_overrides_the_configs_level_unless_invalid() {
    let debug = KNATIVE_DEFAULT.replace(r#""level": "info""#, r#""level": "debug""#);
    for (config, level_override, want, warnings) in [
        (KNATIVE_DEFAULT, "", Level::Info, 0),
        (debug.as_str(), "", Level::Debug, 0),
        (KNATIVE_DEFAULT, "error", Level::Error, 0),
        (KNATIVE_DEFAULT, "WARN", Level::Warn, 0),
        (debug.as_str(), "loud", Level::Debug, 1),
        // The fallback logger takes the override too.
        ("", "debug", Level::Debug, 1),
    ] {
        let s = Settings::from_knative(config, level_override);
        assert_eq!(s.level, want, "{level_override:?}");
        assert_eq!(
            s.warnings.len(),
            warnings,
            "{level_override:?}: {:?}",
            s.warnings
        );
    }
}

#[test]
fn encoder_config_keys_and_encoders() {
    let s = Settings::from_knative(
        r#"{"encoderConfig":{"messageKey":"msg","levelKey":"level","timeKey":"ts","nameKey":"",
            "callerKey":"","levelEncoder":"capital","timeEncoder":"epoch","lineEnding":"\r\n"},
            "initialFields":{"app":"knoxy"}}"#,
        "",
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(
        line(&s, Level::Warn, "hi", &[]),
        concat!(
            r#"{"level":"WARN","ts":1764566010.0412347,"msg":"hi","app":"knoxy","#,
            r#""knative.dev/key":"default/hello-00001","knative.dev/pod":"hello-pod"}"#,
            "\r\n"
        )
    );
    for (encoder, want) in [
        ("iso8601", r#""2025-12-01T05:13:30.041Z""#),
        ("ISO8601", r#""2025-12-01T05:13:30.041Z""#),
        ("rfc3339", r#""2025-12-01T05:13:30Z""#),
        ("rfc3339nano", r#""2025-12-01T05:13:30.041234567Z""#),
        ("millis", "1764566010041.2346"),
        ("nanos", "1764566010041234567"),
        ("", "1764566010.0412347"),
    ] {
        let config = format!(r#"{{"encoderConfig":{{"timeEncoder":"{encoder}","levelKey":""}}}}"#);
        let s = Settings::from_knative(&config, "");
        let got = line(&s, Level::Info, "m", &[]);
        assert!(
            got.starts_with(&format!(r#"{{"timestamp":{want},"#)),
            "{encoder:?}: {got}"
        );
    }
    let s = Settings::from_knative(r#"{"disableCaller":true}"#, "");
    assert!(!line(&s, Level::Info, "m", &[]).contains("caller"));
    let s = Settings::from_knative(r#"{"encoderConfig":{"callerEncoder":"full"}}"#, "");
    assert!(line(&s, Level::Info, "m", &[]).contains(r#""caller":"queue/src/app.rs:180""#));
}

#[test]
fn console_encoding_is_tab_separated_with_the_fields_as_spaced_json() {
    let s = Settings::from_knative(r#"{"encoding":"console","outputPaths":["stdout"]}"#, "");
    assert_eq!(
        line(&s, Level::Error, "Failed to bring up queue-proxy", &[]),
        concat!(
            "2025-12-01T05:13:30.041Z\terror\tqueueproxy\tsrc/app.rs:180\t",
            "Failed to bring up queue-proxy\t",
            r#"{"knative.dev/key": "default/hello-00001", "knative.dev/pod": "hello-pod"}"#,
            "\n"
        )
    );
}

#[test]
fn output_paths_are_zap_sink_names() {
    let s = Settings::from_knative(
        r#"{"outputPaths":["stdout","stderr","/var/log/q.log","file:///tmp/q.log"]}"#,
        "",
    );
    assert_eq!(
        s.outputs,
        [
            Output::Stdout,
            Output::Stderr,
            Output::File("/var/log/q.log".into()),
            Output::File("/tmp/q.log".into()),
        ]
    );
    assert!(open(&[Output::File("/nonexistent/dir/q.log".into())])
        .is_err_and(|e| e.contains("couldn't open sink")));
}

#[test]
fn civil_dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
}
