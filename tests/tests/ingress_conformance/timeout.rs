//! `timeout` (Knative's timeout.go): the gateway sets no timeout of its own.

use std::time::Duration;

use http::{Method, StatusCode};
use knoxy_tests::{empty, http1_client, request_with, within_for};

use crate::fixture::*;

#[tokio::test]
async fn timeout() {
    let mut c = Cluster::new();
    let svc = c.service("timeout");
    c.ingress("timeout", simple("timeout.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "timeout", None).await;

    let client = http1_client();
    let slow = |path: &str| {
        let req = request_with(
            Method::GET,
            &gw.url("public", path),
            &[("host", "timeout.example.com")],
            empty(),
        );
        let client = client.clone();
        // Bounded at 30 s, past the harness's usual 10 s.
        within_for(Duration::from_secs(30), "a slow response", async move {
            let response = client.request(req).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    // 10.5 s before the headers; headers and a first chunk flushed, then 10.5 s to the rest.
    let (before, mid) = tokio::join!(slow("/?sleep=10500"), slow("/?stream=1&n=2&gap=10500"));
    assert_eq!(before.0, StatusCode::OK, "before the headers: {}", before.1);
    assert_eq!(
        (mid.0, mid.1.as_str()),
        (StatusCode::OK, "chunk0\nchunk1\n"),
        "between the headers and the body"
    );
}
