//! Gateway fixtures in YAML: KIngresses of Knoxy's class, revisions backed by test backends.

use knoxy_tests::{backend, gateway, gateway_with, Proc, TempDir};

/// A KIngress of Knoxy's class; `rules` is YAML for `spec.rules`.
pub fn kingress(name: &str, http_option: &str, rules: &str) -> String {
    format!(
        "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n    networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev\nspec:\n  httpOption: {http_option}\n  rules:\n{rules}\n---\n"
    )
}

/// A revision's public Service and the EndpointSlice of its one pod (a test backend).
pub fn revision(name: &str, pod: &Proc) -> String {
    let port = pod.addr("backend").port();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\nports: [{{name: http, port: {port}}}]\n---\n"
    )
}

pub fn rule(hosts: &str, visibility: &str, splits: &[(&str, u32)]) -> String {
    let splits: String = splits
        .iter()
        .map(|(rev, pct)| format!("        - {{serviceNamespace: default, serviceName: {rev}, servicePort: 80, percent: {pct}, appendHeaders: {{Knative-Serving-Revision: {rev}}}}}\n"))
        .collect();
    format!("  - hosts: [{hosts}]\n    visibility: {visibility}\n    http:\n      paths:\n      - appendHeaders: {{X-Path: base}}\n        splits:\n{splits}")
}

/// One revision (a test backend) behind a KIngress `name` with one ExternalIP rule for
/// `host`, served by a fresh gateway; the backend and directory live as long as the tuple.
pub fn one_host(name: &str, http_option: &str, host: &str) -> (Proc, TempDir, Proc) {
    let pod = backend();
    let dir = TempDir::new("gw");
    let ingress = kingress(
        name,
        http_option,
        &rule(host, "ExternalIP", &[("hello-00001", 100)]),
    );
    dir.write("revision.yaml", &revision("hello-00001", &pod));
    dir.write(&format!("{name}.yaml"), &ingress);
    let gw = gateway(&dir.0);
    (pod, dir, gw)
}

/// [`one_host`] with extra gateway flags.
pub fn one_host_with(name: &str, host: &str, extra: &[&str]) -> (Proc, TempDir, Proc) {
    let pod = backend();
    let dir = TempDir::new("gw");
    dir.write("revision.yaml", &revision("hello-00001", &pod));
    dir.write(
        &format!("{name}.yaml"),
        &kingress(
            name,
            "Enabled",
            &rule(host, "ExternalIP", &[("hello-00001", 100)]),
        ),
    );
    let gw = gateway_with(&dir.0, extra);
    (pod, dir, gw)
}
