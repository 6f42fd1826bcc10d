//! Drain (contract §7): after SIGTERM or `/wait-for-drain`, health checks answer 503 while
//! ordinary requests are still served; the drain ends after a quiet period with no arrivals.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

/// `/wait-for-drain` without a SIGTERM resets the drain after this long (`handlers.go`).
const RESET_WITHOUT_TERM: Duration = Duration::from_secs(1);

pub struct Drainer {
    draining: AtomicBool,
    /// Milliseconds since `epoch` of the last arriving ordinary request while draining.
    last_arrival_ms: AtomicU64,
    epoch: Instant,
    quiet: Duration,
    terminating: watch::Sender<bool>,
    /// `/wait-for-drain` calls not answered yet; shutdown waits for them.
    waiters: AtomicUsize,
}

/// One `/wait-for-drain` call being served.
struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drainer {
    pub fn new(quiet: Duration) -> Drainer {
        Drainer {
            draining: AtomicBool::new(false),
            last_arrival_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            quiet,
            terminating: watch::Sender::new(false),
            waiters: AtomicUsize::new(0),
        }
    }

    pub fn quiet_period(&self) -> Duration {
        self.quiet
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// An ordinary request arrived: while draining it restarts the quiet period.
    #[inline]
    pub fn arrival(&self) {
        if self.draining() {
            self.touch();
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_arrival_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Starts draining, or joins the drain already running.
    pub fn begin(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            self.touch();
        }
    }

    /// SIGTERM: drain for good.
    pub fn terminate(&self) {
        self.begin();
        self.terminating.send_replace(true);
    }

    /// Resolves once no ordinary request has arrived for the quiet period.
    pub async fn quiet(&self) {
        loop {
            let last = Duration::from_millis(self.last_arrival_ms.load(Ordering::Relaxed));
            let deadline = self.epoch + last + self.quiet;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// `/wait-for-drain`: returns at the end of the drain, or after 1 s if no SIGTERM came
    /// (then the drain is reset, so a restarted user container cannot leave the pod unready).
    pub async fn wait_for_drain(&self) {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiter = Waiter(&self.waiters);
        self.begin();
        let mut term = self.terminating.subscribe();
        if timeout(RESET_WITHOUT_TERM, term.wait_for(|t| *t))
            .await
            .is_err()
        {
            if !*self.terminating.borrow() {
                self.draining.store(false, Ordering::Release);
            }
            return;
        }
        self.quiet().await;
    }

    /// `/wait-for-drain` calls still waiting; the process must not exit before they answer.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    /// Sleeps in steps until `check` holds or `limit` passes; true if it held.
    pub async fn poll_until(check: impl Fn() -> bool, step: Duration, limit: Duration) -> bool {
        // `None`: no limit (`Duration::MAX` is past any `Instant`; adding it would panic).
        let deadline = Instant::now().checked_add(limit);
        while !check() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            sleep(step).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn arrivals_restart_the_quiet_period() {
        let d = Arc::new(Drainer::new(Duration::from_secs(30)));
        let start = Instant::now();
        d.terminate();
        let d2 = Arc::clone(&d);
        tokio::spawn(async move {
            sleep(Duration::from_secs(10)).await;
            d2.arrival();
        });
        d.quiet().await;
        assert_eq!(start.elapsed().as_secs(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn poll_until_without_a_limit_waits_for_the_check() {
        let start = Instant::now();
        let held = Drainer::poll_until(
            || start.elapsed() >= Duration::from_secs(1),
            Duration::from_millis(20),
            Duration::MAX,
        )
        .await;
        assert!(held);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_drain_counts_its_waiters_until_it_returns() {
        let d = Arc::new(Drainer::new(Duration::from_secs(30)));
        let d2 = Arc::clone(&d);
        let waiter = tokio::spawn(async move { d2.wait_for_drain().await });
        sleep(Duration::from_millis(10)).await;
        assert_eq!(d.waiters(), 1);
        waiter.await.expect("the waiter task");
        assert_eq!(d.waiters(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_drain_without_term_resets_after_one_second() {
        let d = Drainer::new(Duration::from_secs(30));
        let start = Instant::now();
        d.wait_for_drain().await;
        assert_eq!(start.elapsed().as_millis(), 1000);
        assert!(!d.draining());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_drain_after_term_returns_at_end_of_quiet_period() {
        let d = Drainer::new(Duration::from_secs(30));
        d.terminate();
        let start = Instant::now();
        d.wait_for_drain().await;
        assert_eq!(start.elapsed().as_secs(), 30);
        assert!(d.draining());
    }
}
