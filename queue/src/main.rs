//! `knoxy-queue`: a drop-in replacement for Knative Serving's queue-proxy sidecar.
//!
//! Knative's revision controller runs it beside every user container with the same env vars,
//! ports, probes, drain and metrics as its own queue-proxy (`shared/contracts/queue-proxy.md`).
//!
//! HTTP stack, chosen by measurement (`bench/queue.sh`, `shared/notes/pingora-cost.md`): plain
//! hyper 1.x on a single-threaded tokio runtime, with our own upstream pool. A minimal
//! Pingora proxy costs ~1.5× HAProxy's CPU per request here while hyper costs ~1.1×, and a
//! sidecar runs in every pod, so its binary size, start time and memory also argue against
//! Pingora and `kube`. One thread matches the sidecar's 25m CPU request and needs no locks
//! across cores; the upstream pool is a LIFO stack of ready HTTP/1.1 connections (no hashing,
//! no spawned task per request) plus one shared h2c connection. The system allocator: mimalloc
//! measured the same instructions per request here and twice the resident memory.

mod body;
mod breaker;
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
mod upstream;
mod usermetrics;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use config::{Config, MetricsProtocol, ProcessEnv};
use handler::{Active, Handler, Timeouts};

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
    log::init(&cfg.log_level, cfg.key(), cfg.pod.clone());
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
    let started = Instant::now();
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

    let drainer = Arc::new(drain::Drainer::new(cfg.drain_quiet));
    let stats = stats::Stats::new(cfg.pod.clone());
    let breaker = cfg
        .breaker_capacity()
        .map(|(cc, capacity)| breaker::Breaker::new(cc, capacity));
    let metrics = prometheus.then(|| usermetrics::UserMetrics::new(&cfg, breaker.clone()));
    let max_idle = cfg.breaker_capacity().map_or(1000, |(cc, _)| cc);
    let active = Arc::new(Active::default());
    let handler = Arc::new(Handler {
        readiness: readiness::Readiness::new(cfg.readiness.clone(), cfg.http2_auto_detection),
        drainer: Arc::clone(&drainer),
        stats: Arc::clone(&stats),
        breaker,
        upstream: upstream::Upstream::new(
            SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.user_port)),
            max_idle,
        ),
        active: Arc::clone(&active),
        metrics: metrics.clone(),
        request_log: cfg.request_log.clone().map(|l| {
            let revision = requestlog::Revision {
                name: cfg.revision.clone(),
                namespace: cfg.namespace.clone(),
                service: cfg.service.clone(),
                configuration: cfg.configuration.clone(),
                pod_name: cfg.pod.clone(),
                pod_ip: cfg.pod_ip.clone(),
            };
            requestlog::RequestLog::new(l.template, revision, l.probes)
        }),
        timeouts: Timeouts {
            total: cfg.revision_timeout,
            response_start: cfg.response_start_timeout,
            idle: cfg.idle_timeout,
        },
    });

    let (stop_tx, stop) = watch::channel(false);
    let engines = server::Engines::new();
    announce("main", &listeners.main);
    {
        let (handler, engines) = (Arc::clone(&handler), Arc::clone(&engines));
        server::accept_loop(listeners.main, stop.clone(), move |stream, peer| {
            tokio::spawn(server::serve_plain(
                stream,
                peer,
                Arc::clone(&handler),
                Arc::clone(&engines),
            ));
        });
    }
    if let (Some(listener), Some(acceptor)) = (listeners.tls, acceptor) {
        announce("tls", &listener);
        let (handler, engines) = (Arc::clone(&handler), Arc::clone(&engines));
        server::accept_loop(listener, stop.clone(), move |stream, peer| {
            let (handler, engines) = (Arc::clone(&handler), Arc::clone(&engines));
            tokio::spawn(server::serve_tls(
                stream,
                peer,
                acceptor.clone(),
                handler,
                engines,
            ));
        });
    }
    announce("admin", &listeners.admin);
    {
        let drainer = Arc::clone(&drainer);
        server::accept_loop(listeners.admin, stop.clone(), move |stream, _| {
            let drainer = Arc::clone(&drainer);
            tokio::spawn(server::serve_internal(stream, move |req| {
                server::admin(req, Arc::clone(&drainer))
            }));
        });
    }
    announce("metrics", &listeners.metrics);
    {
        let stats = Arc::clone(&stats);
        let labels: Arc<str> = format!(
            "destination_namespace=\"{}\",destination_configuration=\"{}\",destination_revision=\"{}\",destination_pod=\"{}\"",
            cfg.namespace, cfg.configuration, cfg.revision, cfg.pod
        )
        .into();
        server::accept_loop(listeners.metrics, stop.clone(), move |stream, _| {
            let (stats, labels) = (Arc::clone(&stats), Arc::clone(&labels));
            tokio::spawn(server::serve_internal(stream, move |req| {
                let r = server::autoscaler_metrics(&req, &stats, &labels);
                async move { r }
            }));
        });
    }
    if let (Some(listener), Some(metrics)) = (listeners.user_metrics, metrics) {
        announce("usermetrics", &listener);
        server::accept_loop(listener, stop.clone(), move |stream, _| {
            let metrics = Arc::clone(&metrics);
            tokio::spawn(server::serve_internal(stream, move |req| {
                let r = server::user_metrics(&req, &metrics);
                async move { r }
            }));
        });
    }
    tokio::spawn(report_stats(Arc::clone(&stats), started));

    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    log::info!("Received TERM signal, attempting to gracefully shutdown servers.");
    log::info!(
        "Sleeping {:?} to allow K8s propagation of non-ready state",
        cfg.drain_quiet
    );
    drainer.terminate();
    let finish = async {
        drainer.quiet().await;
        let _ = stop_tx.send(true);
        // In-flight requests (and tunnels, cut by the revision timeout) finish, and so do the
        // `/wait-for-drain` calls ending with the drain; the kubelet's grace period is the
        // backstop, as for Knative's queue.
        drain::Drainer::poll_until(
            || active.count() == 0 && drainer.waiters() == 0,
            Duration::from_millis(20),
            Duration::MAX,
        )
        .await;
    };
    tokio::select! {
        _ = finish => {
            log::info!("Shutdown complete, exiting...");
            ExitCode::SUCCESS
        }
        _ = term.recv() => ExitCode::FAILURE,
        _ = int.recv() => ExitCode::FAILURE,
    }
}

/// Prints the bound address; tests and local mode bind port 0 and read it back.
fn announce(label: &str, listener: &tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        log::info!("listening on {label} {addr}");
    }
}

/// Closes a stats window every reporting period (contract §8.1).
async fn report_stats(stats: Arc<stats::Stats>, started: Instant) {
    let mut tick =
        tokio::time::interval_at(started + stats::REPORTING_PERIOD, stats::REPORTING_PERIOD);
    loop {
        let now = tick.tick().await;
        stats.tick(now, now - started);
    }
}
