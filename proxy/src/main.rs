//! `knoxy`: the gateway. Serves Knative's KIngress objects (from a directory of YAML files,
//! for now) on Pingora's server shell, with hyper as the HTTP engine on every listener.
//!
//! Usage: `knoxy --config-dir DIR [flags]` (`knoxy --help` lists them), or `knoxy local
//! [PATH...] [flags]`: Knative Services from YAML run on this machine (`knoxy-local`), every
//! listener on loopback, the local loop as the autoscaler the gateway reports to. Listeners: public
//! `0.0.0.0:8080`/`8443`, private (cluster-local) `8081`/`8444`, admin `9090` with `/metrics`,
//! `/healthz`, `/ready` and `/status`; port 0 picks a free port. Every listener is served by
//! `--threads` worker threads (default: the CPUs the process may use), each a single-threaded
//! runtime: a connection stays on the thread that took it (a work-stealing runtime cost ~20%
//! more CPU per request in the gateway bench, now `bench/run --only gateway-1t`).
//!
//! The edge (`knoxy-edge`, shared with knoxy-queue): a request head must arrive within
//! `--header-read-timeout` (10 s), a connection with no request in flight closes after
//! `--idle-timeout` (75 s), a TLS handshake must finish within `--tls-handshake-timeout`
//! (10 s); HTTP/2 allows `--h2-max-concurrent-streams` (100) streams and bounds rapid resets;
//! heads are limited to `--max-header-bytes`/`--max-header-fields` (Go's 1 MiB + 4 KiB, 1000);
//! past `--max-connections` (10,000) a connection gets a short 503. Nothing times a request
//! whose backend is still working: long requests and streams are Knative's to bound.
//!
//! Stopping, as Kubernetes expects: on SIGTERM `/ready` answers 503 at once, the listeners
//! keep serving for `--drain-delay` (5 s) while load balancers take the pod out, then stop
//! accepting; idle connections close, busy ones close after their response (which says
//! `Connection: close`; h2 gets GOAWAY), and the process exits 0 when none is left or after
//! `--drain-timeout` (30 s). `terminationGracePeriodSeconds` should cover both.
//!
//! Zero-downtime upgrade (Pingora's): start the new binary with the same flags plus
//! `--upgrade`; it waits on `--upgrade-sock` for the listening sockets (Pingora waits 5 s).
//! Within that, send SIGQUIT to the old process: it hands its sockets over, keeps accepting for 5 s (Pingora's close
//! timeout) while the new one starts serving the same sockets, then drains as above. No
//! connection is refused: the kernel's accept queue belongs to the socket, not the process.
//!
//! Reloads: the directory is watched; only changed files (and in them, changed documents)
//! are parsed again, and only KIngresses whose object or inputs changed are translated
//! again (`knoxy_control::derive::Deriver`), so a 10,000-ingress table swaps in tens of ms.
//! A broken file or document holds back only its own objects (their last good versions stay
//! served, and the problem is logged and listed on `/status`); an invalid KIngress keeps its
//! last valid version served.
//! Upstream connections are pooled per endpoint (`knoxy-upstream`, shared with knoxy-queue),
//! and the pools live with the table that names their endpoints (`upstreams::Served`).
//!
//! The activator role (`knoxy-activator`), so far: a split that names a Knative Revision goes
//! to the pods of the revision's private Service through the revision's throttler
//! (containerConcurrency per pod, Knative's pod policy); with no pod with room, requests wait
//! in order, at most `--activator-queue-depth` (10,000) per revision (then 503), at most
//! the revision's `timeoutSeconds` (then 504 `activator request timeout`, as when the response
//! head is later than `responseStartTimeoutSeconds`, or `timeoutSeconds`). Each revision's
//! demand (waiting requests included) goes to Knative's autoscaler over its stat websocket
//! (`--autoscaler-url`, Knative's by default; empty: not reported) as `--pod-name` (default
//! `$POD_NAME`, else the hostname): its first request at once, then a batch every second.
//! A pod is used once `GET /healthz` with `K-Network-Probe: queue` answers 200 `queue`: a
//! new pod (ready or not yet) is probed at once, and every 5 ms while requests wait for it.
//! The activator's own ports, opened with `--activator-http ADDR` and `--activator-h2c ADDR`
//! (Knative's are 8012 and 8013; HTTP/1.1 and h2c on both), and `--activator-tls ADDR` (8112,
//! with `--activator-tls-cert`/`-key` PEM files, read again when they change), serve requests that name their
//! revision by `Knative-Serving-Namespace`/`-Revision` or a Host `<rev>.<ns>.svc…`, and
//! answer kubelet probes, network probes and `K-Network-Probe: activator` themselves.
//! Held requests keep their head and a bounded body prefix (what their connection read);
//! past `--activator-held-bytes` (256 MiB) for all of them, the next that would wait gets 503.
//! Several gateway replicas split each limited revision's pods as Knative's activators do
//! (`--activator-replicas N --activator-index I`; every replica uses all pods when the
//! revision's containerConcurrency is 0).
//!
//! TLS: Pingora accepts the TCP connections and tokio-rustls does the handshake, so the
//! certificate can be chosen by SNI from the live table (Pingora's rustls listener takes
//! fixed certificate files).

mod admin;
mod autoscaler;
mod drain;
mod gateway;
mod metrics;
mod rescue;
mod signals;
mod tls;
mod upstreams;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use knoxy_control::derive::{DeriveConfig, Deriver, IngressStatus, Moved, Snapshot};
use knoxy_control::files;
use knoxy_edge::{ConnLimit, Edge, Limits};
use parking_lot::Mutex;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use gateway::{Gateway, Listener, Parts};
use upstreams::{Activator, Served};

const USAGE: &str = "usage: knoxy local [PATH...] [--config FILE] [flags]   (Knative Services from YAML, run here; default deploy/examples/local)\n       knoxy (--config-dir DIR | --kubernetes [--lease NS/NAME] [--lease-duration SECS] [--peers NS/SERVICE] [--public-service NS/NAME] [--private-service NS/NAME] [--cluster-domain DOMAIN] [--pod-ip IP] [--no-status]) [--http ADDR] [--https ADDR] [--private-http ADDR] [--private-https ADDR] [--admin ADDR] [--threads N] [--header-read-timeout SECS] [--idle-timeout SECS] [--tls-handshake-timeout SECS] [--max-connections N] [--max-header-bytes N] [--max-header-fields N] [--h2-max-concurrent-streams N] [--drain-delay SECS] [--drain-timeout SECS] [--upgrade] [--upgrade-sock PATH] [--activator-http ADDR] [--activator-h2c ADDR] [--activator-tls ADDR --activator-tls-cert PEM --activator-tls-key PEM] [--activator-queue-depth N] [--activator-held-bytes N] [--activator-replicas N] [--activator-index I] [--autoscaler-url URL] [--pod-name NAME] [--access-log]";
/// How long SIGTERM keeps the listeners serving before they stop accepting.
const DRAIN_DELAY: Duration = Duration::from_secs(5);
/// How long SIGTERM then waits for in-flight requests before stopping anyway.
const DRAIN_TIMEOUT: u64 = 30;
const UPGRADE_SOCK: &str = "/tmp/knoxy-upgrade.sock";
/// The largest TLS record plus its header.
const TLS_RECORD: usize = 16 * 1024 + 5;
/// How many times, a second apart, the old process tries to hand its sockets to the new one.
const UPGRADE_WAIT: usize = 30;

/// Where the objects the table is derived from come from.
enum Source {
    /// A watched directory of YAML files.
    Files(PathBuf),
    /// The cluster's API server (`--kubernetes`).
    Kubernetes,
}

struct Args {
    source: Source,
    /// (label, address) of every listener, in the order they are announced.
    listeners: Vec<(&'static str, SocketAddr)>,
    threads: usize,
    limits: Limits,
    max_connections: usize,
    drain_delay: Duration,
    drain_timeout: u64,
    upgrade: bool,
    upgrade_sock: String,
    access_log: bool,
    /// Requests a revision may hold waiting for a pod before the next gets a 503.
    queue_depth: usize,
    /// This gateway's place among the replicas playing the activator.
    share: Option<knoxy_activator::Share>,
    /// What all held requests together may keep before the next gets a 503.
    held_bytes: usize,
    /// The activator TLS port's certificate and key (PEM files).
    activator_cert: Option<(PathBuf, PathBuf)>,
    /// Knative's autoscaler's stat websocket; empty: demand is not reported.
    autoscaler_url: String,
    /// This gateway's pod, as its reports name it.
    pod_name: String,
    /// This gateway's pod IP (`--pod-ip`, else `$POD_IP` with `--kubernetes`): its place
    /// among each revision's activators.
    pod_ip: Option<std::net::IpAddr>,
    /// `--kubernetes`: the lease, the peers and the Services its status names.
    cluster: ClusterArgs,
}

/// The Kubernetes source's flags, each a `namespace/name` but the last two.
struct ClusterArgs {
    lease: (String, String),
    lease_duration: Duration,
    peers: (String, String),
    public_service: (String, String),
    private_service: (String, String),
    cluster_domain: String,
    /// `--no-status`: never campaign, never write status (the activator-only gateways).
    no_status: bool,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        let name = |n: &str| ("knoxy-system".to_owned(), n.to_owned());
        ClusterArgs {
            lease: name("knoxy-status"),
            lease_duration: Duration::from_secs(15),
            peers: name("knoxy-peers"),
            public_service: name("knoxy"),
            private_service: name("knoxy-internal"),
            cluster_domain: "cluster.local".to_owned(),
            no_status: false,
        }
    }
}

/// What every listener reads: the routes (with their upstream pools) and the certificates,
/// swapped in together.
struct Tables {
    served: Arc<ArcSwap<Served>>,
    certs: Arc<ArcSwap<tls::CertStore>>,
    metrics: Arc<metrics::Metrics>,
    /// Remembers unchanged KIngresses between loads, so a reload costs what changed.
    deriver: Mutex<Deriver>,
    status: Arc<ArcSwap<admin::Status>>,
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    // `knoxy local` starts its instances through this binary, to tie them to its life.
    if argv.first().map(String::as_str) == Some(knoxy_local::supervisor::EXEC_WITH_PARENT) {
        eprintln!(
            "knoxy: {}",
            knoxy_local::supervisor::exec_with_parent(&argv[1..])
        );
        return ExitCode::from(127);
    }
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let local_paths = local_mode(&mut argv);
    let mut args = match parse_args(argv.into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("knoxy: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    // `knoxy local`: the Services run here, and the loop that runs them is the autoscaler
    // the gateway reports to.
    let gateway: Arc<OnceLock<knoxy_local::run::Gateway>> = Arc::default();
    let local = match local_paths.map(|p| start_local(p, Arc::clone(&gateway))) {
        None => None,
        Some(Ok((running, snapshots))) => {
            args.autoscaler_url = running.autoscaler_url.clone();
            Some((running, snapshots))
        }
        Some(Err(e)) => {
            eprintln!("knoxy local: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match metrics::Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("knoxy: metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (sink, outbox) = knoxy_activator::StatSink::new(&args.pod_name);
    let reporting = !args.autoscaler_url.is_empty();
    let prober = match prober_runtime() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("knoxy: the pod prober's runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tables = Arc::new(Tables {
        served: Arc::new(ArcSwap::from_pointee(Served::holding(Activator {
            queue_depth: args.queue_depth,
            share: args.share,
            pod_ip: args.pod_ip,
            budget: Some(knoxy_activator::Budget::new(args.held_bytes)),
            sink: reporting.then(|| sink.clone()),
            prober: Some(prober),
        }))),
        certs: Arc::new(ArcSwap::from_pointee(tls::CertStore::default())),
        metrics,
        deriver: Mutex::new(Deriver::new(DeriveConfig::default())),
        status: Arc::default(),
    });
    let (local, snapshots) = match local {
        Some((running, snapshots)) => (Some(running), Some(snapshots)),
        None => (None, None),
    };
    let local_view = local.as_ref().map(|l| Arc::clone(&l.view));
    // `knoxy local`: every instance stops with the gateway, on every exit path.
    let before_exit: drain::BeforeExit = Arc::default();
    let is_local = local.is_some();
    if let Some(running) = local {
        *before_exit.lock() = Some(Box::new(move || running.stop()));
    }
    // The source's watch lives as long as the gateway.
    let (_watch, cluster) = match &args.source {
        _ if is_local => (None, None),
        Source::Files(dir) => match watch_files(dir, &tables) {
            Ok(watch) => (Some(watch), None),
            Err(code) => return code,
        },
        Source::Kubernetes => match watch_cluster(&args, &tables) {
            Ok(running) => (None, Some(running)),
            Err(code) => return code,
        },
    };
    let listeners = match concrete(&args.listeners) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("knoxy: cannot listen: {e}");
            return ExitCode::from(74);
        }
    };
    if let Some(snapshots) = snapshots {
        // Where the gateway answers, as bound (a port 0 resolved), for the curl lines.
        let bound = |name| listeners.iter().find(|(l, _)| *l == name).map(|(_, a)| *a);
        if let Some(public) = bound("public") {
            let _ = gateway.set(knoxy_local::run::Gateway {
                public,
                private: bound("private"),
            });
        }
        let installed = Arc::clone(&tables);
        let spawned = std::thread::Builder::new()
            .name("knoxy-local-tables".into())
            .spawn(move || {
                while let Ok(snap) = snapshots.recv() {
                    let _ = installed.install(&snap, None, Vec::new(), Instant::now());
                }
            });
        if let Err(e) = spawned {
            eprintln!("knoxy local: {e}");
            return ExitCode::FAILURE;
        }
    }
    let acceptor = match tls::acceptor(Arc::clone(&tables.certs)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("knoxy: TLS: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The activator's TLS port serves one certificate from files (Knative's 8112).
    let activator_acceptor = match &args.activator_cert {
        None => None,
        Some((cert, key)) => {
            match tls::FileCert::load(cert.clone(), key.clone())
                .and_then(|c| tls::acceptor_with(c).map_err(|e| e.to_string()))
            {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("knoxy: --activator-tls-cert/--activator-tls-key: {e}");
                    return ExitCode::from(64);
                }
            }
        }
    };

    let conf = ServerConf {
        threads: args.threads,
        // One single-threaded runtime per worker: a connection stays on the thread that took
        // it, so its wakes, idle upstream shard and metric memo are never shared.
        work_stealing: false,
        grace_period_seconds: Some(args.drain_timeout),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: args.upgrade_sock.clone(),
        upgrade_sock_connect_accept_max_retries: Some(UPGRADE_WAIT),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: args.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let connections = Arc::new(drain::Connections::default());
    let mut drain = background_service(
        "drain",
        drain::Drain {
            connections: Arc::clone(&connections),
            before_exit: Arc::clone(&before_exit),
        },
    );
    drain.threads = Some(1);
    server.add_service(drain);
    // Whether the stat websocket is up (None: demand is not reported), for the metrics.
    let connected = Arc::new(AtomicBool::new(false));
    if reporting {
        let mut reporter = background_service(
            "autoscaler",
            autoscaler::Reporter {
                url: args.autoscaler_url.clone(),
                served: Arc::clone(&tables.served),
                sink,
                outbox: Mutex::new(Some(outbox)),
                connected: Arc::clone(&connected),
            },
        );
        reporter.threads = Some(1);
        server.add_service(reporter);
    }
    let draining = Arc::new(AtomicBool::new(false));
    let parts = Parts {
        served: Arc::clone(&tables.served),
        draining: Arc::clone(&draining),
        metrics: Arc::clone(&tables.metrics),
        connections,
        access_log: args.access_log,
        edge: Arc::new(Edge::new(args.limits.clone())),
        conn_limit: ConnLimit::new(args.max_connections),
    };
    for (label, addr) in &listeners {
        let gateway =
            |listener, tls: bool| Gateway::new(&parts, listener, tls.then(|| acceptor.clone()));
        let tls_listener = matches!(*label, "https" | "private-https" | "activator-tls");
        let mut service = match *label {
            "public" => Service::new(label.to_string(), gateway(Listener::Public, false)),
            "https" => Service::new(label.to_string(), gateway(Listener::Public, true)),
            "private" => Service::new(label.to_string(), gateway(Listener::Private, false)),
            "private-https" => Service::new(label.to_string(), gateway(Listener::Private, true)),
            "activator" | "activator-h2c" => {
                Service::new(label.to_string(), gateway(Listener::Activator, false))
            }
            "activator-tls" => Service::new(
                label.to_string(),
                Gateway::new(&parts, Listener::Activator, activator_acceptor.clone()),
            ),
            _ => {
                let mut admin = Service::new(
                    label.to_string(),
                    admin::Admin {
                        metrics: Arc::clone(&tables.metrics),
                        served: Arc::clone(&tables.served),
                        status: Arc::clone(&tables.status),
                        draining: Arc::clone(&draining),
                        autoscaler: reporting.then(|| Arc::clone(&connected)),
                        local: local_view.clone(),
                        cluster: cluster.clone(),
                    },
                );
                admin.threads = Some(1);
                admin.add_tcp(&addr.to_string());
                server.add_service(admin);
                continue;
            }
        };
        service.add_listener(listener_config(*addr, tls_listener));
        server.add_service(service);
    }
    let armed = Arc::new(AtomicBool::new(false));
    announce_when_listening(listeners, Arc::clone(&armed));
    server.run(RunArgs {
        shutdown_signal: Box::new(signals::Signals {
            draining,
            drain_delay: args.drain_delay,
            armed,
        }),
    });
    drain::run_before_exit(&before_exit);
    ExitCode::SUCCESS
}

impl Tables {
    /// Installs a load, then reports its problems (the reader kept the last good version of
    /// each object they hide).
    fn load(&self, loaded: files::Loaded, started: Instant) {
        let _ = self.install(&loaded.snapshot, None, loaded.errors.clone(), started);
        if !loaded.errors.is_empty() {
            self.metrics.table_load_failures.inc();
        }
        for e in loaded.errors {
            eprintln!("knoxy: {e} (keeping the last good version of its objects)");
        }
    }

    /// Derives the table from a snapshot and swaps routes and certificates in; `moved`, when
    /// the source knows it, says what moved since the previous snapshot.
    fn install(
        &self,
        snap: &Snapshot,
        moved: Option<&Moved>,
        errors: Vec<files::FileError>,
        started: Instant,
    ) -> Arc<BTreeMap<String, IngressStatus>> {
        let derived = match moved {
            Some(moved) => self.deriver.lock().derive_moved(snap, moved),
            None => self.deriver.lock().derive(snap),
        };
        let (certs, cert_problems) =
            tls::CertStore::build(&derived.table.certs, &self.certs.load());
        self.certs.store(Arc::new(certs));
        let served = Arc::new(Served::new(derived.table, &self.served.load()));
        self.served.store(served);
        self.metrics.table_generation.inc();
        self.metrics
            .table_load_seconds
            .set(started.elapsed().as_secs_f64());
        // The new table is live; what follows does not delay it.
        let mut count = 0;
        for (key, status) in &derived.status {
            match status {
                IngressStatus::Ready { .. } => count += 1,
                IngressStatus::Invalid {
                    errors,
                    serving: Some(hash),
                } => {
                    count += 1;
                    let errors: Vec<_> = errors.iter().map(ToString::to_string).collect();
                    eprintln!(
                        "knoxy: KIngress {key} is invalid ({}); its last valid version ({hash}) is still served",
                        errors.join("; ")
                    );
                }
                other => eprintln!("knoxy: KIngress {key} is not served: {other:?}"),
            }
        }
        for p in cert_problems {
            eprintln!("knoxy: {p}");
        }
        self.metrics.table_ingresses.set(count);
        let statuses = Arc::new(derived.status);
        self.status.store(Arc::new(admin::Status {
            generation: self.metrics.table_generation.get(),
            ingresses: Arc::clone(&statuses),
            errors,
        }));
        statuses
    }
}

/// Prints `listening on <label> <addr>` once each address accepts connections (Pingora binds
/// them inside `run_forever`) and the signal handlers are installed (a SIGTERM before them
/// would kill the process undrained); tests and local mode read these lines.
fn announce_when_listening(addrs: Vec<(&'static str, SocketAddr)>, armed: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !armed.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        for (label, addr) in addrs {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("listening on {label} {addr}");
        }
    });
}

/// A listener whose connections Pingora hands over without its own 64 KiB read buffer:
/// hyper buffers plain connections itself (the copy between the two cost every request, and
/// each idle connection held the buffer); TLS keeps a record's worth, so that rustls reads
/// a record at a time without a syscall per chunk.
fn listener_config(addr: SocketAddr, tls: bool) -> ListenerConfig {
    let buffers = if tls {
        L4BufferSettings::new(TLS_RECORD, 0)
    } else {
        L4BufferSettings::unbuffered()
    };
    ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers)
}

/// Resolves port 0 to free ports now, since Pingora binds later by address. Each probe
/// socket stays bound until every port is chosen: released one by one, the kernel could
/// hand two listeners the same port.
fn concrete<L: Copy>(listeners: &[(L, SocketAddr)]) -> std::io::Result<Vec<(L, SocketAddr)>> {
    let mut held = Vec::new();
    let mut resolved = Vec::new();
    for (label, addr) in listeners {
        if addr.port() != 0 {
            resolved.push((*label, *addr));
            continue;
        }
        let probe = std::net::TcpListener::bind(addr)?;
        resolved.push((*label, probe.local_addr()?));
        held.push(probe);
    }
    Ok(resolved)
}

/// A thread of its own for probing revisions' pods: probes start while tables are installed,
/// outside the listeners' runtimes, and must not wait behind requests.
fn prober_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("knoxy-prober".to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// The file source: a watched directory of Kubernetes objects.
fn watch_files(dir: &Path, tables: &Arc<Tables>) -> Result<files::DirWatch, ExitCode> {
    // A broken file holds back only its own objects, on the first load as on later ones.
    let mut watch = match files::watch(dir) {
        Ok((watch, loaded)) => {
            tables.load(loaded, Instant::now());
            watch
        }
        Err(e) => {
            eprintln!("knoxy: cannot watch {}: {e}", dir.display());
            return Err(ExitCode::from(74));
        }
    };
    let watched = Arc::clone(tables);
    let followed = watch.follow(move |loaded| {
        let clean = loaded.errors.is_empty();
        watched.load(loaded, Instant::now());
        if clean {
            eprintln!("knoxy: configuration loaded");
        }
    });
    if let Err(e) = followed {
        eprintln!("knoxy: cannot watch {}: {e}", dir.display());
        return Err(ExitCode::from(74));
    }
    Ok(watch)
}

/// The Kubernetes source: the cluster's objects, watched.
fn watch_cluster(
    args: &Args,
    tables: &Arc<Tables>,
) -> Result<knoxy_cluster::source::Running, ExitCode> {
    let c = &args.cluster;
    let options = knoxy_cluster::source::Options {
        election: (!c.no_status).then(|| {
            knoxy_cluster::lease::Election::new(
                &c.lease.0,
                &c.lease.1,
                &args.pod_name,
                c.lease_duration,
            )
        }),
        writing: (!c.no_status).then(|| knoxy_cluster::status::Writing {
            balancers: knoxy_control::ingress_status::Balancers::new(
                (&c.public_service.0, &c.public_service.1),
                (&c.private_service.0, &c.private_service.1),
                &c.cluster_domain,
            ),
            peers: c.peers.clone(),
        }),
    };
    let installing = Arc::clone(tables);
    knoxy_cluster::source::start(options, move |snap, moved| {
        installing.install(snap, Some(moved), Vec::new(), Instant::now())
    })
    .map_err(|e| {
        eprintln!("knoxy: {e}");
        ExitCode::from(78)
    })
}

/// `knoxy local [PATH...] [flags]`: takes `local` and its paths off `argv` and puts the
/// local defaults (every listener on loopback, no drain delay) before the flags given.
fn local_mode(argv: &mut Vec<String>) -> Option<Vec<PathBuf>> {
    if argv.first().map(String::as_str) != Some("local") {
        return None;
    }
    argv.remove(0);
    let n = argv
        .iter()
        .position(|a| a.starts_with("--"))
        .unwrap_or(argv.len());
    let mut paths: Vec<PathBuf> = argv.drain(..n).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths.push(PathBuf::from("deploy/examples/local"));
    }
    // `--config FILE`: Knative's ConfigMaps from a file of their own (read like the rest).
    while let Some(at) = argv.iter().position(|a| a == "--config") {
        argv.remove(at);
        if at < argv.len() {
            paths.push(PathBuf::from(argv.remove(at)));
        } else {
            argv.push("--config".to_owned());
            break;
        }
    }
    let defaults = [
        "--config-dir",
        "-",
        "--http",
        "127.0.0.1:8080",
        "--https",
        "127.0.0.1:8443",
        "--private-http",
        "127.0.0.1:8081",
        "--private-https",
        "127.0.0.1:8444",
        "--admin",
        "127.0.0.1:9095",
        "--drain-delay",
        "0",
        "--pod-name",
        "knoxy-local",
    ];
    argv.splice(0..0, defaults.iter().map(|s| (*s).to_owned()));
    Some(paths)
}

/// Starts the local loop; its snapshots arrive on the channel.
fn start_local(
    paths: Vec<PathBuf>,
    gateway: Arc<OnceLock<knoxy_local::run::Gateway>>,
) -> std::io::Result<(
    knoxy_local::run::Running,
    std::sync::mpsc::Receiver<Snapshot>,
)> {
    let beside = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let (tx, rx) = std::sync::mpsc::channel();
    let options = knoxy_local::run::Options {
        paths,
        queue: beside.join("knoxy-queue"),
        search: vec![beside],
        launcher: std::env::current_exe().ok(),
        gateway,
    };
    let running = knoxy_local::run::start(options, move |snap| {
        let _ = tx.send(snap);
    })?;
    Ok((running, rx))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
    let mut listeners = vec![
        ("public", any(8080)),
        ("https", any(8443)),
        ("private", any(8081)),
        ("private-https", any(8444)),
        ("admin", any(9090)),
    ];
    let mut parsed = Args {
        source: Source::Kubernetes,
        listeners: Vec::new(),
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        limits: Limits::default(),
        max_connections: knoxy_edge::MAX_CONNECTIONS,
        drain_delay: DRAIN_DELAY,
        drain_timeout: DRAIN_TIMEOUT,
        upgrade: false,
        upgrade_sock: UPGRADE_SOCK.to_owned(),
        access_log: false,
        queue_depth: knoxy_activator::DEFAULT_QUEUE_DEPTH,
        share: None,
        held_bytes: knoxy_activator::budget::DEFAULT_HELD_BYTES,
        activator_cert: None,
        autoscaler_url: knoxy_activator::stats::DEFAULT_AUTOSCALER_URL.to_owned(),
        // Knative sets POD_NAME from the downward API; a hostname is the pod's name too.
        cluster: ClusterArgs::default(),
        pod_ip: None,
        pod_name: std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "knoxy".to_owned()),
    };
    let (mut config_dir, mut kubernetes) = (None, false);
    let (mut index, mut replicas) = (0, 1);
    let (mut cert, mut key) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let limits = &mut parsed.limits;
        match arg.as_str() {
            "--config-dir" => config_dir = Some(PathBuf::from(value()?)),
            "--kubernetes" => kubernetes = true,
            "--lease" => parsed.cluster.lease = object_name(&arg, &value()?)?,
            "--lease-duration" => parsed.cluster.lease_duration = seconds(&arg, &value()?)?,
            "--peers" => parsed.cluster.peers = object_name(&arg, &value()?)?,
            "--public-service" => parsed.cluster.public_service = object_name(&arg, &value()?)?,
            "--private-service" => parsed.cluster.private_service = object_name(&arg, &value()?)?,
            "--cluster-domain" => parsed.cluster.cluster_domain = value()?,
            "--no-status" => parsed.cluster.no_status = true,
            "--pod-ip" => {
                let v = value()?;
                parsed.pod_ip = Some(
                    v.parse()
                        .map_err(|_| format!("{arg} {v:?} is not an IP address"))?,
                );
            }
            "--access-log" => parsed.access_log = true,
            "--upgrade" => parsed.upgrade = true,
            "--upgrade-sock" => parsed.upgrade_sock = value()?,
            "--threads" => parsed.threads = count(&arg, &value()?, 1..=1024)?,
            "--max-connections" => parsed.max_connections = count(&arg, &value()?, 1..=10_000_000)?,
            "--autoscaler-url" => parsed.autoscaler_url = value()?,
            "--pod-name" => parsed.pod_name = value()?,
            "--activator-queue-depth" => {
                parsed.queue_depth = count(&arg, &value()?, 0..=10_000_000)?
            }
            "--activator-held-bytes" => {
                parsed.held_bytes = count(&arg, &value()?, 1 << 20..=1 << 40)?
            }
            "--activator-tls-cert" => cert = Some(PathBuf::from(value()?)),
            "--activator-tls-key" => key = Some(PathBuf::from(value()?)),
            "--activator-replicas" => replicas = count(&arg, &value()?, 1..=100_000)?,
            "--activator-index" => index = count(&arg, &value()?, 0..=99_999)?,
            "--max-header-bytes" => {
                limits.max_header_bytes = count(&arg, &value()?, 1024..=64 << 20)?
            }
            "--max-header-fields" => {
                limits.max_header_fields = count(&arg, &value()?, 1..=100_000)?
            }
            "--h2-max-concurrent-streams" => {
                limits.h2_max_concurrent_streams =
                    u32::try_from(count(&arg, &value()?, 1..=1_000_000)?).unwrap_or(u32::MAX)
            }
            "--header-read-timeout" => limits.header_read_timeout = seconds(&arg, &value()?)?,
            "--idle-timeout" => limits.idle_timeout = seconds(&arg, &value()?)?,
            "--tls-handshake-timeout" => limits.tls_handshake_timeout = seconds(&arg, &value()?)?,
            "--drain-delay" => parsed.drain_delay = seconds(&arg, &value()?)?,
            "--drain-timeout" => {
                parsed.drain_timeout = seconds(&arg, &value()?)?.as_secs_f64().ceil() as u64
            }
            flag => {
                let label = match flag {
                    "--http" => "public",
                    "--https" => "https",
                    "--private-http" => "private",
                    "--private-https" => "private-https",
                    "--admin" => "admin",
                    "--activator-http" => "activator",
                    "--activator-h2c" => "activator-h2c",
                    "--activator-tls" => "activator-tls",
                    other => return Err(format!("unknown argument {other:?}")),
                };
                let v = value()?;
                let addr = v
                    .parse()
                    .map_err(|_| format!("{arg} {v:?} is not an address such as 0.0.0.0:8080"))?;
                match listeners.iter_mut().find(|(l, _)| *l == label) {
                    Some(slot) => slot.1 = addr,
                    // The activator's ports are opened only when asked for.
                    None => listeners.push((label, addr)),
                }
            }
        }
    }
    parsed.share = Some(knoxy_activator::Share::new(index, replicas).ok_or_else(|| {
        format!("--activator-index {index} is not below --activator-replicas {replicas}")
    })?);
    let tls_port = listeners.iter().any(|(l, _)| *l == "activator-tls");
    parsed.activator_cert = match (tls_port, cert, key) {
        (true, Some(cert), Some(key)) => Some((cert, key)),
        (false, None, None) => None,
        _ => {
            return Err(
                "--activator-tls, --activator-tls-cert and --activator-tls-key go together"
                    .to_owned(),
            )
        }
    };
    // Knative's downward-API variable, read only where pods have one.
    if kubernetes && parsed.pod_ip.is_none() {
        parsed.pod_ip = std::env::var("POD_IP").ok().and_then(|v| v.parse().ok());
    }
    parsed.source = match (config_dir, kubernetes) {
        (Some(dir), false) => Source::Files(dir),
        (None, true) => Source::Kubernetes,
        (Some(_), true) => {
            return Err("--config-dir and --kubernetes are two sources: give one".to_owned())
        }
        (None, false) => return Err("--config-dir DIR or --kubernetes is required".to_owned()),
    };
    parsed.listeners = listeners;
    Ok(parsed)
}

/// `namespace/name`, or an error naming the flag.
fn object_name(flag: &str, value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{flag} {value:?} is not namespace/name")),
    }
}

/// A whole number in `range`, or an error naming the flag.
fn count(flag: &str, v: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize, String> {
    v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
        format!(
            "{flag} {v:?} is not a whole number from {} to {}",
            range.start(),
            range.end()
        )
    })
}

/// Seconds (fractions allowed) from 0 to a day, or an error naming the flag.
fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| (0.0..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag} {v:?} is not a number of seconds from 0 to 86400"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn port_zero_listeners_get_distinct_ports() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let fixed = SocketAddr::from(([127, 0, 0, 1], 1));
        let asked: Vec<(usize, SocketAddr)> =
            (0..50).map(|i| (i, any)).chain([(50, fixed)]).collect();
        let got = concrete(&asked).expect("free ports");
        let ports: std::collections::BTreeSet<u16> =
            got.iter().take(50).map(|(_, a)| a.port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(!ports.contains(&0));
        assert_eq!(got[50], (50, fixed));
    }

    #[test]
    fn knoxy_local_takes_paths_and_config_files_before_its_loopback_defaults() {
        let mut argv: Vec<String> = [
            "local",
            "svc",
            "more.yaml",
            "--config",
            "cm.yaml",
            "--threads",
            "1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let paths = local_mode(&mut argv).expect("local mode");
        assert_eq!(paths, ["svc", "more.yaml", "cm.yaml"].map(PathBuf::from));
        let a = parse_args(argv.into_iter()).expect("flags");
        assert_eq!(a.threads, 1);
        assert!(a.listeners.iter().all(|(_, addr)| addr.ip().is_loopback()));
        let mut bare: Vec<String> = vec!["local".into()];
        assert_eq!(
            local_mode(&mut bare),
            Some(vec![PathBuf::from("deploy/examples/local")])
        );
        let mut dangling: Vec<String> = vec!["local".into(), "--config".into()];
        local_mode(&mut dangling);
        assert!(parse_args(dangling.into_iter()).is_err());
        assert_eq!(local_mode(&mut vec!["--config-dir".into()]), None);
    }

    #[test]
    fn every_limit_has_a_flag_and_bad_values_name_it() {
        let a = parse(&[
            "--config-dir",
            "d",
            "--threads",
            "3",
            "--header-read-timeout",
            "2.5",
            "--idle-timeout",
            "7",
            "--tls-handshake-timeout",
            "1",
            "--max-connections",
            "9",
            "--max-header-bytes",
            "4096",
            "--max-header-fields",
            "50",
            "--h2-max-concurrent-streams",
            "8",
            "--drain-delay",
            "0",
            "--drain-timeout",
            "3",
            "--upgrade",
            "--upgrade-sock",
            "/tmp/x.sock",
            "--activator-queue-depth",
            "12",
            "--autoscaler-url",
            "ws://127.0.0.1:1",
            "--pod-name",
            "gw-1",
            "--activator-held-bytes",
            "2097152",
            "--activator-replicas",
            "3",
            "--activator-index",
            "2",
        ])
        .expect("valid");
        assert_eq!(a.share, knoxy_activator::Share::new(2, 3));
        assert_eq!(a.held_bytes, 2 << 20);
        assert_eq!(a.threads, 3);
        assert_eq!(a.queue_depth, 12);
        assert_eq!(
            (a.autoscaler_url.as_str(), a.pod_name.as_str()),
            ("ws://127.0.0.1:1", "gw-1")
        );
        assert_eq!(a.limits.header_read_timeout, Duration::from_millis(2500));
        assert_eq!(a.limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(a.limits.tls_handshake_timeout, Duration::from_secs(1));
        assert_eq!(a.max_connections, 9);
        assert_eq!(
            (a.limits.max_header_bytes, a.limits.max_header_fields),
            (4096, 50)
        );
        assert_eq!(a.limits.h2_max_concurrent_streams, 8);
        assert_eq!((a.drain_delay, a.drain_timeout), (Duration::ZERO, 3));
        assert!(a.upgrade);
        assert_eq!(a.upgrade_sock, "/tmp/x.sock");
        for (flag, bad) in [
            ("--threads", "0"),
            ("--threads", "many"),
            ("--idle-timeout", "-1"),
            ("--idle-timeout", "NaN"),
            ("--header-read-timeout", "1e300"),
            ("--max-connections", "18446744073709551616"),
        ] {
            let e = parse(&["--config-dir", "d", flag, bad])
                .err()
                .expect("an error");
            assert!(e.contains(flag) && e.contains(bad), "{e}");
        }
        assert!(
            parse(&["--config-dir", "d", "--threads"]).is_err(),
            "a missing value"
        );
        let e = parse(&["--config-dir", "d", "--activator-index", "1"])
            .err()
            .expect("index 1 of 1 replica");
        assert!(
            e.contains("--activator-index 1") && e.contains("--activator-replicas 1"),
            "{e}"
        );
        let e = parse(&["--config-dir", "d", "--activator-tls", "127.0.0.1:8112"])
            .err()
            .expect("no certificate");
        assert!(e.contains("--activator-tls-cert"), "{e}");
    }

    #[test]
    fn exactly_one_source_is_given() {
        assert!(matches!(
            parse(&["--kubernetes"]).map(|a| a.source),
            Ok(Source::Kubernetes)
        ));
        for argv in [&["--kubernetes", "--config-dir", "d"][..], &[]] {
            let e = parse(argv).err().expect("refused");
            assert!(
                e.contains("--config-dir") && e.contains("--kubernetes"),
                "{e}"
            );
        }
    }

    #[test]
    fn threads_default_to_the_cpus_the_process_may_use() {
        let a = parse(&["--config-dir", "d"]).expect("valid");
        assert_eq!(
            a.threads,
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        assert_eq!(a.limits, Limits::default());
    }
}
