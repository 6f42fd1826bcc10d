//! The sidecar assembled: the shared parts of the request path built from the config, the
//! listeners served, and Knative's drain-then-exit sequence (contract §7.1).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::drain::Drainer;
use crate::handler::{Active, Handler, Timeouts};
use crate::log;
use crate::readiness::Readiness;
use crate::requestlog::{self, RequestLog};
use crate::server::{self, Listeners};
use crate::stats::{self, Stats};
use crate::usermetrics::UserMetrics;
use knoxy_concurrency::Breaker;
use knoxy_upstream::{Endpoint, Upstream};

pub struct App {
    handler: Arc<Handler>,
    drainer: Arc<Drainer>,
    stats: Arc<Stats>,
    metrics: Option<Arc<UserMetrics>>,
    active: Arc<Active>,
    /// Labels of the autoscaler stats in Prometheus text.
    stat_labels: Arc<str>,
    started: Instant,
}

impl App {
    pub fn build(cfg: &Config, user_metrics: bool) -> App {
        let drainer = Arc::new(Drainer::new(cfg.drain_quiet));
        let stats = Stats::new(cfg.pod.clone());
        let breaker = cfg
            .breaker_capacity()
            .map(|(cc, capacity)| Breaker::new(cc, capacity));
        let metrics = user_metrics.then(|| UserMetrics::new(cfg, breaker.clone()));
        // Knative's MaxIdleConnsPerHost: CC, or 1000 without a limit.
        let max_idle = cfg.breaker_capacity().map_or(1000, |(cc, _)| cc);
        let active = Arc::new(Active::default());
        let handler = Arc::new(Handler {
            readiness: Readiness::new(cfg.readiness.clone(), cfg.http2_auto_detection),
            drainer: Arc::clone(&drainer),
            stats: Arc::clone(&stats),
            breaker,
            upstream: Upstream::new(
                Endpoint::Addr(SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.user_port))),
                max_idle,
            ),
            active: Arc::clone(&active),
            metrics: metrics.clone(),
            request_log: cfg
                .request_log
                .clone()
                .map(|l| RequestLog::new(l.template, revision(cfg), l.probes)),
            timeouts: Timeouts {
                total: cfg.revision_timeout,
                response_start: cfg.response_start_timeout,
                idle: cfg.idle_timeout,
            },
        });
        let stat_labels = format!(
            "destination_namespace=\"{}\",destination_configuration=\"{}\",destination_revision=\"{}\",destination_pod=\"{}\"",
            cfg.namespace, cfg.configuration, cfg.revision, cfg.pod
        )
        .into();
        App {
            handler,
            drainer,
            stats,
            metrics,
            active,
            stat_labels,
            started: Instant::now(),
        }
    }

    /// Serves every listener until `stop` turns true, and starts the stats ticker.
    pub fn serve(
        &self,
        listeners: Listeners,
        tls: Option<TlsAcceptor>,
        stop: &watch::Receiver<bool>,
    ) {
        let edge = server::edge();
        announce("main", &listeners.main);
        let (handler, e, st) = (Arc::clone(&self.handler), Arc::clone(&edge), stop.clone());
        server::accept_loop(listeners.main, stop.clone(), move |stream, peer| {
            tokio::spawn(server::serve_plain(
                stream,
                peer,
                Arc::clone(&handler),
                Arc::clone(&e),
                st.clone(),
            ));
        });
        if let (Some(listener), Some(acceptor)) = (listeners.tls, tls) {
            announce("tls", &listener);
            let (handler, e, st) = (Arc::clone(&self.handler), Arc::clone(&edge), stop.clone());
            server::accept_loop(listener, stop.clone(), move |stream, peer| {
                tokio::spawn(server::serve_tls(
                    stream,
                    peer,
                    acceptor.clone(),
                    Arc::clone(&handler),
                    Arc::clone(&e),
                    st.clone(),
                ));
            });
        }
        announce("admin", &listeners.admin);
        let drainer = Arc::clone(&self.drainer);
        server::accept_loop(listeners.admin, stop.clone(), move |stream, _| {
            let drainer = Arc::clone(&drainer);
            tokio::spawn(server::serve_internal(stream, move |req| {
                server::admin(req, Arc::clone(&drainer))
            }));
        });
        announce("metrics", &listeners.metrics);
        let (stats, labels) = (Arc::clone(&self.stats), Arc::clone(&self.stat_labels));
        server::accept_loop(listeners.metrics, stop.clone(), move |stream, _| {
            let (stats, labels) = (Arc::clone(&stats), Arc::clone(&labels));
            tokio::spawn(server::serve_internal(stream, move |req| {
                let r = server::autoscaler_metrics(&req, &stats, &labels);
                async move { r }
            }));
        });
        if let (Some(listener), Some(metrics)) = (listeners.user_metrics, self.metrics.clone()) {
            announce("usermetrics", &listener);
            server::accept_loop(listener, stop.clone(), move |stream, _| {
                let metrics = Arc::clone(&metrics);
                tokio::spawn(server::serve_internal(stream, move |req| {
                    let r = server::user_metrics(&req, &metrics);
                    async move { r }
                }));
            });
        }
        tokio::spawn(report_stats(Arc::clone(&self.stats), self.started));
    }

    /// After SIGTERM: drain until quiet, close the listeners, let in-flight requests (and
    /// tunnels, cut by the revision timeout) and `/wait-for-drain` calls finish. No limit of
    /// its own: the kubelet's grace period is the backstop, as for Knative's queue.
    pub async fn shut_down(&self, stop: watch::Sender<bool>) {
        log::info!("Received TERM signal, attempting to gracefully shutdown servers.");
        log::info!(
            "Sleeping {:?} to allow K8s propagation of non-ready state",
            self.drainer.quiet_period()
        );
        self.drainer.terminate();
        self.drainer.quiet().await;
        let _ = stop.send(true);
        Drainer::poll_until(
            || self.active.count() == 0 && self.drainer.waiters() == 0,
            Duration::from_millis(20),
            Duration::MAX,
        )
        .await;
    }
}

fn revision(cfg: &Config) -> requestlog::Revision {
    requestlog::Revision {
        name: cfg.revision.clone(),
        namespace: cfg.namespace.clone(),
        service: cfg.service.clone(),
        configuration: cfg.configuration.clone(),
        pod_name: cfg.pod.clone(),
        pod_ip: cfg.pod_ip.clone(),
    }
}

/// Prints the bound address; tests and local mode bind port 0 and read it back.
fn announce(label: &str, listener: &tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        log::info!("listening on {label} {addr}");
    }
}

/// Closes a stats window every reporting period (contract §8.1).
async fn report_stats(stats: Arc<Stats>, started: Instant) {
    let mut tick =
        tokio::time::interval_at(started + stats::REPORTING_PERIOD, stats::REPORTING_PERIOD);
    loop {
        let now = tick.tick().await;
        stats.tick(now, now - started);
    }
}
