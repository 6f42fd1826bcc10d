//! A revision's throttler (`S/pkg/activator/net/throttler.go`): capacity is
//! containerConcurrency on each pod it knows (unlimited for 0, but at least one pod); a
//! request that finds no room waits, first come first served, until a pod has some (a
//! request ends, or a pod appears), its timeout passes, or the queue is full.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::policy::{pick, Pod};

/// Requests held per revision before the next gets a 503 (Knative's `breakerQueueDepth`).
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;

pub struct Throttler {
    state: Mutex<State>,
    queue_depth: usize,
}

struct State {
    cc: u32,
    /// Sorted by address: the first-available policy packs onto the lowest.
    pods: Vec<Pod<SocketAddr>>,
    /// The round robin's position.
    next: usize,
    waiting: VecDeque<oneshot::Sender<Lease>>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `queue_depth` requests are already waiting: Knative's 503 `pending request queue full`.
    QueueFull,
    /// No pod had room within the timeout: Knative's 504 `activator request timeout`.
    Timeout,
}

/// A slot on a pod, held until dropped (when the response has been relayed, or abandoned).
pub struct Lease {
    throttler: Arc<Throttler>,
    pod: SocketAddr,
    /// False for a lease that never reached its request (its slot was taken back at once).
    armed: bool,
    /// The request waited for it (no pod had room when it came).
    waited: bool,
}

/// What a throttler holds now, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests on a pod.
    pub in_flight: u32,
    /// Requests waiting for room.
    pub waiting: usize,
    /// Pods it may use.
    pub pods: usize,
}

// === The flow ===

impl Throttler {
    pub fn new(cc: u32, queue_depth: usize) -> Arc<Throttler> {
        Arc::new(Throttler {
            state: Mutex::new(State {
                cc,
                pods: Vec::new(),
                next: 0,
                waiting: VecDeque::new(),
            }),
            queue_depth,
        })
    }

    /// The revision's containerConcurrency and the pods to use now. Pods that stay keep
    /// their count of requests in flight; a removed pod's requests finish where they are;
    /// waiting requests go to any new room at once.
    pub fn update(self: &Arc<Self>, cc: u32, addrs: &[SocketAddr]) {
        let mut st = self.state.lock();
        let mut addrs = addrs.to_vec();
        addrs.sort_unstable();
        addrs.dedup();
        let pods = addrs
            .into_iter()
            .map(|addr| {
                let in_flight = st
                    .pods
                    .iter()
                    .find(|p| p.addr == addr)
                    .map_or(0, |p| p.in_flight);
                Pod { addr, in_flight }
            })
            .collect();
        st.pods = pods;
        st.cc = cc;
        self.dispatch(&mut st);
    }

    /// A slot on a pod, at once when one has room and nobody waits, else after those
    /// before it; refused when `queue_depth` already wait or nothing frees up in `timeout`.
    pub async fn acquire(self: &Arc<Self>, timeout: Duration) -> Result<Lease, Refused> {
        let granted = {
            let mut st = self.state.lock();
            if st.waiting.is_empty() {
                if let Some(lease) = self.take(&mut st) {
                    return Ok(lease);
                }
            }
            if st.waiting.len() >= self.queue_depth {
                // Waiters that gave up still hold places until someone looks.
                st.waiting.retain(|w| !w.is_closed());
                if st.waiting.len() >= self.queue_depth {
                    return Err(Refused::QueueFull);
                }
            }
            let (tx, rx) = oneshot::channel();
            st.waiting.push_back(tx);
            rx
        };
        match tokio::time::timeout(timeout, granted).await {
            Ok(Ok(lease)) => Ok(lease),
            // The sender went without a lease: only when the throttler itself is dropped.
            Ok(Err(_)) | Err(_) => Err(Refused::Timeout),
        }
    }

    pub fn load(&self) -> Load {
        let st = self.state.lock();
        Load {
            in_flight: st.pods.iter().map(|p| p.in_flight).sum(),
            waiting: st.waiting.iter().filter(|w| !w.is_closed()).count(),
            pods: st.pods.len(),
        }
    }

    /// Gives the room there is to the requests waiting, oldest first.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        while let Some(waiter) = st.waiting.pop_front() {
            if waiter.is_closed() {
                continue;
            }
            let Some(mut lease) = self.take(st) else {
                st.waiting.push_front(waiter);
                return;
            };
            lease.waited = true;
            if let Err(mut lease) = waiter.send(lease) {
                // It gave up just now: the slot goes back, under the lock already held.
                lease.armed = false;
                release(st, lease.pod);
            }
        }
    }

    /// A slot on the pod the policy picks, if one has room.
    fn take(self: &Arc<Self>, st: &mut State) -> Option<Lease> {
        let State { cc, pods, next, .. } = st;
        let i = pick(pods, *cc, next)?;
        pods[i].in_flight += 1;
        Some(Lease {
            throttler: Arc::clone(self),
            pod: pods[i].addr,
            armed: true,
            waited: false,
        })
    }
}

impl Lease {
    /// The pod to send the request to.
    pub fn pod(&self) -> SocketAddr {
        self.pod
    }

    /// Whether the request waited for its slot (a cold start, or a revision at capacity).
    pub fn waited(&self) -> bool {
        self.waited
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            let throttler = Arc::clone(&self.throttler);
            let mut st = throttler.state.lock();
            release(&mut st, self.pod);
            throttler.dispatch(&mut st);
        }
    }
}

// === Helpers ===

/// A request on `pod` ended; a pod no longer listed has nothing to give back.
fn release(st: &mut State, pod: SocketAddr) {
    if let Some(p) = st.pods.iter_mut().find(|p| p.addr == pod) {
        p.in_flight = p.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests;
