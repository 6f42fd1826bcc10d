//! `httpoption` (Knative's httpoption.go): with TLS, `Enabled` serves plain HTTP and
//! `Redirected` answers it with a 301 to https; https serves 200 either way.

use http::StatusCode;
use serde_json::json;

use crate::common::{certificate, get_tls, tls_connector};
use crate::fixture::*;
use crate::tls::tls_secret;

#[tokio::test]
async fn httpoption() {
    let mut c = Cluster::new();
    let svc = c.service("httpoption");
    let hosts = ["enabled.example.com", "redirected.example.com"];
    let (cert, key, root) = certificate(&hosts);
    c.write("secret.yaml", &[tls_secret("option-cert", &cert, &key)]);
    for (name, host, option) in [
        ("enabled", hosts[0], "Enabled"),
        ("redirected", hosts[1], "Redirected"),
    ] {
        let mut spec = simple(host, &svc);
        spec["httpOption"] = json!(option);
        spec["tls"] =
            json!([{"hosts": [host], "secretName": "option-cert", "secretNamespace": NS}]);
        c.ingress(name, spec);
    }
    let gw = c.gateway();
    ready(&gw, "enabled", None).await;
    ready(&gw, "redirected", None).await;

    let (status, body) = get_host(&gw, "public", hosts[0], "/").await;
    assert_eq!(
        echo(status, &body)["suffix"],
        "httpoption",
        "Enabled over http"
    );
    let (status, headers, _) = get_host_with(&gw, "public", hosts[1], "/a?b=1", &[]).await;
    assert_eq!(
        status,
        StatusCode::MOVED_PERMANENTLY,
        "Redirected over http"
    );
    assert_eq!(headers["location"], format!("https://{}/a?b=1", hosts[1]));
    for host in hosts {
        let (status, _, body) = get_tls(gw.addr("https"), host, "/", &tls_connector(&root, b"h2"))
            .await
            .unwrap();
        assert_eq!(
            echo(status, &body)["suffix"],
            "httpoption",
            "{host} over https"
        );
    }
    let (status, body) = get_host(&gw, "private", hosts[1], "/").await;
    assert_eq!(
        echo(status, &body)["suffix"],
        "httpoption",
        "the private listener is not redirected"
    );
}
