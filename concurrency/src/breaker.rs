//! The breaker: at most `concurrency` requests in flight, up to `capacity` admitted in all
//! (the rest wait in FIFO order), and an immediate overflow beyond (Knative's `queue.Breaker`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

pub struct Breaker {
    /// Execution slots: CC of them; tokio's semaphore serves waiters in FIFO order.
    slots: Semaphore,
    /// In flight plus waiting.
    admitted: AtomicUsize,
    /// 11×CC: `MaxConcurrency` + `QueueDepth`.
    capacity: usize,
}

/// The breaker is full: Knative answers 503 `pending request queue full`.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// An admitted request; holds its slot (once acquired) until dropped.
pub struct Ticket {
    breaker: Arc<Breaker>,
    has_slot: bool,
}

impl Breaker {
    pub fn new(concurrency: usize, capacity: usize) -> Arc<Breaker> {
        Arc::new(Breaker {
            slots: Semaphore::new(concurrency),
            admitted: AtomicUsize::new(0),
            capacity,
        })
    }

    /// Admits the request or overflows at once; the returned ticket must then `acquire` a slot.
    pub fn admit(self: &Arc<Self>) -> Result<Ticket, Overflow> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Overflow);
        }
        Ok(Ticket {
            breaker: Arc::clone(self),
            has_slot: false,
        })
    }

    /// Requests in flight plus waiting (`kn.serving.queue.depth`).
    pub fn depth(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }
}

impl Ticket {
    /// Waits for an execution slot; cancelling the wait (timeout, client gone) leaves the queue.
    pub async fn acquire(&mut self) {
        if self.has_slot {
            return;
        }
        // The semaphore is never closed, so acquire cannot fail.
        if let Ok(permit) = self.breaker.slots.acquire().await {
            permit.forget();
            self.has_slot = true;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.has_slot {
            self.breaker.slots.add_permits(1);
        }
        self.breaker.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn cc_one_admits_eleven_and_overflows_the_twelfth() {
        let b = Breaker::new(1, 11);
        let tickets: Vec<_> = (0..11)
            .map(|_| b.admit().expect("within capacity"))
            .collect();
        assert_eq!(b.admit().err(), Some(Overflow));
        assert_eq!(b.depth(), 11);
        drop(tickets);
        assert_eq!(b.depth(), 0);
        assert!(b.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn second_request_waits_until_the_first_releases_its_slot() {
        let b = Breaker::new(1, 11);
        let mut first = b.admit().expect("admitted");
        first.acquire().await;
        let mut second = b.admit().expect("admitted");
        let waited = tokio::time::timeout(Duration::from_millis(100), second.acquire()).await;
        assert!(
            waited.is_err(),
            "second must wait while the first holds the only slot"
        );
        drop(first);
        tokio::time::timeout(Duration::from_millis(100), second.acquire())
            .await
            .expect("slot freed by the first");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_gives_back_its_place() {
        let b = Breaker::new(1, 2);
        let mut first = b.admit().expect("admitted");
        first.acquire().await;
        let mut waiter = b.admit().expect("admitted");
        let _ = tokio::time::timeout(Duration::from_millis(10), waiter.acquire()).await;
        assert_eq!(b.admit().err(), Some(Overflow));
        drop(waiter);
        assert!(b.admit().is_ok());
    }
}
