//! The gateway's HTTPS listeners: the certificate is chosen by SNI from the KIngress `tls`
//! entries (Secrets in the config directory); ALPN h2 and http/1.1. Certificates by rcgen.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::Engine as _;
use http::{StatusCode, Version};
use knoxy_tests::{backend, gateway, get_over, json, within, Proc, TempDir};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "secure.example.com";

/// A KIngress for HOST with a `tls` entry, its Secret, and a revision backed by `pod`; returns
/// the certificate the client should trust.
fn config(dir: &TempDir, pod: &Proc) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let port = pod.addr("backend").port();
    dir.write(
        "secure.yaml",
        &format!(
            "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: secure\n  namespace: default\n  annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}\nspec:\n  tls: [{{hosts: [{HOST}], secretName: secure-cert, secretNamespace: default}}]\n  rules:\n  - hosts: [{HOST}]\n    http:\n      paths:\n      - splits: [{{serviceNamespace: default, serviceName: rev, servicePort: 80, percent: 100}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: secure-cert, namespace: default}}\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: rev, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: rev-x, namespace: default, labels: {{kubernetes.io/service-name: rev}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n",
            b64(cert.cert.pem()),
            b64(cert.signing_key.serialize_pem()),
        ),
    );
    cert.cert.der().clone()
}

fn connector(root: &CertificateDer<'static>, alpn: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// GET / over TLS to `label` with SNI `sni`; the protocol follows ALPN.
async fn get_tls(
    gw: &Proc,
    label: &str,
    sni: &'static str,
    tls: &TlsConnector,
) -> std::io::Result<(StatusCode, Version, String)> {
    let tcp = within("connect", TcpStream::connect(gw.addr(label)))
        .await
        .unwrap();
    let stream = within(
        "handshake",
        tls.connect(ServerName::try_from(sni).unwrap(), tcp),
    )
    .await?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(get_over(stream, h2, sni, "/").await)
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_and_alpn_picks_the_protocol() {
    let pod = backend();
    let dir = TempDir::new("gw-tls");
    let root = config(&dir, &pod);
    let gw = gateway(&dir.0);

    let (status, version, body) = get_tls(&gw, "https", HOST, &connector(&root, b"h2"))
        .await
        .unwrap();
    assert_eq!(
        (status, version),
        (StatusCode::OK, Version::HTTP_2),
        "{body}"
    );
    assert_eq!(json(&body)["host"], HOST);

    let (status, version, _) = get_tls(&gw, "https", HOST, &connector(&root, b"http/1.1"))
        .await
        .unwrap();
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));

    let (status, _, _) = get_tls(&gw, "private-https", HOST, &connector(&root, b"h2"))
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "ExternalIP hosts are served on the private TLS listener too"
    );
}

#[tokio::test]
async fn an_unknown_server_name_fails_the_handshake() {
    let pod = backend();
    let dir = TempDir::new("gw-tls");
    let root = config(&dir, &pod);
    let gw = gateway(&dir.0);
    assert!(
        get_tls(&gw, "https", "other.example.com", &connector(&root, b"h2"))
            .await
            .is_err()
    );
}
