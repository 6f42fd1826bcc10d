//! The gateway's Prometheus metrics: requests by listener, KIngress and status code, their
//! latency to the response head, open connections, and the route table's loads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use http::StatusCode;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use knoxy_activator::Load;

use crate::gateway::Matched;

/// The request metrics' children one thread has used, by what labels them: prometheus'
/// `with_label_values` reads a lock every thread shares, so the request path asks it once
/// per thread and label set. Emptied when a new table is installed, which bounds it by the
/// labels of one table and releases the names it keeps.
#[derive(Default)]
struct Children {
    generation: u64,
    by_labels: HashMap<LabelKey, Child, foldhash::fast::RandomState>,
}

/// Listener, host and KIngress by address (the `Arc`s are kept alive in [`Child`]), and the code.
type LabelKey = (usize, usize, usize, u16);

struct Child {
    requests: IntCounter,
    duration: Histogram,
    _names: (Option<Arc<str>>, Option<Arc<str>>),
}

thread_local! {
    static CHILDREN: RefCell<Children> = RefCell::new(Children::default());
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub open_connections: IntGaugeVec,
    pub closed: IntCounterVec,
    pub table_generation: IntCounter,
    pub table_load_seconds: Gauge,
    pub table_ingresses: IntGauge,
    pub table_load_failures: IntCounter,
    /// The activator role, per revision: gauges set from the throttlers at each scrape.
    pub revision_concurrency: IntGaugeVec,
    pub revision_waiting: IntGaugeVec,
    pub revision_pods: IntGaugeVec,
    pub revision_refused: IntCounterVec,
    pub revision_wait: HistogramVec,
    pub revision_in_flight: IntGaugeVec,
    pub held_bytes: IntGauge,
    pub autoscaler_connected: IntGauge,
    autoscaler_registered: std::sync::atomic::AtomicBool,
}

/// Knative's activator labels a revision so.
const REVISION_LABELS: [&str; 2] = ["namespace_name", "revision_name"];

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "knoxy_requests_total",
                "Requests by listener, host (as configured; * for a rule without hosts, empty when none matched), KIngress (namespace/name) and status code",
            ),
            &["listener", "host", "ingress", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "knoxy_request_duration_seconds",
                "Time from the request to the response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["listener", "host", "ingress"],
        )?;
        let open_connections = IntGaugeVec::new(
            Opts::new(
                "knoxy_open_connections",
                "Client connections open, by listener",
            ),
            &["listener"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "knoxy_connections_closed_total",
                "Client connections ended, by listener and reason (finished, header_timeout, idle_timeout, drained, tls_handshake_timeout, tls_handshake_failed, refused: over --max-connections)",
            ),
            &["listener", "reason"],
        )?;
        let table_generation = IntCounter::new(
            "knoxy_route_table_generation",
            "Route tables installed since start",
        )?;
        let table_load_seconds = Gauge::new(
            "knoxy_route_table_load_seconds",
            "Time to derive and install the last table",
        )?;
        let table_ingresses = IntGauge::new(
            "knoxy_route_table_ingresses",
            "KIngresses served by the current table",
        )?;
        let table_load_failures = IntCounter::new(
            "knoxy_route_table_load_failures_total",
            "Loads rejected (the last good table stayed)",
        )?;
        let revision_concurrency = IntGaugeVec::new(
            Opts::new(
                "activator_request_concurrency",
                "Requests of a revision in the gateway's activator role, waiting or on a pod",
            ),
            &REVISION_LABELS,
        )?;
        let revision_waiting = IntGaugeVec::new(
            Opts::new(
                "knoxy_activator_waiting_requests",
                "Requests of a revision waiting for a pod with room",
            ),
            &REVISION_LABELS,
        )?;
        let revision_pods = IntGaugeVec::new(
            Opts::new(
                "knoxy_activator_pods",
                "Pods of a revision the throttler sends to",
            ),
            &REVISION_LABELS,
        )?;
        let revision_refused = IntCounterVec::new(
            Opts::new(
                "knoxy_activator_refused_total",
                "Requests of a revision refused: queue_full or held_bytes (503), timeout (504)",
            ),
            &["namespace_name", "revision_name", "reason"],
        )?;
        let revision_wait = HistogramVec::new(
            HistogramOpts::new(
                "knoxy_activator_wait_seconds",
                "Time a request waited for a pod with room (cold starts, revisions at capacity)",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &REVISION_LABELS,
        )?;
        let revision_in_flight = IntGaugeVec::new(
            Opts::new(
                "knoxy_activator_in_flight_requests",
                "Requests of a revision on a pod",
            ),
            &REVISION_LABELS,
        )?;
        let held_bytes = IntGauge::new(
            "knoxy_activator_held_bytes",
            "What the requests waiting for a pod keep, of --activator-held-bytes",
        )?;
        let autoscaler_connected = IntGauge::new(
            "knoxy_activator_autoscaler_connected",
            "1 while the stat websocket to Knative's autoscaler is up (absent when not reporting)",
        )?;
        registry.register(Box::new(revision_in_flight.clone()))?;
        registry.register(Box::new(held_bytes.clone()))?;
        registry.register(Box::new(revision_concurrency.clone()))?;
        registry.register(Box::new(revision_waiting.clone()))?;
        registry.register(Box::new(revision_pods.clone()))?;
        registry.register(Box::new(revision_refused.clone()))?;
        registry.register(Box::new(revision_wait.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(table_generation.clone()))?;
        registry.register(Box::new(table_load_seconds.clone()))?;
        registry.register(Box::new(table_ingresses.clone()))?;
        registry.register(Box::new(table_load_failures.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            open_connections,
            closed,
            table_generation,
            table_load_seconds,
            table_ingresses,
            table_load_failures,
            revision_concurrency,
            revision_waiting,
            revision_pods,
            revision_refused,
            revision_wait,
            revision_in_flight,
            held_bytes,
            autoscaler_connected,
            autoscaler_registered: Default::default(),
        })
    }

    /// Counts a request and its time to the response head, without a lock shared by threads.
    pub fn record(&self, listener: &'static str, matched: &Matched, status: StatusCode, secs: f64) {
        let generation = self.table_generation.get();
        let address = |name: &Option<Arc<str>>| name.as_ref().map_or(0, |n| n.as_ptr() as usize);
        let host = match (&matched.host, matched.any_host) {
            (None, true) => 1,
            (host, _) => address(host),
        };
        let key = (
            listener.as_ptr() as usize,
            host,
            address(&matched.ingress),
            status.as_u16(),
        );
        CHILDREN.with_borrow_mut(|children| {
            if children.generation != generation {
                children.by_labels.clear();
                children.generation = generation;
            }
            let child = children.by_labels.entry(key).or_insert_with(|| {
                let (host, ingress) = (
                    matched.host_label(),
                    matched.ingress.as_deref().unwrap_or(""),
                );
                Child {
                    requests: self.requests.with_label_values(&[
                        listener,
                        host,
                        ingress,
                        status.as_str(),
                    ]),
                    duration: self.duration.with_label_values(&[listener, host, ingress]),
                    _names: (matched.host.clone(), matched.ingress.clone()),
                }
            });
            child.requests.inc();
            child.duration.observe(secs);
        });
    }

    /// Sets the per-revision gauges from what each throttler holds now; a revision no longer
    /// served loses its series.
    pub fn observe_throttlers<'a>(&self, throttlers: impl Iterator<Item = (&'a str, Load)>) {
        self.revision_concurrency.reset();
        self.revision_waiting.reset();
        self.revision_pods.reset();
        self.revision_in_flight.reset();
        for (key, load) in throttlers {
            let labels = key
                .split_once('/')
                .map_or([key, ""], |(ns, name)| [ns, name]);
            let waiting = i64::try_from(load.waiting).unwrap_or(i64::MAX);
            let pods = i64::try_from(load.pods).unwrap_or(i64::MAX);
            self.revision_concurrency
                .with_label_values(&labels)
                .set(i64::from(load.in_flight).saturating_add(waiting));
            self.revision_waiting
                .with_label_values(&labels)
                .set(waiting);
            self.revision_pods.with_label_values(&labels).set(pods);
            self.revision_in_flight
                .with_label_values(&labels)
                .set(i64::from(load.in_flight));
        }
    }

    /// The gateway-wide activator gauges; the websocket's is registered once it is known
    /// that demand is reported.
    pub fn observe_activator(&self, held_bytes: usize, connected: Option<bool>) {
        self.held_bytes
            .set(i64::try_from(held_bytes).unwrap_or(i64::MAX));
        if let Some(up) = connected {
            if !self
                .autoscaler_registered
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let _ = self
                    .registry
                    .register(Box::new(self.autoscaler_connected.clone()));
            }
            self.autoscaler_connected.set(i64::from(up));
        }
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
