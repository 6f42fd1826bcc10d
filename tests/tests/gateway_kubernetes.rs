//! `knoxy --kubernetes` against a fake API server that speaks Kubernetes' list/watch/patch
//! (`knoxy_tests::kubeapi`): what Knative's controller writes changes what real requests
//! get; KIngress status is written as contract §1.4 says, by one leader; another class's
//! KIngress stays byte-identical; dropped watches and `410 Gone` lose no event.

mod common;

use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_tests::kubeapi::FakeApi;
use knoxy_tests::{
    backend_with, bin_path, gateway_kube, get_host, Proc, Signal, TempDir, GATEWAY_LISTENERS,
};
use serde_json::{json, Value};

const INGRESS: &str = "networking.internal.knative.dev/v1alpha1";
const KNOXY: &str = "knoxy.ingress.networking.knative.dev";

/// A KIngress of `class` sending every path of `hosts` to Service `service`.
fn kingress(name: &str, class: &str, hosts: &[&str], service: &str) -> Value {
    json!({"apiVersion": INGRESS, "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default",
            "annotations": {"networking.knative.dev/ingress.class": class}},
        "spec": {"httpOption": "Enabled", "rules": [{"hosts": hosts, "visibility": "ExternalIP",
            "http": {"paths": [{"splits": [{"serviceNamespace": "default", "serviceName": service,
                "servicePort": 80, "percent": 100}]}]}}]}})
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

/// The EndpointSlice of Service `service`: one ready endpoint, the test backend `pod`.
fn slice(service: &str, pod: &Proc) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": pod.addr("backend").port()}]})
}

/// One gateway replica as the peers Service lists it: its admin port, ready or not.
fn peer(name: &str, gw: &Proc, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "knoxy-system",
            "labels": {"kubernetes.io/service-name": "knoxy-peers"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
        "ports": [{"name": "admin", "port": gw.addr("admin").port()}]})
}

/// A test backend whose answers carry `suffix`.
fn pod(suffix: &str) -> Proc {
    backend_with(&["--suffix", suffix])
}

/// Service `name` and its EndpointSlice: one pod.
fn backend_of(api: &FakeApi, name: &str, pod: &Proc) {
    api.create(service(name));
    api.create(slice(name, pod));
}

/// KIngress `hello` for hello.example.com, on Service `hello-00001` backed by `pod`.
fn hello(api: &FakeApi, pod: &Proc) {
    backend_of(api, "hello-00001", pod);
    api.create(kingress(
        "hello",
        KNOXY,
        &["hello.example.com"],
        "hello-00001",
    ));
}

fn gateway(api: &FakeApi, dir: &TempDir, pod_name: &str) -> Proc {
    gateway_kube(
        &api.kubeconfig(&dir.0),
        &["--pod-name", pod_name, "--lease-duration", "2"],
    )
}

/// Polls `check` every 10 ms until it gives Some, for at most `limit`.
async fn until<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The body `host` gets from the gateway, once it answers 200 with `want` in it.
async fn until_served(gw: &Proc, host: &str, want: &str) {
    until(
        Duration::from_secs(10),
        &format!("{host} serving {want}"),
        async || {
            let (status, _, body) = get_host(gw, "public", host, "/").await;
            (status == StatusCode::OK && body.contains(want)).then_some(())
        },
    )
    .await;
}

async fn until_status(gw: &Proc, host: &str, want: StatusCode) {
    until(
        Duration::from_secs(10),
        &format!("{host} answering {want}"),
        async || {
            let (status, _, _) = get_host(gw, "public", host, "/").await;
            (status == want).then_some(())
        },
    )
    .await;
}

async fn admin(gw: &Proc, path: &str) -> (StatusCode, String) {
    let (status, _, body) = get_host(gw, "admin", "admin", path).await;
    (status, body)
}

/// The KIngress's status once it says Ready True for its current generation.
async fn until_ready(api: &FakeApi, name: &str) -> Value {
    until(
        Duration::from_secs(10),
        &format!("KIngress {name} Ready"),
        async || {
            let k = api.get(INGRESS, "Ingress", "default", name)?;
            let status = k.get("status")?.clone();
            let ready = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready && status["observedGeneration"] == k["metadata"]["generation"]).then_some(status)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_api_server_holds_is_what_requests_get() {
    let api = FakeApi::start();
    let dir = TempDir::new("kube");
    let (a, b) = (pod("pod-a"), pod("pod-b"));
    hello(&api, &a);
    let theirs = kingress(
        "theirs",
        "kourier.ingress.networking.knative.dev",
        &["theirs.example.com"],
        "hello-00001",
    );
    api.create(theirs);
    let untouched = api
        .get_bytes(INGRESS, "Ingress", "default", "theirs")
        .expect("stored");
    let gw = gateway(&api, &dir, "knoxy-a");
    until(Duration::from_secs(10), "/ready", async || {
        (admin(&gw, "/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    until_served(&gw, "hello.example.com", "pod-a").await;
    // Another class's KIngress is not served.
    let (status, _, _) = get_host(&gw, "public", "theirs.example.com", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Status as contract §1.4 says, for the generation served.
    let status = until_ready(&api, "hello").await;
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["LoadBalancerReady", "NetworkConfigured", "Ready"]);
    assert_eq!(
        status["publicLoadBalancer"],
        json!({"ingress": [{"domainInternal": "knoxy.knoxy-system.svc.cluster.local"}]})
    );
    assert_eq!(
        status["privateLoadBalancer"],
        json!({"ingress": [{"domainInternal": "knoxy-internal.knoxy-system.svc.cluster.local"}]})
    );

    // An endpoint moves: the next requests go to the new pod.
    api.apply(slice("hello-00001", &b));
    until_served(&gw, "hello.example.com", "pod-b").await;
    // A new host on the KIngress: generation 2 is served, then its status says so.
    api.apply(kingress(
        "hello",
        KNOXY,
        &["hello.example.com", "hi.example.com"],
        "hello-00001",
    ));
    until_served(&gw, "hi.example.com", "pod-b").await;
    assert_eq!(until_ready(&api, "hello").await["observedGeneration"], 2);
    // A Service deleted: its KIngress waits, and its status says why.
    api.delete("v1", "Service", "default", "hello-00001");
    until(
        Duration::from_secs(10),
        "LoadBalancerReady Unknown",
        async || {
            let k = api.get(INGRESS, "Ingress", "default", "hello")?;
            let c = k["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (c["status"] == "Unknown").then_some(())
        },
    )
    .await;
    api.create(service("hello-00001"));
    until_ready(&api, "hello").await;
    // Deleted: no longer served.
    api.delete(INGRESS, "Ingress", "default", "hello");
    until_status(&gw, "hello.example.com", StatusCode::NOT_FOUND).await;

    // The other class's KIngress was never written: byte-identical, and no write named it.
    assert_eq!(
        api.get_bytes(INGRESS, "Ingress", "default", "theirs")
            .expect("stored"),
        untouched
    );
    let writes: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("/ingresses/theirs") && !r.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_and_410_lose_no_event() {
    let api = FakeApi::start();
    // No bookmarks: one could carry a watch's version past the compaction below, and then
    // it would resume without the 410 this test is about (it flaked so in CI).
    api.set_bookmark_interval(Duration::ZERO);
    let dir = TempDir::new("kube");
    let (a, b) = (pod("pod-a"), pod("pod-b"));
    hello(&api, &a);
    let gw = gateway(&api, &dir, "knoxy-a");
    until_served(&gw, "hello.example.com", "pod-a").await;

    // A dropped watch resumes from where it was: the change made while it was down arrives.
    until(Duration::from_secs(5), "watches open", async || {
        (api.open_watches("endpointslices") == 1).then_some(())
    })
    .await;
    api.drop_watches();
    api.apply(slice("hello-00001", &b));
    until_served(&gw, "hello.example.com", "pod-b").await;

    // History forgotten (410 Gone on resume): a relist, and what changed meanwhile arrives,
    // deletions included.
    let lists_before = lists(&api, "ingresses");
    until(Duration::from_secs(5), "watches open", async || {
        (api.open_watches("ingresses") == 1).then_some(())
    })
    .await;
    api.compact();
    api.drop_watches();
    api.create(kingress(
        "second",
        KNOXY,
        &["second.example.com"],
        "hello-00001",
    ));
    api.delete(INGRESS, "Ingress", "default", "hello");
    api.compact();
    until_served(&gw, "second.example.com", "pod-b").await;
    until_status(&gw, "hello.example.com", StatusCode::NOT_FOUND).await;
    assert!(
        lists(&api, "ingresses") > lists_before,
        "a 410 makes the watcher list again"
    );
}

/// How many lists (not watches) of `plural` were asked for.
fn lists(api: &FakeApi, plural: &str) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET ") && r.contains(&format!("/{plural}")) && !r.contains("watch=")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_status_and_another_takes_over_when_it_stops_renewing() {
    let api = FakeApi::start();
    let dir = TempDir::new("kube");
    let pod = pod("pod-a");
    backend_of(&api, "hello-00001", &pod);
    let first = gateway(&api, &dir, "knoxy-a");
    let holder = || {
        api.get(
            "coordination.k8s.io/v1",
            "Lease",
            "knoxy-system",
            "knoxy-status",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    until(
        Duration::from_secs(10),
        "knoxy-a holds the lease",
        async || (holder().as_deref() == Some("knoxy-a")).then_some(()),
    )
    .await;
    let second = gateway(&api, &dir, "knoxy-b");
    api.create(peer("knoxy-a", &first, true));
    api.create(peer("knoxy-b", &second, true));
    api.create(kingress(
        "hello",
        KNOXY,
        &["hello.example.com"],
        "hello-00001",
    ));
    until_ready(&api, "hello").await;
    // Both replicas serve it once it is Ready (the leader waited for both).
    for gw in [&first, &second] {
        let (status, body) = admin(gw, "/served").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"default/hello\":1"), "{body}");
    }
    assert!(first.wait_for_output("knoxy-a leads", Duration::from_secs(1)));
    assert!(
        !second.stderr_text().contains("knoxy-b leads"),
        "{}",
        second.stderr_text()
    );

    // The leader stops renewing (frozen); kubelet takes it out of the endpoints.
    first.signal(Signal::SIGSTOP);
    api.apply(peer("knoxy-a", &first, false));
    until(
        Duration::from_secs(10),
        "knoxy-b holds the lease",
        async || (holder().as_deref() == Some("knoxy-b")).then_some(()),
    )
    .await;
    assert!(second.wait_for_output("knoxy-b leads", Duration::from_secs(5)));
    // The new leader writes status.
    api.apply(kingress(
        "hello",
        KNOXY,
        &["hello.example.com", "hi.example.com"],
        "hello-00001",
    ));
    assert_eq!(until_ready(&api, "hello").await["observedGeneration"], 2);
    first.signal(Signal::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_naming_a_revision_goes_to_its_pods_while_the_revision_exists() {
    let api = FakeApi::start();
    let dir = TempDir::new("kube");
    let pod = pod("pod-a");
    // The public Service lists an activator that is not there (a closed port): a request
    // answered 200 went to the revision's own pods, through its throttler.
    api.create(service("hello-00001"));
    api.create(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hello-00001-activators", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "hello-00001"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["127.0.0.1"]}],
        "ports": [{"name": "http", "port": knoxy_tests::closed_port()}]}),
    );
    api.create(slice("hello-00001-private", &pod));
    api.create(
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": "hello-00001", "namespace": "default"},
        "spec": {"containerConcurrency": 1, "timeoutSeconds": 30, "containers": [{"image": "x"}]}}),
    );
    let mut hello = kingress("hello", KNOXY, &["hello.example.com"], "hello-00001");
    hello["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["appendHeaders"] =
        json!({"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": "default"});
    api.create(hello);
    let gw = gateway(&api, &dir, "knoxy-a");
    until_served(&gw, "hello.example.com", "pod-a").await;
    // Without the Revision, the split goes to the public Service's endpoints: nothing there.
    api.delete(
        "serving.knative.dev/v1",
        "Revision",
        "default",
        "hello-00001",
    );
    until(
        Duration::from_secs(10),
        "the public endpoints",
        async || {
            let (status, _, _) = get_host(&gw, "public", "hello.example.com", "/").await;
            status.is_server_error().then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_names_the_rule_and_a_malformed_object_holds_back_only_itself() {
    let api = FakeApi::start();
    let dir = TempDir::new("kube");
    let pod = pod("pod-a");
    hello(&api, &pod);
    let mut bad = kingress("bad", KNOXY, &["bad.example.com"], "hello-00001");
    bad["spec"]["rules"][0]["http"]["paths"][0]["splits"][0]["percent"] = json!("half");
    api.create(bad);
    api.forbid("list", "revisions");
    let gw = gateway(&api, &dir, "knoxy-a");
    assert!(
        gw.wait_for_output(
            "forbidden: cannot list revisions.serving.knative.dev",
            Duration::from_secs(10)
        ),
        "{}",
        gw.stderr_text()
    );
    assert!(gw
        .stderr_text()
        .contains("resources: [revisions], verbs: [get, list, watch]"));
    // Not ready until every kind is listed.
    assert_eq!(
        admin(&gw, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    api.allow("list", "revisions");
    until(Duration::from_secs(15), "/ready once allowed", async || {
        (admin(&gw, "/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    until_served(&gw, "hello.example.com", "pod-a").await;
    let (status, _, _) = get_host(&gw, "public", "bad.example.com", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, body) = admin(&gw, "/status").await;
    assert!(
        body.contains("Ingress default/bad: spec.rules[0].http.paths[0].splits[0].percent: "),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_comes_from_the_secret_a_kingress_names_and_no_other_secret_is_read() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let host = "secure.example.com";
    let api = FakeApi::start();
    let dir = TempDir::new("kube");
    let pod = pod("pod-a");
    let (cert, key, root) = common::certificate(&[host]);
    backend_of(&api, "hello-00001", &pod);
    let secret = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"tls.crt": b64(&cert), "tls.key": b64(&key)}})
    };
    api.create(secret("secure-cert"));
    api.create(secret("someone-elses"));
    let mut secure = kingress("secure", KNOXY, &[host], "hello-00001");
    secure["spec"]["tls"] =
        json!([{"hosts": [host], "secretName": "secure-cert", "secretNamespace": "default"}]);
    api.create(secure);
    let gw = gateway(&api, &dir, "knoxy-a");
    let tls = common::tls_connector(&root, b"h2");
    let served = until(Duration::from_secs(10), "TLS served", async || {
        common::get_tls(gw.addr("https"), host, "/", &tls)
            .await
            .ok()
            .filter(|(s, _, _)| *s == StatusCode::OK)
    })
    .await;
    assert!(served.2.contains("pod-a"), "{served:?}");
    // Only the named Secret was fetched; the others are known by their metadata alone.
    let secret_reads: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/namespaces/") && r.contains("/secrets/"))
        .collect();
    assert_eq!(
        secret_reads,
        ["GET /api/v1/namespaces/default/secrets/secure-cert"]
    );
    // Every list and watch of Secrets asked for metadata alone (the fake answers those as a
    // real server does: PartialObjectMetadata, no data).
    let whole: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/secrets"))
        .filter(|r| !api.metadata_requests().contains(r))
        .collect();
    assert!(whole.is_empty(), "{whole:?}");
    assert!(!api.metadata_requests().is_empty());
}

/// Runs `knoxy --kubernetes` with `env` set (None: removed) until it exits, at most 15 s:
/// its exit code and what it printed on stderr.
fn knoxy_exits(env: &[(&str, Option<&std::path::Path>)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(bin_path("knoxy"));
    command.arg("--kubernetes");
    for flag in GATEWAY_LISTENERS {
        command.args([flag, "127.0.0.1:0"]);
    }
    for (name, value) in env {
        match value {
            Some(v) => command.env(name, v),
            None => command.env_remove(name),
        };
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start knoxy");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("knoxy's exit") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("knoxy did not exit within 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    (status.code(), stderr)
}

#[test]
fn a_missing_or_bad_kubeconfig_is_named_and_stops_the_gateway() {
    let dir = TempDir::new("kubeconfig");
    let missing = dir.0.join("missing");
    let (code, stderr) = knoxy_exits(&[("KUBECONFIG", Some(&missing))]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "KUBECONFIG names {}, which is not a readable file",
            missing.display()
        )),
        "{stderr}"
    );

    let broken = dir.0.join("broken");
    std::fs::write(&broken, "apiVersion: v1\nclusters: [\n").expect("write");
    let (code, stderr) = knoxy_exits(&[("KUBECONFIG", Some(&broken))]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("KUBECONFIG: "), "{stderr}");
    assert!(
        stderr.contains("line"),
        "the YAML error says where: {stderr}"
    );

    // Nothing set, not in a pod, and no ~/.kube/config.
    let (code, stderr) = knoxy_exits(&[
        ("KUBECONFIG", None),
        ("KUBERNETES_SERVICE_HOST", None),
        ("HOME", Some(&dir.0)),
    ]);
    assert_eq!(code, Some(78), "{stderr}");
    let expected = format!(
        "no Kubernetes configuration: KUBECONFIG is not set, this is not a pod (KUBERNETES_SERVICE_HOST is not set), and {} does not exist",
        dir.0.join(".kube").join("config").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_retried_and_ready_waits_for_its_first_listing() {
    let dir = TempDir::new("kube");
    // Where the API server will be: nothing listens there yet.
    let (kubeconfig, port) = {
        let api = FakeApi::start();
        (api.kubeconfig(&dir.0), api.port())
    };
    let gw = gateway_kube(
        &kubeconfig,
        &["--pod-name", "knoxy-a", "--lease-duration", "2"],
    );
    assert!(
        gw.wait_for_output("(retrying)", Duration::from_secs(10)),
        "{}",
        gw.stderr_text()
    );
    let stderr = gw.stderr_text();
    let url = format!("watching the Kubernetes API server at http://127.0.0.1:{port}/");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    let (status, body) = admin(&gw, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("waiting for the first complete listing"),
        "{body}"
    );
    let (_, body) = admin(&gw, "/status").await;
    assert!(
        body.contains("ingresses.networking.internal.knative.dev"),
        "{body}"
    );
    // kube-rs retries with backoff; each error is logged once, not once per retry.
    let seen = Instant::now();
    until(Duration::from_secs(10), "more retries", async || {
        (seen.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .await;
    let logged = gw
        .stderr_text()
        .lines()
        .filter(|l| l.contains("(retrying)") && l.contains("ingresses"))
        .count();
    assert_eq!(logged, 1, "{}", gw.stderr_text());

    // The API server comes up where the kubeconfig says: the gateway lists, serves and is ready.
    let api = FakeApi::start_on(port);
    let pod = pod("pod-a");
    hello(&api, &pod);
    until(Duration::from_secs(30), "/ready once listed", async || {
        (admin(&gw, "/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    until_served(&gw, "hello.example.com", "pod-a").await;
    assert!(
        gw.stderr_text().contains("watching"),
        "{}",
        gw.stderr_text()
    );
}
