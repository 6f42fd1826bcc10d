//! Helpers shared by several black-box test files (they need tonic, a dev-dependency).
#![allow(dead_code, clippy::unwrap_used)]

pub mod fixture;

use http::uri::PathAndQuery;
use knoxy_tests::grpc::{PingReply, PingRequest};
use knoxy_tests::within;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

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

/// A `knoxy.test.Ping/PingStream` call kept open: each `round_trip` sends one message and
/// waits for its reply, so a test can see which backend answers every message of one stream.
pub struct PingStream {
    tx: tokio::sync::mpsc::Sender<PingRequest>,
    inbound: tonic::Streaming<PingReply>,
}

impl PingStream {
    /// Connects to `endpoint` and opens the call on that new connection.
    pub async fn open(endpoint: tonic::transport::Endpoint) -> PingStream {
        let channel = within("gRPC connect", endpoint.connect()).await.unwrap();
        PingStream::open_on(channel).await
    }

    /// Opens the call on a connection the caller keeps (several calls may share it).
    pub async fn open_on(channel: tonic::transport::Channel) -> PingStream {
        let mut grpc = tonic::client::Grpc::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel::<PingRequest>(1);
        let outbound = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|message| (message, rx))
        });
        within("gRPC ready", grpc.ready()).await.unwrap();
        let response = within(
            "PingStream headers",
            grpc.streaming(
                tonic::Request::new(outbound),
                PathAndQuery::from_static(knoxy_tests::grpc::PING_STREAM),
                tonic_prost::ProstCodec::<PingRequest, PingReply>::default(),
            ),
        )
        .await
        .unwrap();
        PingStream {
            tx,
            inbound: response.into_inner(),
        }
    }

    pub async fn round_trip(&mut self, message: &str) -> String {
        let request = PingRequest {
            message: message.into(),
        };
        within("send on the stream", self.tx.send(request))
            .await
            .unwrap();
        within("the reply", self.inbound.message())
            .await
            .unwrap()
            .expect("a reply before the stream ends")
            .message
    }

    /// Half-closes the stream; the server's end of the stream follows.
    pub async fn finish(self) {
        let PingStream { tx, mut inbound } = self;
        drop(tx);
        let end = within("end of the reply stream", inbound.message())
            .await
            .unwrap();
        assert_eq!(end, None);
    }
}

/// A gRPC endpoint on `addr` whose requests carry `:authority` `authority` (Knative's tests
/// dial the gateway with the ingress host and port 80).
pub fn grpc_endpoint(addr: std::net::SocketAddr, authority: &str) -> tonic::transport::Endpoint {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
}

/// A self-signed certificate for `hosts`: (PEM certificate, PEM key, DER to trust).
pub fn certificate(hosts: &[&str]) -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(
        hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    )
    .unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().clone(),
    )
}

/// A TLS client trusting only `root`, offering the one ALPN protocol `alpn`.
pub fn tls_connector(root: &CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(std::sync::Arc::new(config))
}

/// GET `path` over TLS to `addr` with SNI and Host `sni`; the protocol follows ALPN. A failed
/// handshake is the error.
pub async fn get_tls(
    addr: std::net::SocketAddr,
    sni: &str,
    path: &str,
    tls: &TlsConnector,
) -> std::io::Result<(http::StatusCode, http::Version, String)> {
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let stream = within("handshake", tls.connect(name, tcp)).await?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(knoxy_tests::get_over(stream, h2, sni, path).await)
}

pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `addr` with `Host: host` (the route the gateway picks); the handshake
/// must switch protocols.
pub async fn ws_dial(addr: std::net::SocketAddr, host: &str) -> WebSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut().insert("host", host.parse().unwrap());
    let (ws, response) = within("WebSocket handshake", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    ws
}
