//! Protobuf messages of the test backend's gRPC services, derived by hand so no protoc is needed.

/// Request of `/knoxy.test.Ping/Ping` and of each message of `/knoxy.test.Ping/PingStream`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PingRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// Reply of the Ping service: `message` is "pong: " followed by the request's message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PingReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// Request of `/grpc.health.v1.Health/Check`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// Reply of `/grpc.health.v1.Health/Check`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

/// Full path of the unary Ping method.
pub const PING: &str = "/knoxy.test.Ping/Ping";
/// Full path of the bidirectional streaming Ping method.
pub const PING_STREAM: &str = "/knoxy.test.Ping/PingStream";
/// Full path of the standard health Check method.
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// Frames one message the gRPC way: compressed flag 0, then its length as 4 big-endian bytes.
pub fn frame(message: &impl prost::Message) -> bytes::Bytes {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(len)
            .expect("message under 4 GiB")
            .to_be_bytes(),
    );
    message
        .encode(&mut out)
        .expect("a Vec grows to fit the message");
    out.into()
}
