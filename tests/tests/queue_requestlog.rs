//! knoxy-queue's request log (contract §10): one line per request on stdout from Knative's
//! `logging.request-log-template`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::{Method, StatusCode};
use knoxy_tests::{backend, empty, fetch, http1_client, queue, queue_env, request_with, Proc};
use serde_json::Value;

/// The request-log lines printed so far (the JSON lines that are not zap process logs).
fn request_lines(q: &Proc) -> Vec<Value> {
    q.stdout_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("severity").is_none())
        .collect()
}

#[tokio::test]
async fn default_template_logs_one_json_line_per_proxied_request() {
    let b = backend();
    let q = queue(b.addr("backend").port())
        .env("OBSERVABILITY_CONFIG", r#"{"enableRequestLog":true}"#)
        .spawn();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = request_with(
        Method::GET,
        &q.url("main", "/a?x=1&text=hello"),
        &[("user-agent", "curl/8"), ("traceparent", tp)],
        empty(),
    );
    let (status, _, _) = fetch(&http1_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    let probe = request_with(
        Method::GET,
        &q.url("main", "/"),
        &[
            ("user-agent", "kube-probe/1.30"),
            ("k-network-probe", "queue"),
        ],
        empty(),
    );
    assert_eq!(fetch(&http1_client(), probe).await.0, StatusCode::OK);
    assert!(q.wait_for_output("httpRequest", Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let lines = request_lines(&q);
    assert_eq!(lines.len(), 1, "probes are not logged: {lines:?}");
    let r = &lines[0]["httpRequest"];
    assert_eq!(r["requestMethod"], "GET");
    assert_eq!(r["requestUrl"], "/a?x=1&text=hello");
    assert_eq!(r["status"], 200);
    assert_eq!(r["responseSize"], "5");
    assert_eq!(r["userAgent"], "curl/8");
    assert_eq!(r["protocol"], "HTTP/1.1");
    assert_eq!(r["serverIp"], "127.0.0.1");
    assert!(r["latency"].as_str().unwrap().ends_with('s'));
    assert_eq!(lines[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    // Go's `js` escapes `=` and `&`, which JSON decoding undoes; the raw line shows them escaped.
    assert!(
        q.stdout_text()
            .contains(r#""/a?x\u003D1\u0026text\u003Dhello""#),
        "{}",
        q.stdout_text()
    );
}

#[tokio::test]
async fn custom_templates_and_probe_logging() {
    let b = backend();
    let q = queue(b.addr("backend").port())
        .env(
            "OBSERVABILITY_CONFIG",
            r#"{"enableRequestLog":true,"enableProbeRequestLog":true,"requestLogTemplate":"LOG {{.Request.Method}} {{.Response.Code}} {{.Revision.Name}} {{.Request.Header.Get \"X-Id\"}}"}"#,
        )
        .spawn();
    let req = request_with(
        Method::POST,
        &q.url("main", "/?status=201"),
        &[("x-id", "42")],
        empty(),
    );
    assert_eq!(fetch(&http1_client(), req).await.0, StatusCode::CREATED);
    let probe = request_with(
        Method::GET,
        &q.url("main", "/"),
        &[("k-network-probe", "probe"), ("k-network-hash", "h")],
        empty(),
    );
    assert_eq!(fetch(&http1_client(), probe).await.0, StatusCode::OK);
    assert!(
        q.wait_for_output("LOG GET 200 hello-00001", Duration::from_secs(5)),
        "{}",
        q.stdout_text()
    );
    assert!(
        q.stdout_text().contains("LOG POST 201 hello-00001 42\n"),
        "{}",
        q.stdout_text()
    );
}

#[tokio::test]
async fn an_invalid_template_is_a_start_up_error() {
    let (status, _, stderr) = Proc::builder("knoxy-queue")
        .envs(queue_env(1))
        .env(
            "OBSERVABILITY_CONFIG",
            r#"{"enableRequestLog":true,"requestLogTemplate":"{{.Request.Method"}"#,
        )
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("OBSERVABILITY_CONFIG") && stderr.contains("requestLogTemplate"),
        "{stderr}"
    );
}
