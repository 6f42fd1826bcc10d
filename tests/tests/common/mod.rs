//! Helpers shared by several black-box test files (they need tonic, a dev-dependency).
#![allow(dead_code, clippy::unwrap_used)]

use http::uri::PathAndQuery;
use knoxy_tests::grpc::{PingReply, PingRequest};
use knoxy_tests::within;

/// Connects to `channel`'s endpoint and sends one unary `knoxy.test.Ping/Ping`; the reply text.
pub async fn ping(channel: tonic::transport::Endpoint, message: &str) -> String {
    let mut grpc =
        tonic::client::Grpc::new(within("gRPC connect", channel.connect()).await.unwrap());
    within("gRPC ready", grpc.ready()).await.unwrap();
    let request = tonic::Request::new(PingRequest {
        message: message.into(),
    });
    let path = PathAndQuery::from_static("/knoxy.test.Ping/Ping");
    let reply: tonic::Response<PingReply> = within(
        "unary Ping",
        grpc.unary(request, path, tonic_prost::ProstCodec::default()),
    )
    .await
    .unwrap();
    reply.into_inner().message
}
