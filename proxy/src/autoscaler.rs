//! The activator role's report to Knative's autoscaler (contract §4.9): every second each
//! revision's throttler closes its demand window into one batch, sent over the stat
//! websocket that `knoxy_activator::stats::run` keeps open; a revision's first request is
//! sent by its throttler at once.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use knoxy_activator::stats::{self, Outbox, REPORT_INTERVAL};
use knoxy_activator::StatSink;
use parking_lot::Mutex;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::upstreams::Served;

pub struct Reporter {
    pub url: String,
    pub served: Arc<ArcSwap<Served>>,
    pub sink: StatSink,
    /// Taken by the one `start`.
    pub outbox: Mutex<Option<Outbox>>,
    /// Whether the websocket is up.
    pub connected: Arc<AtomicBool>,
}

#[async_trait]
impl BackgroundService for Reporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(outbox) = self.outbox.lock().take() else {
            return;
        };
        let socket = stats::run(self.url.clone(), outbox, Arc::clone(&self.connected));
        let ticks = async {
            let mut tick = tokio::time::interval(REPORT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = tokio::time::Instant::now().into_std();
                let served = self.served.load();
                let batch = served
                    .throttlers()
                    .filter_map(|(_, t)| t.report(now))
                    .collect();
                self.sink.send(batch);
            }
        };
        tokio::select! {
            () = socket => {}
            () = ticks => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}
