//! Graceful stop: on SIGTERM Pingora stops accepting and fires its `ShutdownWatch`; each
//! connection then finishes its in-flight requests and closes. This background service
//! exits the process as soon as no connection is left, or when the drain bound passes
//! (Pingora's grace period, after which it stops the runtimes itself).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

/// Client connections open on every listener.
#[derive(Default)]
pub struct Connections(AtomicUsize);

/// Counts one connection while it lives.
pub struct Open(Arc<Connections>);

impl Connections {
    pub fn open(self: &Arc<Self>) -> Open {
        self.0.fetch_add(1, Ordering::AcqRel);
        Open(Arc::clone(self))
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Drain {
    pub connections: Arc<Connections>,
    /// Runs once, before the process exits (`knoxy local` stops its instances).
    pub before_exit: BeforeExit,
}

/// What must happen before the gateway exits, on whichever path it exits.
pub type BeforeExit = Arc<parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// Runs the hook, if it has not run.
pub fn run_before_exit(hook: &BeforeExit) {
    if let Some(f) = hook.lock().take() {
        f();
    }
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.wait_for(|stop| *stop).await;
        while self.connections.count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("knoxy: drained, exiting");
        run_before_exit(&self.before_exit);
        std::process::exit(0);
    }
}
