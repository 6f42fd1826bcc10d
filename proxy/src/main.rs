//! `knoxy`: the gateway. Serves Knative's KIngress objects (from a directory of YAML files,
//! for now) on Pingora's server shell, with hyper as the HTTP engine on every listener.
//!
//! Usage: `knoxy --config-dir DIR [--http ADDR] [--private-http ADDR]`
//! (defaults `0.0.0.0:8080` public and `0.0.0.0:8081` private, port 0 picks a free port).

mod gateway;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use knoxy_control::derive::{derive, DeriveConfig};
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
    let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    // The first load must succeed; later failures keep the last good table.
    match files::load_dir(&args.config_dir) {
        Ok(snap) => table.store(Arc::new(derive(&snap, &DeriveConfig::default()).table)),
        Err(errors) => {
            for e in errors {
                eprintln!("knoxy: {e}");
            }
            return ExitCode::from(65);
        }
    }
    let watched = Arc::clone(&table);
    let _watch = match files::watch(&args.config_dir, move |loaded| match loaded {
        Ok(snap) => {
            watched.store(Arc::new(derive(&snap, &DeriveConfig::default()).table));
            eprintln!("knoxy: configuration loaded");
        }
        Err(errors) => {
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

    let (http, private_http) = match (concrete(args.http), concrete(args.private_http)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("knoxy: cannot listen: {e}");
            return ExitCode::from(74);
        }
    };
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for (name, addr, visibility) in [
        ("public", http, Visibility::Public),
        ("private", private_http, Visibility::Private),
    ] {
        let mut service = Service::new(
            name.to_owned(),
            Gateway::new(Arc::clone(&table), visibility),
        );
        service.add_tcp(&addr.to_string());
        server.add_service(service);
    }
    announce_when_listening(vec![("public", http), ("private", private_http)]);
    server.run_forever()
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
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config-dir" => config_dir = Some(PathBuf::from(value("--config-dir")?)),
            "--http" => http = addr("--http", &value("--http")?)?,
            "--private-http" => private_http = addr("--private-http", &value("--private-http")?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        config_dir: config_dir.ok_or("--config-dir is required")?,
        http,
        private_http,
    })
}

fn addr(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} {value:?} is not an address such as 0.0.0.0:8080"))
}
