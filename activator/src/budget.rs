//! The memory all held requests may keep, gateway-wide. Knative's activator runs out of
//! memory when clients keep sending to a revision at its max scale (knative/serving#13583):
//! here a request that would wait past this budget gets a 503 at once instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default of `--activator-held-bytes`.
pub const DEFAULT_HELD_BYTES: usize = 256 << 20;

/// What a held request keeps besides its headers: its connection (hyper's two buffers of
/// 8 KiB for HTTP/1.1, the body bytes that came with the head), its task and its place in
/// the queue: about 39 KiB measured (`held_requests_keep_the_gateway_under_its_held_bytes_
/// budget` in `tests/`), rounded up so the budget bounds the memory.
pub const HELD_OVERHEAD: usize = 48 << 10;

pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// Bytes taken from a budget, given back when dropped.
pub struct Reserved {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// `bytes` more, if they fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reserved> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .ok()?;
        Some(Reserved {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_under_the_limit_and_are_given_back_when_dropped() {
        let budget = Budget::new(100);
        let a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none(), "101 > 100");
        let b = budget.reserve(40).expect("exactly full");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.reserve(usize::MAX).is_none(), "no overflow");
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
