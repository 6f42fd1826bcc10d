//! `grpc`, `grpc/split` (Knative's grpc.go): bidi streams through h2c prior knowledge with
//! `:authority host:80`.

use std::collections::BTreeSet;

use serde_json::json;

use crate::common::{grpc_endpoint, PingStream};
use crate::fixture::*;

#[tokio::test]
async fn grpc() {
    let mut c = Cluster::new();
    let svc = c.h2c_service("grpc");
    c.ingress("grpc", simple("grpc.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "grpc", None).await;

    let endpoint = grpc_endpoint(gw.addr("public"), "grpc.example.com:80");
    let mut stream = PingStream::open(endpoint).await;
    for i in 0..100 {
        let reply = stream.round_trip(&format!("hello {i}")).await;
        assert_eq!(reply, format!("pong: hello {i}grpc"));
    }
    stream.finish().await;
}

#[tokio::test]
async fn grpc_split() {
    let mut c = Cluster::new();
    let (a, b) = (c.h2c_service("grpc-a"), c.h2c_service("grpc-b"));
    let paths = json!([{"splits": [split(&a, 50), split(&b, 50)]}]);
    c.ingress(
        "grpc-split",
        json!({"rules": [rule(&["grpc-split.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "grpc-split", None).await;

    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        let endpoint = grpc_endpoint(gw.addr("public"), "grpc-split.example.com:80");
        let mut stream = PingStream::open(endpoint).await;
        let first = stream.round_trip("0").await;
        let backend = first.strip_prefix("pong: 0").unwrap().to_owned();
        for i in 1..5 {
            let reply = stream.round_trip(&i.to_string()).await;
            assert_eq!(
                reply,
                format!("pong: {i}{backend}"),
                "a stream stays on one backend"
            );
        }
        stream.finish().await;
        seen.insert(backend);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from(["grpc-a".into(), "grpc-b".into()]));
}
