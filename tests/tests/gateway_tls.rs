//! The gateway's HTTPS listeners: the certificate is chosen by SNI from the KIngress `tls`
//! entries (Secrets in the config directory); ALPN h2 and http/1.1. Certificates by rcgen.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{certificate, get_tls, tls_connector};
use http::{StatusCode, Version};
use knoxy_tests::{backend, gateway, json, Proc, TempDir};
use rustls::pki_types::CertificateDer;

const HOST: &str = "secure.example.com";

/// A KIngress for HOST with a `tls` entry, its Secret, and a revision backed by `pod`; returns
/// the certificate the client should trust.
fn config(dir: &TempDir, pod: &Proc) -> CertificateDer<'static> {
    let (cert, key, root) = certificate(&[HOST]);
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let port = pod.addr("backend").port();
    dir.write(
        "secure.yaml",
        &format!(
            "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: secure\n  namespace: default\n  annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}\nspec:\n  tls: [{{hosts: [{HOST}], secretName: secure-cert, secretNamespace: default}}]\n  rules:\n  - hosts: [{HOST}]\n    http:\n      paths:\n      - splits: [{{serviceNamespace: default, serviceName: rev, servicePort: 80, percent: 100}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: secure-cert, namespace: default}}\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: rev, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: rev-x, namespace: default, labels: {{kubernetes.io/service-name: rev}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n",
            b64(cert),
            b64(key),
        ),
    );
    root
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_and_alpn_picks_the_protocol() {
    let pod = backend();
    let dir = TempDir::new("gw-tls");
    let root = config(&dir, &pod);
    let gw = gateway(&dir.0);

    let (status, version, body) =
        get_tls(gw.addr("https"), HOST, "/", &tls_connector(&root, b"h2"))
            .await
            .unwrap();
    assert_eq!(
        (status, version),
        (StatusCode::OK, Version::HTTP_2),
        "{body}"
    );
    assert_eq!(json(&body)["host"], HOST);

    let (status, version, _) = get_tls(
        gw.addr("https"),
        HOST,
        "/",
        &tls_connector(&root, b"http/1.1"),
    )
    .await
    .unwrap();
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));

    let (status, _, _) = get_tls(
        gw.addr("private-https"),
        HOST,
        "/",
        &tls_connector(&root, b"h2"),
    )
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
    assert!(get_tls(
        gw.addr("https"),
        "other.example.com",
        "/",
        &tls_connector(&root, b"h2")
    )
    .await
    .is_err());
}
