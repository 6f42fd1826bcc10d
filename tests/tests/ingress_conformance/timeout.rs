//! `timeout` (Knative's timeout.go): the gateway sets no timeout of its own. Knative's cases,
//! run at once: no delay; a long delay before the response head; the head sent bare (flushed,
//! no body byte) and then a long pause before the body. All must answer 200 in full.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use knoxy_tests::{empty, http1_client, request_with, within_for};

use crate::fixture::*;

/// Knative's delay is 10 s; a little more, so a 10 s timer in the gateway would fire first.
const DELAY_MS: u64 = 10_500;

/// What a slow request came back with, and when its head arrived.
struct Slow {
    status: StatusCode,
    head_after: Duration,
    body: String,
}

#[tokio::test]
async fn timeout() {
    let mut c = Cluster::new();
    let svc = c.service("timeout");
    c.ingress("timeout", simple("timeout.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "timeout", None).await;

    let client = http1_client();
    let slow = |path: String| {
        let req = request_with(
            Method::GET,
            &gw.url("public", &path),
            &[("host", "timeout.example.com")],
            empty(),
        );
        let client = client.clone();
        // Bounded at 30 s, past the harness's usual 10 s.
        within_for(Duration::from_secs(30), "a slow response", async move {
            let start = Instant::now();
            let response = client.request(req).await.unwrap();
            let head_after = start.elapsed();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Slow {
                status,
                head_after,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
    };
    let (none, before, after, between_chunks) = tokio::join!(
        slow("/".into()),
        slow(format!("/?sleep={DELAY_MS}")),
        slow(format!("/?pause={DELAY_MS}")),
        // Beyond Knative's cases: a first chunk, then the pause before the second.
        slow(format!("/?stream=1&n=2&gap={DELAY_MS}")),
    );
    for (case, slow) in [
        ("no delay", &none),
        ("a delay before the head", &before),
        ("a pause after a bare head", &after),
    ] {
        assert_eq!(slow.status, StatusCode::OK, "{case}: {}", slow.body);
        assert_eq!(
            knoxy_tests::json(&slow.body)["suffix"],
            "timeout",
            "{case}: the whole body arrives"
        );
    }
    assert!(
        after.head_after < Duration::from_millis(DELAY_MS / 2),
        "the bare head is passed on at once (after {:?}), so the pause falls between head and body",
        after.head_after
    );
    assert_eq!(
        (between_chunks.status, between_chunks.body.as_str()),
        (StatusCode::OK, "chunk0\nchunk1\n"),
        "a pause between chunks"
    );
}
