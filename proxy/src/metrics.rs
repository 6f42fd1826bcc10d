//! The gateway's Prometheus metrics: requests by listener, KIngress and status code, their
//! latency to the response head, open connections, and the route table's loads.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

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
}

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
                "Client connections ended, by listener and reason (finished, header_timeout, idle_timeout, drained, tls_handshake, refused: over --max-connections)",
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
        })
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
