//! `basics`, `basics/http2` (Knative's basic.go).

use http::{Method, StatusCode};
use knoxy_tests::{empty, fetch, h2c_client, request_with};
use serde_json::json;

use crate::fixture::*;

#[tokio::test]
async fn basics() {
    let mut c = Cluster::new();
    let svc = c.service("basics");
    c.ingress("basics", simple("basics.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "basics", None).await;

    let (status, body) = get_host(&gw, "public", "basics.example.com", "/").await;
    let seen = echo(status, &body);
    assert_eq!(seen["suffix"], "basics");
    assert_eq!(seen["proto"], "HTTP/1.1");
    assert_eq!(seen["host"], "basics.example.com");

    // Beyond Knative's test (contract §7): a port in the Host, h2c from the client, unknown hosts.
    let (status, body) = get_host(&gw, "public", "basics.example.com:80", "/").await;
    assert_eq!(echo(status, &body)["suffix"], "basics", "host:port matches");
    let req = request_with(
        Method::GET,
        &gw.url("public", "/"),
        &[("host", "basics.example.com")],
        empty(),
    );
    let (status, _, body) = fetch(&h2c_client(), req).await;
    assert_eq!(
        echo(status, &body)["proto"],
        "HTTP/1.1",
        "h2c in, HTTP/1.1 out"
    );
    assert_eq!(
        get_host(&gw, "public", "unknown.example.com", "/").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn basics_http2() {
    let mut c = Cluster::new();
    let svc = c.h2c_service("basics-http2");
    c.ingress("basics-http2", simple("h2.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "basics-http2", None).await;

    let (status, body) = get_host(&gw, "public", "h2.example.com", "/").await;
    assert_eq!(
        echo(status, &body)["proto"],
        json!("HTTP/2.0"),
        "the backend sees HTTP/2 (ProtoMajor 2) though the client spoke HTTP/1.1"
    );
}
