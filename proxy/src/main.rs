//! `knoxy`: the gateway. Serves Knative's KIngress objects (from a directory of YAML files,
//! for now) on Pingora's server shell, with hyper as the HTTP engine on every listener.
//!
//! Usage: `knoxy --config-dir DIR [--http ADDR] [--https ADDR] [--private-http ADDR]
//! [--private-https ADDR] [--admin ADDR] [--drain-timeout SECONDS] [--access-log]`. Defaults: public
//! `0.0.0.0:8080`/`8443`, private (cluster-local) `8081`/`8444`, admin `9090` with `/metrics`,
//! `/healthz`, `/ready` and `/status`; port 0 picks a free port. SIGTERM stops accepting and
//! exits 0 once in-flight requests and WebSocket tunnels finish, or after `--drain-timeout`
//! (30 s).
//!
//! Reloads: the directory is watched; only changed files (and in them, changed documents)
//! are parsed again, and only KIngresses whose object or inputs changed are translated
//! again (`knoxy_control::derive::Deriver`), so a 10,000-ingress table swaps in tens of ms.
//! A broken file or document holds back only its own objects (their last good versions stay
//! served, and the problem is logged and listed on `/status`); an invalid KIngress keeps its
//! last valid version served.
//! Upstream connections are pooled per endpoint (`knoxy-upstream`, shared with knoxy-queue).
//!
//! TLS: Pingora accepts the TCP connections and tokio-rustls does the handshake, so the
//! certificate can be chosen by SNI from the live table (Pingora's rustls listener takes
//! fixed certificate files).

mod admin;
mod drain;
mod gateway;
mod metrics;
mod tls;
mod upstreams;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use knoxy_control::derive::{DeriveConfig, Deriver, IngressStatus, Snapshot};
use knoxy_control::files;
use knoxy_control::route::RouteTable;
use parking_lot::Mutex;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;

use gateway::{Gateway, Visibility};

struct Args {
    config_dir: PathBuf,
    /// (label, address) of every listener, in the order they are announced.
    listeners: Vec<(&'static str, SocketAddr)>,
    /// How long SIGTERM waits for in-flight requests before stopping anyway.
    drain_timeout: u64,
    access_log: bool,
}

/// What every listener reads: the routes and the certificates, swapped in together.
struct Tables {
    routes: Arc<ArcSwap<RouteTable>>,
    certs: Arc<ArcSwap<tls::CertStore>>,
    metrics: Arc<metrics::Metrics>,
    /// Remembers unchanged KIngresses between loads, so a reload costs what changed.
    deriver: Mutex<Deriver>,
    status: Arc<ArcSwap<admin::Status>>,
    upstreams: Arc<upstreams::Upstreams>,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("knoxy: {e}\nusage: knoxy --config-dir DIR [--http ADDR] [--https ADDR] [--private-http ADDR] [--private-https ADDR] [--admin ADDR] [--drain-timeout SECONDS] [--access-log]");
            return ExitCode::from(64);
        }
    };
    let metrics = match metrics::Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("knoxy: metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tables = Arc::new(Tables {
        routes: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
        certs: Arc::new(ArcSwap::from_pointee(tls::CertStore::default())),
        metrics,
        deriver: Mutex::new(Deriver::new(DeriveConfig::default())),
        status: Arc::default(),
        upstreams: Arc::default(),
    });
    // A broken file holds back only its own objects, on the first load as on later ones.
    let mut watch = match files::watch(&args.config_dir) {
        Ok((watch, loaded)) => {
            tables.load(loaded, Instant::now());
            watch
        }
        Err(e) => {
            eprintln!("knoxy: cannot watch {}: {e}", args.config_dir.display());
            return ExitCode::from(74);
        }
    };
    let watched = Arc::clone(&tables);
    let followed = watch.follow(move |loaded| {
        let clean = loaded.errors.is_empty();
        watched.load(loaded, Instant::now());
        if clean {
            eprintln!("knoxy: configuration loaded");
        }
    });
    if let Err(e) = followed {
        eprintln!("knoxy: cannot watch {}: {e}", args.config_dir.display());
        return ExitCode::from(74);
    }
    let listeners = match args
        .listeners
        .iter()
        .map(|(l, a)| concrete(*a).map(|a| (*l, a)))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("knoxy: cannot listen: {e}");
            return ExitCode::from(74);
        }
    };
    let acceptor = match tls::acceptor(Arc::clone(&tables.certs)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("knoxy: TLS: {e}");
            return ExitCode::FAILURE;
        }
    };

    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(args.drain_timeout),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let connections = Arc::new(drain::Connections::default());
    server.add_service(background_service(
        "drain",
        drain::Drain {
            connections: Arc::clone(&connections),
        },
    ));
    for (label, addr) in &listeners {
        let app = |visibility, tls: bool| {
            let acceptor = tls.then(|| acceptor.clone());
            let (metrics, connections) = (Arc::clone(&tables.metrics), Arc::clone(&connections));
            Gateway::new(
                Arc::clone(&tables.routes),
                visibility,
                Arc::clone(&tables.upstreams),
                metrics,
                connections,
                acceptor,
                args.access_log,
            )
        };
        let mut service = match *label {
            "public" => Service::new(label.to_string(), app(Visibility::Public, false)),
            "https" => Service::new(label.to_string(), app(Visibility::Public, true)),
            "private" => Service::new(label.to_string(), app(Visibility::Private, false)),
            "private-https" => Service::new(label.to_string(), app(Visibility::Private, true)),
            _ => {
                let mut admin = Service::new(
                    label.to_string(),
                    admin::Admin {
                        metrics: Arc::clone(&tables.metrics),
                        status: Arc::clone(&tables.status),
                    },
                );
                admin.add_tcp(&addr.to_string());
                server.add_service(admin);
                continue;
            }
        };
        service.add_tcp(&addr.to_string());
        server.add_service(service);
    }
    announce_when_listening(listeners);
    server.run_forever()
}

impl Tables {
    /// Installs a load, then reports its problems (the reader kept the last good version of
    /// each object they hide).
    fn load(&self, loaded: files::Loaded, started: Instant) {
        self.install(&loaded.snapshot, loaded.errors.clone(), started);
        if !loaded.errors.is_empty() {
            self.metrics.table_load_failures.inc();
        }
        for e in loaded.errors {
            eprintln!("knoxy: {e} (keeping the last good version of its objects)");
        }
    }

    /// Derives the table from a loaded snapshot and swaps routes and certificates in.
    fn install(&self, snap: &Snapshot, errors: Vec<files::FileError>, started: Instant) {
        let derived = self.deriver.lock().derive(snap);
        let (certs, problems) = tls::CertStore::build(&derived.table.certs, &self.certs.load());
        self.certs.store(Arc::new(certs));
        let table = Arc::new(derived.table);
        self.routes.store(Arc::clone(&table));
        self.metrics.table_generation.inc();
        self.metrics
            .table_load_seconds
            .set(started.elapsed().as_secs_f64());
        // The new table is live; what follows does not delay it.
        let mut served = 0;
        for (key, status) in &derived.status {
            match status {
                IngressStatus::Ready { .. } => served += 1,
                IngressStatus::Invalid {
                    errors,
                    serving: Some(hash),
                } => {
                    served += 1;
                    let errors: Vec<_> = errors.iter().map(ToString::to_string).collect();
                    eprintln!(
                        "knoxy: KIngress {key} is invalid ({}); its last valid version ({hash}) is still served",
                        errors.join("; ")
                    );
                }
                other => eprintln!("knoxy: KIngress {key} is not served: {other:?}"),
            }
        }
        for p in problems {
            eprintln!("knoxy: {p}");
        }
        self.metrics.table_ingresses.set(served);
        self.status.store(Arc::new(admin::Status {
            generation: self.metrics.table_generation.get(),
            ingresses: derived.status,
            errors,
        }));
        self.upstreams.retain_for(&table);
    }
}

/// Prints `listening on <label> <addr>` once each address accepts connections (Pingora binds
/// them inside `run_forever`); tests and local mode read these lines.
fn announce_when_listening(addrs: Vec<(&'static str, SocketAddr)>) {
    std::thread::spawn(move || {
        for (label, addr) in addrs {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("listening on {label} {addr}");
        }
    });
}

/// Resolves port 0 to a free port now, since Pingora binds later by address.
fn concrete(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    std::net::TcpListener::bind(addr)?.local_addr()
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
    let mut config_dir = None;
    let mut drain_timeout = 30;
    let mut access_log = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let label = match arg.as_str() {
            "--config-dir" => {
                config_dir = Some(PathBuf::from(value("--config-dir")?));
                continue;
            }
            "--access-log" => {
                access_log = true;
                continue;
            }
            "--drain-timeout" => {
                let v = value("--drain-timeout")?;
                drain_timeout = v
                    .parse()
                    .map_err(|_| format!("--drain-timeout {v:?} is not a number of seconds"))?;
                continue;
            }
            "--http" => "public",
            "--https" => "https",
            "--private-http" => "private",
            "--private-https" => "private-https",
            "--admin" => "admin",
            other => return Err(format!("unknown argument {other:?}")),
        };
        let v = value(&arg)?;
        let addr = v
            .parse()
            .map_err(|_| format!("{arg} {v:?} is not an address such as 0.0.0.0:8080"))?;
        if let Some(slot) = listeners.iter_mut().find(|(l, _)| *l == label) {
            slot.1 = addr;
        }
    }
    Ok(Args {
        config_dir: config_dir.ok_or("--config-dir is required")?,
        listeners,
        drain_timeout,
        access_log,
    })
}
