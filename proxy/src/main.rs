//! `knoxy`: the gateway. Serves Knative's KIngress objects (from a directory of YAML files,
//! for now) on Pingora's server shell, with hyper as the HTTP engine on every listener.
//!
//! Usage: `knoxy --config-dir DIR [--http ADDR] [--private-http ADDR] [--admin ADDR] [--drain-timeout SECONDS]`
//! (defaults `0.0.0.0:8080` public, `0.0.0.0:8081` private, `0.0.0.0:9090` admin with
//! `/metrics`, `/healthz`, `/ready`; port 0 picks a free port). SIGTERM stops accepting and
//! exits 0 once in-flight requests finish, or after `--drain-timeout` (30 s).

mod admin;
mod drain;
mod gateway;
mod metrics;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use knoxy_control::derive::{derive, DeriveConfig, IngressStatus, Snapshot};
use knoxy_control::files;
use knoxy_control::route::RouteTable;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;

use gateway::{Gateway, Visibility};

struct Args {
    config_dir: PathBuf,
    http: SocketAddr,
    private_http: SocketAddr,
    admin: SocketAddr,
    /// How long SIGTERM waits for in-flight requests before stopping anyway.
    drain_timeout: u64,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "knoxy: {e}\nusage: knoxy --config-dir DIR [--http ADDR] [--private-http ADDR]"
            );
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
    let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    // The first load must succeed; later failures keep the last good table.
    let started = Instant::now();
    match files::load_dir(&args.config_dir) {
        Ok(snap) => install(&table, &metrics, &snap, started),
        Err(errors) => {
            for e in errors {
                eprintln!("knoxy: {e}");
            }
            return ExitCode::from(65);
        }
    }
    let (watched, watch_metrics) = (Arc::clone(&table), Arc::clone(&metrics));
    let _watch = match files::watch(&args.config_dir, move |loaded| match loaded {
        Ok(snap) => {
            install(&watched, &watch_metrics, &snap, Instant::now());
            eprintln!("knoxy: configuration loaded");
        }
        Err(errors) => {
            watch_metrics.table_load_failures.inc();
            for e in errors {
                eprintln!("knoxy: {e} (keeping the last good configuration)");
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("knoxy: cannot watch {}: {e}", args.config_dir.display());
            return ExitCode::from(74);
        }
    };

    let (http, private_http, admin) = match (
        concrete(args.http),
        concrete(args.private_http),
        concrete(args.admin),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("knoxy: cannot listen: {e}");
            return ExitCode::from(74);
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
    server.add_service(pingora_core::services::background::background_service(
        "drain",
        drain::Drain {
            connections: Arc::clone(&connections),
        },
    ));
    for (name, addr, visibility) in [
        ("public", http, Visibility::Public),
        ("private", private_http, Visibility::Private),
    ] {
        let gateway = Gateway::new(
            Arc::clone(&table),
            visibility,
            Arc::clone(&metrics),
            Arc::clone(&connections),
        );
        let mut service = Service::new(name.to_owned(), gateway);
        service.add_tcp(&addr.to_string());
        server.add_service(service);
    }
    let mut service = Service::new(
        "admin".to_owned(),
        admin::Admin {
            metrics: Arc::clone(&metrics),
        },
    );
    service.add_tcp(&admin.to_string());
    server.add_service(service);
    announce_when_listening(vec![
        ("public", http),
        ("private", private_http),
        ("admin", admin),
    ]);
    server.run_forever()
}

/// Derives the table from a loaded snapshot and swaps it in; records the load.
fn install(
    table: &ArcSwap<RouteTable>,
    metrics: &metrics::Metrics,
    snap: &Snapshot,
    started: Instant,
) {
    let derived = derive(snap, &DeriveConfig::default());
    let served = derived
        .status
        .values()
        .filter(|s| matches!(s, IngressStatus::Ready { .. }))
        .count();
    for (key, status) in &derived.status {
        if !matches!(status, IngressStatus::Ready { .. }) {
            eprintln!("knoxy: KIngress {key} is not served: {status:?}");
        }
    }
    table.store(Arc::new(derived.table));
    metrics.table_generation.inc();
    metrics
        .table_ingresses
        .set(i64::try_from(served).unwrap_or(i64::MAX));
    metrics
        .table_load_seconds
        .set(started.elapsed().as_secs_f64());
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
    let mut config_dir = None;
    let mut http: SocketAddr = ([0, 0, 0, 0], 8080).into();
    let mut private_http: SocketAddr = ([0, 0, 0, 0], 8081).into();
    let mut admin: SocketAddr = ([0, 0, 0, 0], 9090).into();
    let mut drain_timeout = 30;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config-dir" => config_dir = Some(PathBuf::from(value("--config-dir")?)),
            "--http" => http = addr("--http", &value("--http")?)?,
            "--private-http" => private_http = addr("--private-http", &value("--private-http")?)?,
            "--admin" => admin = addr("--admin", &value("--admin")?)?,
            "--drain-timeout" => {
                let v = value("--drain-timeout")?;
                drain_timeout = v
                    .parse()
                    .map_err(|_| format!("--drain-timeout {v:?} is not a number of seconds"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        config_dir: config_dir.ok_or("--config-dir is required")?,
        http,
        private_http,
        admin,
        drain_timeout,
    })
}

fn addr(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} {value:?} is not an address such as 0.0.0.0:8080"))
}
