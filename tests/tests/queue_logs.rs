//! knoxy-queue's process logs follow the zap config Knative passes in `SERVING_LOGGING_CONFIG`
//! and the level in `SERVING_LOGGING_LEVEL` (contract §1.2, §10).
#![allow(clippy::unwrap_used)]

use knoxy_tests::{queue, queue_env, Proc, TempDir, TIMEOUT};
use serde_json::Value;

/// config-logging's `zap-logger-config` as Knative ships it.
const KNATIVE_DEFAULT: &str = r#"{"level":"info","development":false,"outputPaths":["stdout"],"errorOutputPaths":["stderr"],"encoding":"json","encoderConfig":{"timeKey":"timestamp","levelKey":"severity","nameKey":"logger","callerKey":"caller","messageKey":"message","stacktraceKey":"stacktrace","lineEnding":"","levelEncoder":"","timeEncoder":"iso8601","durationEncoder":"","callerEncoder":""}}"#;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect()
}

fn with_message<'a>(lines: &'a [Value], key: &str, needle: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l[key].as_str().is_some_and(|m| m.contains(needle)))
        .unwrap_or_else(|| panic!("no line whose {key} contains {needle:?} in {lines:#?}"))
}

#[test]
fn knatives_default_config_logs_stackdriver_json_lines_on_stdout() {
    let q = queue(8080)
        .env("SERVING_LOGGING_CONFIG", KNATIVE_DEFAULT)
        .spawn();
    let lines = json_lines(&q.stdout_text());
    let line = with_message(&lines, "message", "listening on main");
    assert_eq!(line["severity"], "info", "{line}");
    assert_eq!(line["logger"], "queueproxy", "{line}");
    assert_eq!(line["knative.dev/key"], "default/hello-00001", "{line}");
    assert_eq!(
        line["knative.dev/pod"], "hello-00001-deployment-1",
        "{line}"
    );
    assert!(line["caller"].as_str().unwrap().contains(".rs:"), "{line}");
    let ts = line["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == "2006-01-02T15:04:05.000Z".len()
            && ts.ends_with('Z')
            && ts.as_bytes()[10] == b'T',
        "ISO 8601 with milliseconds: {line}"
    );
    let raw = q
        .stdout_text()
        .lines()
        .find(|l| l.contains("listening on main"))
        .unwrap()
        .to_owned();
    let at = |key: &str| raw.find(&format!("\"{key}\":")).unwrap();
    let keys = [
        "severity",
        "timestamp",
        "logger",
        "caller",
        "message",
        "knative.dev/key",
        "knative.dev/pod",
    ];
    assert!(
        keys.windows(2).all(|k| at(k[0]) < at(k[1])),
        "zap's field order {keys:?}: {raw}"
    );
    assert_eq!(q.stderr_text(), "", "nothing on stderr");
}

#[test]
fn an_empty_config_logs_knatives_fallback_on_stderr_with_a_warning() {
    // The harness's env has SERVING_LOGGING_CONFIG="".
    let q = queue(8080).spawn();
    assert_eq!(q.stdout_text(), "", "no process log on stdout");
    let lines = json_lines(&q.stderr_text());
    let warning = with_message(&lines, "message", "Failed to parse logging config");
    assert_eq!(warning["severity"], "warn", "{warning}");
    assert_eq!(warning["error"], "empty logger configuration", "{warning}");
    let line = with_message(&lines, "message", "listening on main");
    assert_eq!(line["logger"], "fallback-logger.queueproxy", "{line}");
}

#[test]
fn configured_keys_encoders_and_a_file_output_are_honoured() {
    let dir = TempDir::new("queue-logs");
    let file = dir.0.join("queue.log");
    let config = serde_json::json!({
        "level": "info",
        "outputPaths": ["stdout", file.display().to_string()],
        "encoding": "json",
        "encoderConfig": {
            "messageKey": "msg", "levelKey": "level", "timeKey": "ts", "nameKey": "",
            "callerKey": "", "levelEncoder": "capital", "timeEncoder": "nanos"
        }
    })
    .to_string();
    let q = queue(8080).env("SERVING_LOGGING_CONFIG", config).spawn();
    let stdout = q.stdout_text();
    // A line reaches stdout, then the file: wait until the file has caught up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let from_file = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if stdout.lines().all(|l| text.lines().any(|f| f == l))
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    for l in stdout.lines() {
        assert!(
            from_file.lines().any(|f| f == l),
            "each line goes to both outputs: {l}\nfile:\n{from_file}"
        );
    }
    let lines = json_lines(&from_file);
    let line = with_message(&lines, "msg", "listening on main");
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(
        line["ts"].as_u64().unwrap() > 1_700_000_000_000_000_000,
        "{line}"
    );
    for absent in ["logger", "caller", "message", "severity", "timestamp"] {
        assert!(line.get(absent).is_none(), "no {absent}: {line}");
    }
}

#[test]
fn the_level_comes_from_the_config_unless_serving_logging_level_overrides_it() {
    // A warning (an unsupported tracing protocol) and an error (a port in use), then exit.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let run = |config: &str, level: &str| {
        let (status, stdout, stderr) = Proc::builder("knoxy-queue")
            .envs(queue_env(8080))
            .env(
                "QUEUE_SERVING_PORT",
                taken.local_addr().unwrap().port().to_string(),
            )
            .env("OBSERVABILITY_CONFIG", r#"{"tracing":{"protocol":"grpc"}}"#)
            .env("SERVING_LOGGING_CONFIG", config)
            .env("SERVING_LOGGING_LEVEL", level)
            .run_to_exit(TIMEOUT);
        assert_eq!(status.code(), Some(1), "{stderr}");
        json_lines(&stdout)
            .iter()
            .map(|l| l["severity"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let warn = KNATIVE_DEFAULT.replace(r#""level":"info""#, r#""level":"warn""#);
    assert_eq!(run(&warn, ""), ["warn", "error"]);
    assert_eq!(run(&warn, "error"), ["error"]);
    assert_eq!(run(KNATIVE_DEFAULT, "error"), ["error"]);
}
