//! `tls` (Knative's tls.go): `spec.tls` with a generated certificate in a Secret; both
//! `http://` and `https://` (with SNI) answer 200.

use base64::Engine as _;
use http::StatusCode;
use serde_json::{json, Value};

use crate::common::{certificate, get_tls, tls_connector};
use crate::fixture::*;

/// The Secret Knative's tests create for a generated certificate.
pub fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": NS},
           "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem)}})
}

#[tokio::test]
async fn tls() {
    const HOST: &str = "tls.example.com";
    let mut c = Cluster::new();
    let svc = c.service("tls");
    let (cert, key, root) = certificate(&[HOST]);
    c.write("secret.yaml", &[tls_secret("tls-cert", &cert, &key)]);
    let mut spec = simple(HOST, &svc);
    spec["tls"] = json!([{"hosts": [HOST], "secretName": "tls-cert", "secretNamespace": NS}]);
    c.ingress("tls", spec);
    let gw = c.gateway();
    ready(&gw, "tls", None).await;

    let (status, body) = get_host(&gw, "public", HOST, "/").await;
    assert_eq!(echo(status, &body)["suffix"], "tls", "http://");
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let (status, _, body) = get_tls(gw.addr("https"), HOST, "/", &tls_connector(&root, alpn))
            .await
            .expect("the handshake verifies the certificate for the SNI name");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(knoxy_tests::json(&body)["suffix"], "tls");
    }
}
