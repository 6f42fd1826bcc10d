//! The signals that stop or upgrade the gateway, as Pingora's shell acts on them, with the
//! drain Kubernetes expects in front of SIGTERM: `/ready` turns 503 at once and the listeners
//! keep serving for the drain delay, so endpoints and load balancers drop the pod before it
//! stops accepting.
//! - SIGTERM: not ready, drain delay, then Pingora's graceful stop (stop accepting, drain).
//! - SIGQUIT: Pingora's graceful upgrade (hand the listening sockets to `knoxy --upgrade`).
//! - SIGINT: stop now.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

pub struct Signals {
    /// Read by `/ready`.
    pub draining: Arc<AtomicBool>,
    pub drain_delay: Duration,
    /// Set once the handlers are installed: until then SIGTERM would kill the process
    /// undrained, so the gateway does not say it is listening before.
    pub armed: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut quit, mut term, mut int) = match (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(q), Ok(t), Ok(i)) => {
                self.armed.store(true, Ordering::Release);
                (q, t, i)
            }
            _ => {
                eprintln!("knoxy: cannot install signal handlers; stopping");
                return ShutdownSignal::FastShutdown;
            }
        };
        tokio::select! {
            _ = quit.recv() => {
                eprintln!("knoxy: SIGQUIT: handing the listening sockets to the new process");
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                self.draining.store(true, Ordering::Release);
                eprintln!("knoxy: SIGTERM: not ready; serving for {:?} more, then draining", self.drain_delay);
                tokio::select! {
                    _ = tokio::time::sleep(self.drain_delay) => ShutdownSignal::GracefulTerminate,
                    _ = int.recv() => ShutdownSignal::FastShutdown,
                }
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
        }
    }
}
