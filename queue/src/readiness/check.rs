//! One attempt of one probe against the user container: TCP connect, HTTP GET, or gRPC health.

use std::io;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::spec::{Handler, Scheme};

/// The User-Agent Knative's HTTP probe really sends: its version fields are empty (contract §6.3).
const PROBE_USER_AGENT: &str = "kube-probe//";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("dial tcp {addr}: {source}")]
    Dial { addr: String, source: io::Error },
    #[error("HTTP probe did not respond Ready, got status code: {0}")]
    Status(u16),
    #[error("HTTP probe failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("invalid probe request: {0}")]
    Request(#[from] http::Error),
    #[error("gRPC probe failed: {0}")]
    Grpc(String),
}

pub async fn attempt(handler: &Handler, http2_auto: bool) -> Result<(), ProbeError> {
    match handler {
        Handler::Tcp { host, port } => dial(host, *port).await.map(drop),
        Handler::Http {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            let target = Target {
                scheme: *scheme,
                host,
                port: *port,
                uri: format!("/{}", path.trim_start_matches('/')),
            };
            if http2_auto {
                // Try HTTP/2 with only the UA; if it answers, send the real probe over HTTP/2 (contract §6.3).
                if let Ok(status) = target.get(true, &[]).await {
                    if is_ready(status) {
                        return expect_ready(target.get(true, headers).await?);
                    }
                }
                return expect_ready(target.get(false, &[]).await?);
            }
            expect_ready(target.get(false, headers).await?)
        }
        Handler::Grpc { port, service } => grpc_health(*port, service).await,
    }
}

fn is_ready(status: StatusCode) -> bool {
    (200..400).contains(&status.as_u16())
}

fn expect_ready(status: StatusCode) -> Result<(), ProbeError> {
    if is_ready(status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status.as_u16()))
    }
}

async fn dial(host: &str, port: u16) -> Result<TcpStream, ProbeError> {
    let addr = format!("{host}:{port}");
    TcpStream::connect(&addr)
        .await
        .map_err(|source| ProbeError::Dial { addr, source })
}

/// Where an `httpGet` probe goes.
struct Target<'a> {
    scheme: Scheme,
    host: &'a str,
    port: u16,
    uri: String,
}

impl Target<'_> {
    /// One GET on a fresh connection (Knative's probe transport disables keep-alive).
    async fn get(&self, h2: bool, headers: &[(String, String)]) -> Result<StatusCode, ProbeError> {
        let tcp = dial(self.host, self.port).await?;
        match self.scheme {
            Scheme::Http => self.get_over(TokioIo::new(tcp), h2, headers).await,
            Scheme::Https => {
                let tls = tls_connect(self.host, tcp, h2).await?;
                self.get_over(TokioIo::new(tls), h2, headers).await
            }
        }
    }

    async fn get_over<IO>(
        &self,
        io: IO,
        h2: bool,
        headers: &[(String, String)],
    ) -> Result<StatusCode, ProbeError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let authority = format!("{}:{}", self.host, self.port);
        let mut req = Request::builder()
            .method(Method::GET)
            .header(header::USER_AGENT, PROBE_USER_AGENT);
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        req = req.header(header::ACCEPT_ENCODING, "gzip");
        let empty = Full::new(Bytes::new());
        let response = if h2 {
            let (mut send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            let scheme = if self.scheme == Scheme::Https {
                "https"
            } else {
                "http"
            };
            let req = req
                .uri(format!("{scheme}://{authority}{}", self.uri))
                .body(empty)?;
            send.send_request(req).await?
        } else {
            let (mut send, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            let req = req
                .uri(self.uri.as_str())
                .header(header::HOST, authority)
                .header(header::CONNECTION, "close")
                .body(empty)?;
            send.send_request(req).await?
        };
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// TLS for HTTPS probes. Like the kubelet, the probe checks that the app answers, not who it
/// is, so the certificate is not verified.
async fn tls_connect(
    host: &str,
    tcp: TcpStream,
    h2: bool,
) -> Result<TlsStream<TcpStream>, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let name = ServerName::try_from(host.to_owned()).map_err(|e| ProbeError::Tls(e.to_string()))?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| ProbeError::Tls(e.to_string()))
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `grpc.health.v1.Health/Check` over h2c; passes only on `SERVING`.
async fn grpc_health(port: u16, service: &str) -> Result<(), ProbeError> {
    let io = TokioIo::new(dial("127.0.0.1", port).await?);
    let (mut send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://127.0.0.1:{port}/grpc.health.v1.Health/Check"
        ))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, PROBE_USER_AGENT)
        .body(Full::new(grpc_frame(&health_request(service))))?;
    let response = send.send_request(req).await?;
    if response.status() != StatusCode::OK {
        return Err(ProbeError::Grpc(format!(
            "HTTP status {}",
            response.status()
        )));
    }
    let collected = response.into_body().collect().await?;
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.as_bytes().to_vec());
    if grpc_status.as_deref().is_some_and(|s| s != b"0") {
        return Err(ProbeError::Grpc(format!(
            "grpc-status {}",
            String::from_utf8_lossy(&grpc_status.unwrap_or_default())
        )));
    }
    let mut body = collected.to_bytes();
    if body.len() < 5 {
        return Err(ProbeError::Grpc("no response message".to_owned()));
    }
    body.advance(5);
    match health_status(&body) {
        Some(1) => Ok(()),
        other => Err(ProbeError::Grpc(format!(
            "rpc health status is {}",
            other.unwrap_or(0)
        ))),
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: `status` 1 is SERVING; absent is 0 (UNKNOWN).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

fn health_request(service: &str) -> Bytes {
    let service = service.to_owned();
    HealthCheckRequest { service }.encode_to_vec().into()
}

fn health_status(msg: &[u8]) -> Option<i32> {
    HealthCheckResponse::decode(msg).ok().map(|r| r.status)
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, payload.
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + msg.len());
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    buf.extend_from_slice(msg);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_round_trip_through_the_wire_format() {
        assert_eq!(&health_request("")[..], b"");
        assert_eq!(&health_request("svc")[..], b"\x0a\x03svc");
        assert_eq!(health_status(b"\x08\x01"), Some(1));
        assert_eq!(health_status(b""), Some(0));
        assert_eq!(health_status(b"\x12\x01x\x08\x02"), Some(2));
        assert_eq!(health_status(b"\x08"), None);
        assert_eq!(&grpc_frame(b"ab")[..], b"\x00\x00\x00\x00\x02ab");
    }
}
