//! knoxy-queue's TLS listener (contract §9): on only when `tls.crt` and `tls.key` exist,
//! TLS 1.3 unless `QUEUE_PROXY_TLS_MIN_VERSION=1.2`, ALPN `h2` and `http/1.1`, the same
//! handler as the plain serving port. Certificates are made here with rcgen.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{StatusCode, Version};
use knoxy_tests::{backend, get, json, queue, within, Proc};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The name the certificate is made for; the client connects to 127.0.0.1 and sends it as SNI.
const SERVER_NAME: &str = "localhost";

/// A fresh certificate in its own temporary directory, removed on drop.
struct Certs {
    dir: PathBuf,
    root: CertificateDer<'static>,
}

impl Certs {
    /// Writes `tls.crt`, and `tls.key` too when `with_key`.
    fn new(with_key: bool) -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "knoxy-tls-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec![
            SERVER_NAME.to_owned(),
            "data-plane.knative.dev".to_owned(),
        ])
        .unwrap();
        std::fs::write(dir.join("tls.crt"), certified.cert.pem()).unwrap();
        if with_key {
            std::fs::write(dir.join("tls.key"), certified.signing_key.serialize_pem()).unwrap();
        }
        Self {
            dir,
            root: certified.cert.der().clone(),
        }
    }

    fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(certs: &Certs, env: &[(&str, &str)]) -> (Proc, Proc) {
    let b = backend();
    let q = queue(b.addr("backend").port())
        .env("KNOXY_CERTS_DIR", &certs.dir)
        .envs(env.iter().copied())
        .wait_for(&["tls"])
        .spawn();
    (b, q)
}

/// TLS handshake with the queue's TLS port.
async fn handshake(q: &Proc, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = within("connect to the TLS port", TcpStream::connect(q.addr("tls")))
        .await
        .unwrap();
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    within("the TLS handshake", connector.connect(name, tcp)).await
}

/// GET `path` over an established TLS stream, as HTTP/2 if ALPN chose h2, else HTTP/1.1.
async fn get_over(tls: TlsStream<TcpStream>, path: &str) -> (StatusCode, Version, Value) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let (status, version, text) = knoxy_tests::get_over(tls, h2, SERVER_NAME, path).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    (status, version, json(&text))
}

#[tokio::test]
async fn tls_1_3_with_alpn_h2_reaches_the_user_container_as_http2() {
    let certs = Certs::new(true);
    let (_b, q) = start(&certs, &[]);
    let connector = certs.client(&[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let tls = handshake(&q, &connector).await.unwrap();
    let session = tls.get_ref().1;
    assert_eq!(session.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]), "ALPN prefers h2");

    let (_, version, seen) = get_over(tls, "/over-h2?x=1").await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(seen["proto"], "HTTP/2.0", "h2 goes upstream as h2c");
    assert_eq!(seen["uri"], "/over-h2?x=1");
    assert_eq!(seen["host"], SERVER_NAME);
    assert_eq!(seen["headers"]["x-forwarded-for"][0], "127.0.0.1");
}

#[tokio::test]
async fn alpn_http1_reaches_the_user_container_as_http1() {
    let certs = Certs::new(true);
    let (_b, q) = start(&certs, &[]);
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let connector = certs.client(&[&rustls::version::TLS13], alpn);
        let tls = handshake(&q, &connector).await.unwrap();
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(
            negotiated,
            alpn.first().map(|p| p.to_vec()),
            "offered {alpn:?}"
        );
        let (_, version, seen) = get_over(tls, "/over-h1").await;
        assert_eq!(version, Version::HTTP_11, "offered {alpn:?}");
        assert_eq!(seen["proto"], "HTTP/1.1", "offered {alpn:?}");
        assert_eq!(seen["uri"], "/over-h1");
        assert_eq!(seen["host"], SERVER_NAME);
    }
}

#[tokio::test]
async fn the_plain_ports_still_serve_when_tls_is_on() {
    let certs = Certs::new(true);
    let (_b, q) = start(&certs, &[]);
    assert_ne!(q.addr("tls"), q.addr("main"));
    let (status, _, body) = get(&q.url("main", "/plain")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["proto"], "HTTP/1.1");
    let (status, headers, _) = get(&q.url("metrics", "/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/protobuf");
    let (status, _, body) = get(&q.url("admin", "/other")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "404 page not found\n"),
        "the admin port stays plain HTTP"
    );
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused_unless_the_minimum_is_1_2() {
    let certs = Certs::new(true);
    let tls12 = certs.client(&[&rustls::version::TLS12], &[b"http/1.1"]);
    for min in [None, Some("1.3")] {
        let env: Vec<(&str, &str)> = min
            .map(|v| ("QUEUE_PROXY_TLS_MIN_VERSION", v))
            .into_iter()
            .collect();
        let (_b, q) = start(&certs, &env);
        let refused = handshake(&q, &tls12).await;
        assert!(
            refused.is_err(),
            "minimum {min:?}: a TLS 1.2 handshake succeeded"
        );
        // The listener is fine; only that client was refused.
        let tls13 = certs.client(&[&rustls::version::TLS13], &[b"http/1.1"]);
        let tls = handshake(&q, &tls13).await.unwrap();
        get_over(tls, "/after-refusal").await;
    }
}

#[tokio::test]
async fn with_minimum_1_2_a_tls_1_2_client_is_accepted() {
    let certs = Certs::new(true);
    let (_b, q) = start(&certs, &[("QUEUE_PROXY_TLS_MIN_VERSION", "1.2")]);
    for (versions, want, alpn) in [
        (
            &[&rustls::version::TLS12][..],
            ProtocolVersion::TLSv1_2,
            &b"h2"[..],
        ),
        (
            &[&rustls::version::TLS12][..],
            ProtocolVersion::TLSv1_2,
            &b"http/1.1"[..],
        ),
        (
            &[&rustls::version::TLS13, &rustls::version::TLS12][..],
            ProtocolVersion::TLSv1_3,
            &b"h2"[..],
        ),
    ] {
        let connector = certs.client(versions, &[alpn]);
        let tls = handshake(&q, &connector).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(want));
        let (_, _, seen) = get_over(tls, "/tls12").await;
        let proto = if alpn == b"h2" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(seen["proto"], proto, "{want:?} with ALPN {alpn:?}");
    }
}

#[tokio::test]
async fn without_both_certificate_files_there_is_no_tls_listener() {
    let only_crt = Certs::new(false);
    let missing = std::env::temp_dir().join("knoxy-tls-never-created");
    for dir in [only_crt.dir.clone(), missing] {
        let b = backend();
        let q = queue(b.addr("backend").port())
            .env("KNOXY_CERTS_DIR", &dir)
            .spawn();
        assert!(
            !q.wait_for_output("listening on tls", Duration::from_millis(500)),
            "{} started a TLS listener",
            dir.display()
        );
        let (status, _, body) = get(&q.url("main", "/no-tls")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}
