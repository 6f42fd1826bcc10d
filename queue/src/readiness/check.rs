//! One attempt of one probe against the user container: TCP connect, HTTP GET, or gRPC health.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

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
    #[error("HTTPS readiness probes are not supported by knoxy-queue")]
    Https,
    #[error("gRPC probe failed: {0}")]
    Grpc(String),
}

pub async fn attempt(handler: &Handler, http2_auto: bool) -> Result<(), ProbeError> {
    match handler {
        Handler::Tcp { host, port } => dial(host, *port).await.map(drop),
        Handler::Http {
            scheme: Scheme::Https,
            ..
        } => Err(ProbeError::Https),
        Handler::Http {
            scheme: Scheme::Http,
            host,
            port,
            path,
            headers,
        } => {
            let uri = format!("/{}", path.trim_start_matches('/'));
            let authority = format!("{host}:{port}");
            if http2_auto {
                // Try h2c with only the UA; if it answers, send the real probe over h2c (contract §6.3).
                if let Ok(status) = http_get(host, *port, true, &authority, &uri, &[]).await {
                    if is_ready(status) {
                        return expect_ready(
                            http_get(host, *port, true, &authority, &uri, headers).await?,
                        );
                    }
                }
                return expect_ready(http_get(host, *port, false, &authority, &uri, &[]).await?);
            }
            expect_ready(http_get(host, *port, false, &authority, &uri, headers).await?)
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

/// One GET on a fresh connection (Knative's probe transport disables keep-alive).
async fn http_get(
    host: &str,
    port: u16,
    h2: bool,
    authority: &str,
    uri: &str,
    headers: &[(String, String)],
) -> Result<StatusCode, ProbeError> {
    let io = TokioIo::new(dial(host, port).await?);
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
        let req = req
            .uri(format!("http://{authority}{uri}"))
            .body(empty)
            .map_err(|e| ProbeError::Grpc(e.to_string()))?;
        send.send_request(req).await?
    } else {
        let (mut send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        let req = req
            .uri(uri)
            .header(header::HOST, authority)
            .header(header::CONNECTION, "close")
            .body(empty)
            .map_err(|e| ProbeError::Grpc(e.to_string()))?;
        send.send_request(req).await?
    };
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
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
        .body(Full::new(grpc_frame(&health_request(service))))
        .map_err(|e| ProbeError::Grpc(e.to_string()))?;
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

/// `HealthCheckRequest { string service = 1; }`, proto3 (an empty string is omitted).
fn health_request(service: &str) -> Bytes {
    let mut buf = BytesMut::new();
    if !service.is_empty() {
        buf.extend_from_slice(&[0x0a]);
        put_varint(&mut buf, service.len() as u64);
        buf.extend_from_slice(service.as_bytes());
    }
    buf.freeze()
}

/// Reads field 1 (varint `status`) of `HealthCheckResponse`; absent means 0 (UNKNOWN).
fn health_status(mut msg: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !msg.is_empty() {
        let key = read_varint(&mut msg)?;
        match key & 7 {
            0 => {
                let v = read_varint(&mut msg)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => msg = msg.get(8..)?,
            2 => {
                let len = usize::try_from(read_varint(&mut msg)?).ok()?;
                msg = msg.get(len..)?;
            }
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, payload.
fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + msg.len());
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    buf.extend_from_slice(msg);
    buf.freeze()
}

pub fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.extend_from_slice(&[(v as u8) | 0x80]);
        v >>= 7;
    }
    buf.extend_from_slice(&[v as u8]);
}

fn read_varint(msg: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = msg.split_first()?;
        *msg = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
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
