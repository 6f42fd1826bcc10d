//! `retry` (Knative's retry.go): a backend's 503 reaches the client; the gateway never retries.

use http::StatusCode;

use crate::fixture::*;

#[tokio::test]
async fn retry() {
    let mut c = Cluster::new();
    let svc = c.h2c_service("retry");
    c.ingress("retry", simple("retry.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "retry", None).await;

    let (status, _) = get_host(&gw, "public", "retry.example.com", "/?status=503").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the client sees the 503"
    );
    let (status, body) = get_host(&gw, "public", "retry.example.com", "/").await;
    assert_eq!(echo(status, &body)["suffix"], "retry");
    let served = c.backend_requests("retry").await;
    assert_eq!(served, 2, "the backend saw each request once");
}
