//! Harness for black-box tests of the Knoxy binaries: start processes, learn their ports from
//! their `listening on <label> <addr>` lines, and talk HTTP/1.1 or h2c to them.

pub mod grpc;
pub mod kubeapi;
pub mod local;

use std::ffi::OsStr;
use std::future::IntoFuture;
use std::io::{BufRead as _, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
pub use nix::sys::signal::Signal;
use parking_lot::{Condvar, Mutex};

/// How long a process may take to print its listening lines, and the default bound of every await.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The q-quantile of `sorted` (nearest rank); zero when there are no samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
    sorted.get(rank).copied().unwrap_or(Duration::ZERO)
}

/// Path of a workspace binary built beside the running test executable.
pub fn bin_path(name: &str) -> PathBuf {
    let mut path = std::env::current_exe().expect("path of the running test executable");
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "run `cargo build --bins` first: {} missing",
        path.display()
    );
    path
}

/// Starts `knoxy-testbackend` on an ephemeral loopback port.
pub fn backend() -> Proc {
    backend_with(&[])
}

/// [`backend`] with extra arguments (`--suffix NAME`, say).
pub fn backend_with(extra: &[&str]) -> Proc {
    Proc::builder("knoxy-testbackend")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(extra)
        .wait_for(&["backend"])
        .spawn()
}

/// The environment Knative's revision controller gives the queue-proxy container (the 12
/// required variables), with every listener on an ephemeral loopback port.
pub fn queue_env(user_port: u16) -> Vec<(&'static str, String)> {
    [
        ("CONTAINER_CONCURRENCY", "0".to_owned()),
        ("QUEUE_SERVING_PORT", "0".to_owned()),
        ("QUEUE_SERVING_TLS_PORT", "0".to_owned()),
        ("USER_PORT", user_port.to_string()),
        ("REVISION_TIMEOUT_SECONDS", "300".to_owned()),
        ("SERVING_LOGGING_CONFIG", String::new()),
        ("SERVING_LOGGING_LEVEL", String::new()),
        ("SERVING_NAMESPACE", "default".to_owned()),
        ("SERVING_CONFIGURATION", "hello".to_owned()),
        ("SERVING_REVISION", "hello-00001".to_owned()),
        ("SERVING_POD", "hello-00001-deployment-1".to_owned()),
        ("SERVING_POD_IP", "127.0.0.1".to_owned()),
        ("KNOXY_BIND_ADDRESS", "127.0.0.1".to_owned()),
        ("KNOXY_ADMIN_PORT", "0".to_owned()),
        ("KNOXY_METRICS_PORT", "0".to_owned()),
        ("METRICS_PROMETHEUS_PORT", "0".to_owned()),
        ("KNOXY_CERTS_DIR", "/nonexistent/knoxy-certs".to_owned()),
    ]
    .into()
}

/// `knoxy-queue` in front of `user_port`, as Knative starts it; callers add or override env
/// (a later `env` wins) and then `spawn`, which waits for the main, admin and metrics ports.
pub fn queue(user_port: u16) -> ProcBuilder {
    Proc::builder("knoxy-queue")
        .envs(queue_env(user_port))
        .wait_for(&["main", "admin", "metrics"])
}

/// `knoxy` serving the YAML objects of `config_dir`, public and private HTTP on ephemeral
/// loopback ports (labels `public`, `private`).
pub fn gateway(config_dir: &std::path::Path) -> Proc {
    gateway_with(config_dir, &[])
}

/// [`gateway`] with extra arguments (`--access-log`, say).
pub fn gateway_with(config_dir: &std::path::Path, extra: &[&str]) -> Proc {
    gateway_from(
        Proc::builder("knoxy").arg("--config-dir").arg(config_dir),
        extra,
    )
}

/// A gateway whose source is the API server `kubeconfig` names (`--kubernetes`).
pub fn gateway_kube(kubeconfig: &std::path::Path, extra: &[&str]) -> Proc {
    let builder = Proc::builder("knoxy")
        .arg("--kubernetes")
        .env("KUBECONFIG", kubeconfig);
    gateway_from(builder, extra)
}

/// The gateway's listener flags, each given `127.0.0.1:0` by the tests.
pub const GATEWAY_LISTENERS: [&str; 5] = [
    "--http",
    "--https",
    "--private-http",
    "--private-https",
    "--admin",
];

/// The gateway `builder` names the source of, on loopback ports.
fn gateway_from(builder: ProcBuilder, extra: &[&str]) -> Proc {
    // No drain delay unless a test asks for one (a later flag wins).
    let mut builder = builder
        .args(["--drain-delay", "0"])
        // Demand stays on loopback: reported only where a test names its autoscaler.
        .args(["--autoscaler-url", ""])
        .args(extra);
    for flag in GATEWAY_LISTENERS {
        builder = builder.args([flag, "127.0.0.1:0"]);
    }
    // The activator's ports are opened only when asked for; then they are waited for too.
    let mut labels = vec!["public", "https", "private", "private-https", "admin"];
    for (flag, label) in [
        ("--activator-http", "activator"),
        ("--activator-h2c", "activator-h2c"),
        ("--activator-tls", "activator-tls"),
    ] {
        if extra.contains(&flag) {
            labels.push(label);
        }
    }
    builder.wait_for(&labels).spawn()
}

/// A fresh, empty directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("knoxy-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) {
        // Write then rename, so a watcher never reads half a file.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write a temp file");
        std::fs::rename(&tmp, self.0.join(name)).expect("rename into place");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines a child printed so far, filled by the reader threads.
#[derive(Default)]
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Streams that reached end of file (0 to 2).
    closed: usize,
}

impl Output {
    fn lines(&self) -> impl Iterator<Item = &String> {
        self.stdout.iter().chain(&self.stderr)
    }

    fn dump(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.join("\n"),
            self.stderr.join("\n")
        )
    }
}

#[derive(Default)]
struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

/// Configures a process before [`ProcBuilder::spawn`] or [`ProcBuilder::run_to_exit`].
pub struct ProcBuilder {
    name: String,
    command: Command,
    labels: Vec<String>,
    startup_timeout: Duration,
}

impl ProcBuilder {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Adds a variable to the inherited environment.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(vars);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Labels whose `listening on <label> <addr>` line [`ProcBuilder::spawn`] waits for.
    pub fn wait_for(mut self, labels: &[&str]) -> Self {
        self.labels.extend(labels.iter().map(|l| (*l).to_owned()));
        self
    }

    /// Overrides the default 10 s allowed for the listening lines.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the process and waits for every label; panics with its output if it fails to.
    pub fn spawn(self) -> Proc {
        let Self {
            name,
            mut command,
            labels,
            startup_timeout,
        } = self;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
        let shared = Arc::new(Shared::default());
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        read_lines(stdout, shared.clone(), format!("{name} stdout"), false);
        read_lines(stderr, shared.clone(), format!("{name} stderr"), true);
        let mut proc = Proc {
            name,
            child,
            shared,
            addrs: Vec::new(),
        };
        proc.await_labels(&labels, startup_timeout);
        proc
    }

    /// Runs a process expected to exit by itself; panics if it is still running after `timeout`.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String, String) {
        let mut proc = self.spawn();
        let Some(status) = proc.wait_exit(timeout) else {
            panic!(
                "{} still running after {timeout:?}\n{}",
                proc.name,
                proc.shared.output.lock().dump()
            );
        };
        (status, proc.stdout_text(), proc.stderr_text())
    }
}

/// A running child process; killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    shared: Arc<Shared>,
    addrs: Vec<(String, SocketAddr)>,
}

impl Proc {
    /// Starts configuring a workspace binary found by [`bin_path`].
    pub fn builder(bin: &str) -> ProcBuilder {
        ProcBuilder {
            name: bin.to_owned(),
            command: Command::new(bin_path(bin)),
            labels: Vec::new(),
            startup_timeout: TIMEOUT,
        }
    }

    /// Runs `bin` with extra environment variables until it exits: (status, stdout, stderr).
    pub fn run_to_exit(
        bin: &str,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> (ExitStatus, String, String) {
        Self::builder(bin)
            .envs(env.iter().copied())
            .run_to_exit(timeout)
    }

    fn await_labels(&mut self, labels: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut output = self.shared.output.lock();
        loop {
            let mut missing = Vec::new();
            for label in labels {
                match find_listening(&output, label) {
                    Some(addr) => {
                        if !self.addrs.iter().any(|(l, _)| l == label) {
                            self.addrs.push((label.clone(), addr));
                        }
                    }
                    None => missing.push(format!("`listening on {label} <addr>`")),
                }
            }
            if missing.is_empty() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the readers a moment to collect the last lines before reporting them.
                let _ = self.shared.changed.wait_while_for(
                    &mut output,
                    |o| o.closed < 2,
                    Duration::from_secs(2),
                );
                panic!(
                    "{} exited ({status}) before printing {}\n{}",
                    self.name,
                    missing.join(", "),
                    output.dump()
                );
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{} did not print {} within {timeout:?}\n{}",
                    self.name,
                    missing.join(", "),
                    output.dump()
                );
            }
            self.shared
                .changed
                .wait_for(&mut output, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Address the process printed for `label`.
    pub fn addr(&self, label: &str) -> SocketAddr {
        if let Some((_, addr)) = self.addrs.iter().find(|(l, _)| l == label) {
            return *addr;
        }
        let output = self.shared.output.lock();
        find_listening(&output, label).unwrap_or_else(|| {
            panic!(
                "{} printed no `listening on {label} <addr>`\n{}",
                self.name,
                output.dump()
            )
        })
    }

    /// `http://<addr of label><path_and_query>`.
    pub fn url(&self, label: &str, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr(label))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_text(&self) -> String {
        self.shared.output.lock().stdout.join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.shared.output.lock().stderr.join("\n")
    }

    /// Waits until a line of stdout or stderr contains `needle`; false on timeout.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut output = self.shared.output.lock();
        loop {
            if output.lines().any(|line| line.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || output.closed == 2 {
                return false;
            }
            self.shared.changed.wait_for(&mut output, deadline - now);
        }
    }

    /// Sends `signal` (e.g. [`Signal::SIGTERM`]) to the process.
    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid fits in i32");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .unwrap_or_else(|e| panic!("sending {signal} to {}: {e}", self.name));
    }

    /// Waits for the process to exit and for its output to be fully read; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))
            {
                break status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Children of the process may hold the pipes open; don't wait on them for long.
        let mut output = self.shared.output.lock();
        let _ = self.shared.changed.wait_while_for(
            &mut output,
            |o| o.closed < 2,
            Duration::from_secs(2),
        );
        Some(status)
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects lines of one output stream; echoes them to stderr, which the test harness captures.
fn read_lines(stream: impl Read + Send + 'static, shared: Arc<Shared>, tag: String, is_err: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    eprintln!("[{tag}] {line}");
                    let mut output = shared.output.lock();
                    if is_err {
                        output.stderr.push(line);
                    } else {
                        output.stdout.push(line);
                    }
                    shared.changed.notify_all();
                }
            }
        }
        shared.output.lock().closed += 1;
        shared.changed.notify_all();
    });
}

/// A line tagged `[name ...]` is a child's output passed on (`knoxy local`'s instances),
/// not the process's own.
fn find_listening(output: &Output, label: &str) -> Option<SocketAddr> {
    output
        .lines()
        .filter(|line| !line.starts_with('['))
        .find_map(|line| parse_listening(line, label))
}

/// Finds `listening on <label> <addr>` anywhere in `line`, e.g. inside a JSON log message.
pub fn parse_listening(line: &str, label: &str) -> Option<SocketAddr> {
    let needle = format!("listening on {label} ");
    line.match_indices(&needle).find_map(|(at, _)| {
        let rest = &line[at + needle.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '`'))
            .unwrap_or(rest.len());
        let token = rest[..end]
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches([',', ';', '.', ')', '}', '/']);
        let addr: SocketAddr = token.parse().ok()?;
        // A wildcard bind is reached through loopback.
        Some(match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
            }
            _ => addr,
        })
    })
}

/// Bounds `fut` by [`TIMEOUT`], panicking with `what` when it takes longer.
pub async fn within<F: IntoFuture>(what: &str, fut: F) -> F::Output {
    within_for(TIMEOUT, what, fut).await
}

/// Bounds `fut` by `limit`, panicking with `what` when it takes longer.
pub async fn within_for<F: IntoFuture>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body of the client helpers: anything from a literal to a stream.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpClient = Client<HttpConnector, Body>;

/// Client speaking HTTP/1.1 over plain TCP.
pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Client speaking HTTP/2 with prior knowledge over plain TCP (h2c).
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A request with no extra headers.
pub fn request(method: Method, url: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap_or_else(|e| panic!("building request for {url}: {e}"))
}

/// A request with the given headers.
pub fn request_with(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Request<Body> {
    let mut req = request(method, url, body);
    for (name, value) in headers {
        req.headers_mut().append(
            http::header::HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            http::header::HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    req
}

/// A loopback port nothing listens on (bound once, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A KIngress routing `host` to the Revision `hello-00001` (`spec` inlined in its spec), the
/// revision's public Service (its endpoint: a closed port, where Knative's activators would
/// be) and one EndpointSlice of its private Service per pod (a loopback port, ready or not).
pub fn revision_objects(host: &str, pods: &[(u16, bool)], spec: &str) -> String {
    // One slice per pod: a slice has one port list, and each test backend has its own port.
    let slices: String = pods
        .iter()
        .enumerate()
        .map(|(i, (port, ready))| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hello-00001-private-{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: hello-00001-private}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: {ready}}}}}]\nports: [{{name: http, port: {port}}}]\n---\n"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata:\n  name: hello\n  namespace: default\n  annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}\nspec:\n  rules:\n  - hosts: [{host}]\n    http:\n      paths:\n      - splits: [{{serviceNamespace: default, serviceName: hello-00001, servicePort: 80}}]\n---\napiVersion: serving.knative.dev/v1\nkind: Revision\nmetadata: {{name: hello-00001, namespace: default}}\nspec: {{{spec}, containers: [{{image: x}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: hello-00001, namespace: default}}\nspec: {{ports: [{{name: http, port: 80, targetPort: 8012}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hello-00001-activators\n  namespace: default\n  labels: {{kubernetes.io/service-name: hello-00001}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{name: http, port: {closed}}}]\n---\n{slices}",
        closed = closed_port()
    )
}

/// The value on a gateway's admin port of the series named `name` (with its labels, or the only series of that name).
pub async fn admin_metric(gw: &Proc, name: &str) -> Option<String> {
    let text = get(&gw.url("admin", "/metrics")).await.2;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let bare = series.split('{').next()?;
        (series == name || bare == name).then(|| value.to_owned())
    })
}

/// Peak resident memory of a process in KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Resident memory of a process now, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Sends `req` and returns the response head, or the client's error; bounded by [`TIMEOUT`].
pub async fn try_send(
    client: &HttpClient,
    req: Request<Body>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let what = format!("response head of {} {}", req.method(), req.uri());
    within(&what, client.request(req)).await
}

/// Sends `req` and returns the response head; panics on error or timeout.
pub async fn send(client: &HttpClient, req: Request<Body>) -> Response<Incoming> {
    let what = format!("{} {}", req.method(), req.uri());
    try_send(client, req)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

/// Reads a whole response body; bounded by [`TIMEOUT`].
pub async fn read_body(response: Response<Incoming>) -> Bytes {
    within("response body", response.into_body().collect())
        .await
        .unwrap_or_else(|e| panic!("reading response body: {e:?}"))
        .to_bytes()
}

/// Sends `req` and reads the whole response: (status, headers, body as text).
pub async fn fetch(client: &HttpClient, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = send(client, req).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_body(response).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// GET over HTTP/1.1.
pub async fn get(url: &str) -> (StatusCode, HeaderMap, String) {
    fetch(&http1_client(), request(Method::GET, url, empty())).await
}

/// GET `path` from a gateway's `listener` for the virtual host `host`, over HTTP/1.1.
pub async fn get_host(
    gw: &Proc,
    listener: &str,
    host: &str,
    path: &str,
) -> (StatusCode, HeaderMap, String) {
    let req = request_with(
        Method::GET,
        &gw.url(listener, path),
        &[("host", host)],
        empty(),
    );
    fetch(&http1_client(), req).await
}

/// GET over h2c.
pub async fn get_h2c(url: &str) -> (StatusCode, HeaderMap, String) {
    fetch(&h2c_client(), request(Method::GET, url, empty())).await
}

/// POST over HTTP/1.1.
pub async fn post(url: &str, body: impl Into<Bytes>) -> (StatusCode, HeaderMap, String) {
    fetch(&http1_client(), request(Method::POST, url, full(body))).await
}

/// Parses a JSON body, panicking with the text when it is not JSON.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// GET `path` on an established connection (TLS, say), as HTTP/2 when `h2` (the ALPN choice)
/// else HTTP/1.1, with `authority` as the Host; (status, version, body).
pub async fn get_over<IO>(
    io: IO,
    h2: bool,
    authority: &str,
    path: &str,
) -> (StatusCode, http::Version, String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let empty = || Empty::<Bytes>::new();
    let response = if h2 {
        let (mut sender, conn) = within(
            "h2 handshake",
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get(format!("https://{authority}{path}"))
            .body(empty())
            .expect("request");
        within("h2 response", sender.send_request(req))
            .await
            .expect("h2 response")
    } else {
        let (mut sender, conn) = within("h1 handshake", hyper::client::conn::http1::handshake(io))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", authority)
            .body(empty())
            .expect("request");
        within("h1 response", sender.send_request(req))
            .await
            .expect("h1 response")
    };
    let (status, version) = (response.status(), response.version());
    let body = within("response body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

/// Writes raw `request` bytes on a new connection while reading until the server closes; the
/// bytes read. A reset after the response (the server closing with unread input) ends the read.
pub async fn exchange(addr: SocketAddr, request: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        // The server may answer and close before it has read everything.
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut received = Vec::new();
    within("the server to answer and close", async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    write.abort();
    String::from_utf8_lossy(&received).into_owned()
}

/// Status codes of every response in a raw HTTP/1 byte stream.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter(|(at, _)| *at == 0 || raw[..*at].ends_with("\r\n"))
        .filter_map(|(at, _)| raw[at..].split(' ').nth(1)?.parse().ok())
        .collect()
}

/// The backend's `/-/stats` document.
pub async fn backend_stats(backend: &Proc) -> serde_json::Value {
    let (status, _, body) = get(&backend.url("backend", "/-/stats")).await;
    assert_eq!(status, StatusCode::OK, "backend stats: {body}");
    json(&body)
}

/// The processes whose parent is `pid` (from `/proc`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_owned()))
                .and_then(|rest| {
                    rest.split_whitespace()
                        .nth(1)
                        .map(|pp| pp == pid.to_string())
                })
                .unwrap_or(false)
        })
        .collect()
}

/// `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn listening_lines_are_found_inside_longer_lines() {
        let plain = parse_listening("listening on backend 127.0.0.1:8080", "backend");
        assert_eq!(plain, "127.0.0.1:8080".parse().ok());
        let json_log = r#"{"level":"info","msg":"listening on admin 127.0.0.1:9000","ts":1}"#;
        assert_eq!(
            parse_listening(json_log, "admin"),
            "127.0.0.1:9000".parse().ok()
        );
        let escaped = r#"{"msg":"\"listening on main [::1]:80\""}"#;
        assert_eq!(parse_listening(escaped, "main"), "[::1]:80".parse().ok());
    }

    #[test]
    fn wildcard_addresses_become_loopback_and_other_labels_do_not_match() {
        let line = "listening on main 0.0.0.0:8012, listening on main-tls 0.0.0.0:8112";
        assert_eq!(parse_listening(line, "main"), "127.0.0.1:8012".parse().ok());
        assert_eq!(
            parse_listening(line, "main-tls"),
            "127.0.0.1:8112".parse().ok()
        );
        assert_eq!(parse_listening(line, "admin"), None);
        assert_eq!(parse_listening("listening on main soon", "main"), None);
    }
}
