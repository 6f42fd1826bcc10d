//! Scale of `knoxy --kubernetes` (issue 15): a fake API server (`knoxy_tests::kubeapi`)
//! holding N KIngresses, each with its Service and an EndpointSlice of E endpoints; then
//! the time from starting `knoxy` to it serving all of them, the time from each of U
//! KIngress updates (a new host) to the gateway serving it, and knoxy's RSS.
//!
//! A host is served once the gateway routes it: it answers 404 itself while the host is
//! unknown, and 502 once it is routed (the endpoints are loopback addresses on a closed
//! port, refused at once), so no backend is needed.
//!
//! usage: knoxy-kubescale [--knoxy PATH] [--ingresses N] [--endpoints E] [--updates U]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knoxy_tests::kubeapi::FakeApi;
use serde_json::json;

const INGRESS: &str = "networking.internal.knative.dev/v1alpha1";
const LIMIT: Duration = Duration::from_secs(120);

struct Options {
    knoxy: String,
    ingresses: usize,
    endpoints: usize,
    updates: usize,
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("knoxy-kubescale: {e}\nusage: knoxy-kubescale [--knoxy PATH] [--ingresses N] [--endpoints E] [--updates U]");
            std::process::exit(64);
        }
    };
    let api = FakeApi::start();
    let dir = std::env::temp_dir().join(format!("knoxy-kubescale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    // Bound and dropped: nothing listens there, so connections are refused at once.
    let closed = knoxy_tests::closed_port();
    let filled = Instant::now();
    for i in 0..o.ingresses {
        api.create(service(i));
        api.create(slice(i, o.endpoints, closed));
        api.create(kingress(i, &[]));
    }
    eprintln!(
        "filled the API server: {} KIngresses, {} endpoints in {:.1} s",
        o.ingresses,
        o.ingresses * o.endpoints,
        filled.elapsed().as_secs_f64()
    );
    let public = knoxy_tests::closed_port();
    let admin = knoxy_tests::closed_port();
    let started = Instant::now();
    let knoxy = Command::new(&o.knoxy)
        .args([
            "--kubernetes",
            "--pod-name",
            "kubescale",
            "--drain-delay",
            "0",
            "--autoscaler-url",
            "",
        ])
        .args(["--http", &format!("127.0.0.1:{public}")])
        .args([
            "--https",
            "127.0.0.1:0",
            "--private-http",
            "127.0.0.1:0",
            "--private-https",
            "127.0.0.1:0",
            "--admin",
        ])
        .arg(format!("127.0.0.1:{admin}"))
        .args(
            std::env::var("KUBESCALE_KNOXY_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .env("KUBECONFIG", api.kubeconfig(&dir))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("knoxy starts");
    // Stopped on every way out, a failed wait included.
    let knoxy = Stopped(knoxy);
    let addr = SocketAddr::from(([127, 0, 0, 1], public));
    let last = format!("hello-{}.default.example.com", o.ingresses - 1);
    wait_served(addr, &last);
    wait_served(addr, "hello-0.default.example.com");
    let serving = started.elapsed();
    if std::env::var_os("KUBESCALE_DEBUG").is_some() {
        for _ in 0..10 {
            eprintln!(
                "rss at {:.1} s: {:?}",
                started.elapsed().as_secs_f64(),
                memory(knoxy.0.id())
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut latencies = Vec::with_capacity(o.updates);
    for u in 0..o.updates {
        let i = u * o.ingresses.max(1) / o.updates.max(1);
        let host = format!("new-{u}.example.com");
        let wrote = Instant::now();
        api.apply(kingress(i, &[&host]));
        let applied = wrote.elapsed();
        wait_served(addr, &host);
        latencies.push(wrote.elapsed());
        if std::env::var_os("KUBESCALE_DEBUG").is_some() {
            let metrics = get(SocketAddr::from(([127, 0, 0, 1], admin)), "/metrics");
            let load = metrics
                .lines()
                .find(|l| l.starts_with("knoxy_route_table_load_seconds"))
                .unwrap_or_default()
                .to_owned();
            eprintln!(
                "update {u}: apply {:.1} ms, served {:.1} ms, {load}",
                ms(applied),
                ms(wrote.elapsed())
            );
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let (rss, peak) = memory(knoxy.0.id());
    println!("| KIngresses | endpoints | start to serving all | update to serving p50 | p99 | max | RSS | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} s | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} MB | {:.0} MB |",
        o.ingresses,
        o.ingresses * o.endpoints,
        serving.as_secs_f64(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(pct(1.0)),
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    drop(knoxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    /// SIGTERM first (it drains and exits at once, with no drain delay), then SIGKILL.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kingress(i: usize, extra: &[&str]) -> serde_json::Value {
    let mut hosts = vec![
        format!("hello-{i}.default.example.com"),
        format!("hello-{i}.default.svc.cluster.local"),
    ];
    hosts.extend(extra.iter().map(|h| (*h).to_owned()));
    json!({"apiVersion": INGRESS, "kind": "Ingress",
        "metadata": {"name": format!("hello-{i}"), "namespace": "default",
            "annotations": {"networking.knative.dev/ingress.class": "knoxy.ingress.networking.knative.dev"}},
        "spec": {"httpOption": "Enabled", "rules": [{"hosts": hosts, "visibility": "ExternalIP",
            "http": {"paths": [{"splits": [{"serviceNamespace": "default", "serviceName": format!("hello-{i}"),
                "servicePort": 80, "percent": 100,
                "appendHeaders": {"Knative-Serving-Revision": format!("hello-{i}"), "Knative-Serving-Namespace": "default"}}]}]}}]}})
}

fn service(i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("hello-{i}"), "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8012}]}})
}

fn slice(i: usize, endpoints: usize, port: u16) -> serde_json::Value {
    let endpoints: Vec<_> = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e;
            json!({"addresses": [format!("127.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, (n & 255).max(1))], "conditions": {"ready": true}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("hello-{i}-abcde"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": format!("hello-{i}")}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "http", "port": port}]})
}

/// Asks for `host` every millisecond until the gateway routes it (anything but its 404).
fn wait_served(addr: SocketAddr, host: &str) {
    let deadline = Instant::now() + LIMIT;
    while probe(addr, host).is_none_or(|status| status == 404) {
        assert!(
            Instant::now() < deadline,
            "{host} not served within {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn probe(addr: SocketAddr, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A GET's whole answer, head and body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut text = String::new();
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_string(&mut text);
    }
    text
}

/// (VmRSS, VmHWM) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    (knoxy_tests::rss_kib(pid), knoxy_tests::peak_rss_kib(pid))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn options() -> Result<Options, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("knoxy")))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "knoxy".to_owned());
    let mut o = Options {
        knoxy: beside,
        ingresses: 10_000,
        endpoints: 5,
        updates: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{arg} {v:?} is not a count"))
        };
        match arg.as_str() {
            "--knoxy" => o.knoxy = value()?,
            "--ingresses" => o.ingresses = number(value()?)?.max(1),
            "--endpoints" => o.endpoints = number(value()?)?,
            "--updates" => o.updates = number(value()?)?.max(1),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}
