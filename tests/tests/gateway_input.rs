//! The gateway and bad input: malformed requests, request smuggling attempts and oversized
//! headers get a 4xx (or are framed safely), and the gateway keeps serving.
#![allow(clippy::unwrap_used)]

use http::{Method, StatusCode};
use knoxy_tests::{
    backend, backend_stats, empty, exchange, fetch, gateway, http1_client, request_with, statuses,
    Proc, TempDir,
};

fn config(dir: &TempDir, pod: &Proc) {
    let port = pod.addr("backend").port();
    dir.write(
        "hello.yaml",
        &format!(
            "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: hello\n  namespace: default\n  annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}\nspec:\n  rules:\n  - hosts: [q]\n    http:\n      paths:\n      - splits: [{{serviceNamespace: default, serviceName: rev, servicePort: 80, percent: 100}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: rev, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: rev-x, namespace: default, labels: {{kubernetes.io/service-name: rev}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {port}}}]\n"
        ),
    );
}

async fn assert_still_serving(gw: &Proc, after: &str) {
    let req = request_with(
        Method::GET,
        &gw.url("public", "/after"),
        &[("host", "q")],
        empty(),
    );
    assert_eq!(
        fetch(&http1_client(), req).await.0,
        StatusCode::OK,
        "a request after {after}"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_gateway_keeps_serving() {
    let pod = backend();
    let dir = TempDir::new("gw-input");
    config(&dir, &pod);
    let gw = gateway(&dir.0);
    let cases: [(&str, &[u8]); 4] = [
        ("a garbage request line", b"this is not http\r\n\r\n"),
        (
            "a header name with a space",
            b"GET / HTTP/1.1\r\nHost: q\r\nBad Header: v\r\n\r\n",
        ),
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: q\r\nno-colon-here\r\n\r\n",
        ),
        (
            "two different Content-Length values",
            b"POST / HTTP/1.1\r\nHost: q\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        ),
    ];
    for (what, raw) in cases {
        let answer = exchange(gw.addr("public"), raw.to_vec()).await;
        assert_eq!(statuses(&answer), [400], "{what}: {answer:.200}");
        assert_still_serving(&gw, what).await;
    }
    assert_eq!(
        backend_stats(&pod).await["requests"],
        4,
        "only the good requests reached the backend"
    );
}

#[tokio::test]
async fn content_length_with_chunked_cannot_smuggle_a_second_request() {
    let pod = backend();
    let dir = TempDir::new("gw-input");
    config(&dir, &pod);
    let gw = gateway(&dir.0);
    // CL says the body ends after "0\r\n\r\n"; chunked says the same; the trailing request
    // would be smuggled if the two framings were mixed.
    let raw = b"POST / HTTP/1.1\r\nHost: q\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: q\r\n\r\n".to_vec();
    let answer = exchange(gw.addr("public"), raw).await;
    let codes = statuses(&answer);
    assert!(
        codes == [400] || codes == [200],
        "one answer, a 400 or the chunked request: {answer:.300}"
    );
    let stats = backend_stats(&pod).await;
    assert!(
        stats["requests"].as_u64().unwrap() <= 1,
        "the backend saw a smuggled request: {stats}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_gateway_keeps_serving() {
    let pod = backend();
    let dir = TempDir::new("gw-input");
    config(&dir, &pod);
    let gw = gateway(&dir.0);
    let mut raw = b"GET / HTTP/1.1\r\nHost: q\r\nX-Big: ".to_vec();
    raw.resize(raw.len() + (2 << 20), b'x');
    raw.extend_from_slice(b"\r\n\r\n");
    let answer = exchange(gw.addr("public"), raw).await;
    assert_eq!(statuses(&answer), [431], "{answer:.200}");
    assert_still_serving(&gw, "an oversized header").await;
}
