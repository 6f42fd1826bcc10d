//! `knoxy-queue`: a drop-in replacement for Knative Serving's queue-proxy sidecar.
//!
//! Knative's revision controller runs it beside every user container with the same env vars,
//! ports, probes, drain and metrics as its own queue-proxy (`shared/contracts/queue-proxy.md`).
//!
//! HTTP stack, chosen by measurement (`bench/run --only queue-h1`, `bench/instructions.sh queue`,
//! `shared/notes/pingora-cost.md`): plain hyper 1.x on a single-threaded tokio runtime, with
//! our own upstream pool. A minimal Pingora proxy costs ~1.5× HAProxy's CPU per request here
//! while hyper costs ~1.1×, and a sidecar runs in every pod, so its binary size, start time and
//! memory also argue against Pingora and `kube`. One thread matches the sidecar's 25m CPU
//! request and needs no locks across cores; the upstream pool is a FIFO of ready HTTP/1.1
//! connections (no hashing, no spawned task per request) plus one shared h2c connection.
//! The system allocator: mimalloc measured the same instructions per request here and twice
//! the resident memory.
//!
//! Where Knoxy differs from the Go queue-proxy, on purpose:
//! - `:9090/metrics` answers Prometheus text when the client asks for `text/plain` (and not
//!   for protobuf); the autoscaler always asks for protobuf and gets it.
//! - OTLP export of user metrics and traces (`grpc`, `http/protobuf`, `stdout`) is accepted
//!   but not performed (a warning at start); `traceparent`, `baggage` and B3 headers pass
//!   through unchanged, as with Knative's default tracing `none`. No pprof port (Go-only).
//! - `Upgrade: h2c` on HTTP/1.1 is not offered (Go's answer to it is a 502 anyway);
//!   prior-knowledge h2c and h2 over TLS are.
//! - Request heads are limited to Go's 1 MiB + 4096 bytes and to 1000 fields (Go counts
//!   bytes only); upstream response heads to hyper's 100 fields.
//! - HTTP/1 request bodies are always read while responding (`ENABLE_HTTP_FULL_DUPLEX` is
//!   validated and needs nothing more).
//! - Knoxy-only overrides, for many instances on one host: `KNOXY_BIND_ADDRESS`,
//!   `KNOXY_ADMIN_PORT`, `KNOXY_METRICS_PORT`, `KNOXY_DRAIN_QUIET_PERIOD`, `KNOXY_CERTS_DIR`.

mod app;
mod body;
mod config;
mod drain;
mod handler;
mod headers;
mod log;
mod readiness;
mod requestlog;
mod server;
mod stats;
mod tls;
mod usermetrics;

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use config::{Config, MetricsProtocol, ProcessEnv};

fn main() -> ExitCode {
    let cfg = match Config::from_env(&ProcessEnv) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    log::init(cfg.log.clone(), &cfg.key(), &cfg.pod);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cfg))
}

async fn run(cfg: Config) -> ExitCode {
    // Drain on the first SIGTERM or SIGINT; a second one exits at once (contract §7.1).
    // Installed before any listener is announced, so no signal finds the default action.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            log::error!("failed to install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let acceptor = match tls::acceptor(&cfg) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let prometheus = cfg.metrics_protocol == MetricsProtocol::Prometheus;
    if let MetricsProtocol::Otlp(p) = &cfg.metrics_protocol {
        log::warning!("requestMetrics protocol {p:?} (OTLP push) is not supported by knoxy-queue; user metrics are off");
    }
    if cfg.tracing_protocol != "none" {
        log::warning!("tracing protocol {:?} is not supported by knoxy-queue; trace headers pass through unchanged", cfg.tracing_protocol);
    }
    let listeners = match server::Listeners::bind(&cfg, acceptor.is_some(), prometheus).await {
        Ok(l) => l,
        Err(e) => {
            log::error!("Failed to bring up queue-proxy, shutting down. {e}");
            eprintln!("Failed to bring up queue-proxy, shutting down.");
            return ExitCode::FAILURE;
        }
    };
    let app = app::App::build(&cfg, prometheus);
    let (stop_tx, stop) = watch::channel(false);
    app.serve(listeners, acceptor, &stop);

    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tokio::select! {
        _ = app.shut_down(stop_tx) => {
            log::info!("Shutdown complete, exiting...");
            ExitCode::SUCCESS
        }
        _ = term.recv() => ExitCode::FAILURE,
        _ = int.recv() => ExitCode::FAILURE,
    }
}
