//! A revision's throttler (`S/pkg/activator/net/throttler.go`): capacity is
//! containerConcurrency on each pod it knows (unlimited for 0, but at least one pod); a
//! request that finds no room waits, first come first served, until a pod has some (a
//! request ends, or a pod appears), its timeout passes, or the queue is full.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knoxy_concurrency::{Stat, Window, WireStatMessage};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::budget::Budget;
use crate::policy::{pick, Pod};
use crate::share::{self, Share};
use crate::stats::StatSink;

/// Requests held per revision before the next gets a 503 (Knative's `breakerQueueDepth`).
pub const DEFAULT_QUEUE_DEPTH: usize = 10_000;

pub struct Throttler {
    state: Mutex<State>,
    queue_depth: usize,
    /// Where demand is reported, and as which revision.
    reporting: Option<Reporting>,
    /// Set when pods are waiting to be probed (see [`crate::probe`]).
    pub(crate) probe_wanted: Arc<tokio::sync::Notify>,
}

/// The revision a throttler reports demand for, and where to.
pub struct Reporting {
    pub namespace: String,
    pub name: String,
    pub sink: StatSink,
}

struct State {
    cc: u32,
    /// Sorted by address: the first-available policy packs onto the lowest.
    pods: Vec<Pod<SocketAddr>>,
    /// The round robin's position.
    next: usize,
    waiting: VecDeque<oneshot::Sender<Lease>>,
    /// Requests from arrival (waiting included, as Knative counts them) to their end.
    window: Window,
    /// Demand is being reported (Knative keeps a revision's stats until a quiet window).
    tracked: bool,
    /// The first request was reported at once: the next report takes it out again.
    first_reported: bool,
    /// Pods are used only once a probe passed (else Kubernetes' ready is trusted).
    probing: bool,
    /// This replica's share of the pods, when several gateways play the activator.
    share: Option<Share>,
    /// What all held requests of the gateway may keep.
    budget: Option<Arc<Budget>>,
    /// The revision's pods as its endpoints list them, sorted.
    ready: Vec<SocketAddr>,
    not_ready: Vec<SocketAddr>,
    /// Pods whose probe passed, still listed.
    healthy: Vec<SocketAddr>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `queue_depth` requests are already waiting: Knative's 503 `pending request queue full`.
    QueueFull,
    /// No pod had room within the timeout: Knative's 504 `activator request timeout`.
    Timeout,
    /// Waiting would take the held requests past the gateway's held-bytes budget: a 503.
    HeldBytes,
}

/// A slot on a pod, held until dropped (when the response has been relayed, or abandoned).
pub struct Lease {
    throttler: Arc<Throttler>,
    pod: SocketAddr,
    /// False for a lease that never reached its request (its slot was taken back at once).
    armed: bool,
    /// The request waited for it (no pod had room when it came).
    waited: bool,
    /// The request counts in the throttler's window until this is dropped.
    counted: bool,
}

/// A request counted in the window while it waits; leaves it if it never gets a lease.
struct Counted(Option<Arc<Throttler>>);

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
        Throttler::reporting(cc, queue_depth, None)
    }

    /// A throttler that reports its revision's demand to the autoscaler (contract §4.9).
    pub fn reporting(cc: u32, queue_depth: usize, reporting: Option<Reporting>) -> Arc<Throttler> {
        Arc::new(Throttler {
            state: Mutex::new(State {
                cc,
                pods: Vec::new(),
                next: 0,
                waiting: VecDeque::new(),
                window: Window::new(now()),
                tracked: false,
                first_reported: false,
                probing: false,
                share: None,
                budget: None,
                ready: Vec::new(),
                not_ready: Vec::new(),
                healthy: Vec::new(),
            }),
            queue_depth,
            reporting,
            probe_wanted: Arc::default(),
        })
    }

    /// Pods are used only after their probe passes; [`crate::probe::keep_probing`] probes them.
    pub fn probing(self: Arc<Self>) -> Arc<Self> {
        self.state.lock().probing = true;
        self
    }

    /// With a limited containerConcurrency, only this replica's share of the healthy pods is
    /// used (with an unlimited one, every pod: all replicas use all pods, as Knative's do).
    pub fn shared(self: Arc<Self>, share: Option<Share>) -> Arc<Self> {
        self.state.lock().share = share;
        self
    }

    /// Requests that wait take their bytes from `budget` (shared by all revisions).
    pub fn budgeted(self: Arc<Self>, budget: Option<Arc<Budget>>) -> Arc<Self> {
        self.state.lock().budget = budget;
        self
    }

    /// The revision's containerConcurrency and its pods as its endpoints list them now.
    /// Without probing the ready ones are used; with it, those whose probe passed (a pod
    /// that turns not-ready is probed again, a new one at once). Pods that stay keep their
    /// count of requests in flight; a removed pod's requests finish where they are.
    pub fn set_pods(self: &Arc<Self>, cc: u32, ready: &[SocketAddr], not_ready: &[SocketAddr]) {
        let mut st = self.state.lock();
        let sorted = |pods: &[SocketAddr]| {
            let mut pods = pods.to_vec();
            pods.sort_unstable();
            pods.dedup();
            pods
        };
        let (ready, not_ready) = (sorted(ready), sorted(not_ready));
        let was_ready = std::mem::replace(&mut st.ready, ready);
        st.not_ready = not_ready;
        let State {
            healthy,
            ready,
            not_ready,
            ..
        } = &mut *st;
        healthy.retain(|p| {
            ready.binary_search(p).is_ok()
                || (not_ready.binary_search(p).is_ok() && was_ready.binary_search(p).is_err())
        });
        st.cc = cc;
        let usable = if st.probing {
            st.healthy.clone()
        } else {
            st.ready.clone()
        };
        self.use_pods(&mut st, usable);
        if st.probing && !unprobed(&st).is_empty() {
            self.probe_wanted.notify_one();
        }
    }

    /// Listed pods not known healthy yet, and whether requests wait for one.
    pub fn unprobed(&self) -> (Vec<SocketAddr>, bool) {
        let st = self.state.lock();
        (unprobed(&st), !st.waiting.is_empty())
    }

    /// `pod`'s probe passed: it is used from now on, if it is still listed.
    pub fn passed(self: &Arc<Self>, pod: SocketAddr) {
        let mut st = self.state.lock();
        let listed =
            st.ready.binary_search(&pod).is_ok() || st.not_ready.binary_search(&pod).is_ok();
        if !listed || st.healthy.contains(&pod) {
            return;
        }
        st.healthy.push(pod);
        st.healthy.sort_unstable();
        let usable = st.healthy.clone();
        self.use_pods(&mut st, usable);
    }

    /// `pod` refused a connection (or could not be reached): it gets no more requests until
    /// its probe passes again, or, without probing, until the endpoints list it anew.
    pub fn unreachable(self: &Arc<Self>, pod: SocketAddr) {
        let mut st = self.state.lock();
        st.healthy.retain(|p| *p != pod);
        let usable: Vec<SocketAddr> = st
            .pods
            .iter()
            .map(|p| p.addr)
            .filter(|p| *p != pod)
            .collect();
        self.use_pods(&mut st, usable);
        if st.probing {
            self.probe_wanted.notify_one();
        }
    }

    /// Makes `addrs` (sorted) the pods used; waiting requests go to any new room at once.
    fn use_pods(self: &Arc<Self>, st: &mut State, addrs: Vec<SocketAddr>) {
        let addrs = match st.cc {
            0 => addrs,
            _ => share::assigned(addrs, st.share),
        };
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
        self.dispatch(st);
    }

    /// A slot on a pod, at once when one has room and nobody waits, else after those
    /// before it; refused when `queue_depth` already wait or nothing frees up in `timeout`.
    pub async fn acquire(self: &Arc<Self>, timeout: Duration) -> Result<Lease, Refused> {
        self.acquire_holding(timeout, || 0).await
    }

    /// [`Throttler::acquire`] for a request that keeps `held_bytes()` while it waits (asked
    /// only then): refused at once when they do not fit the gateway's held-bytes budget.
    pub async fn acquire_holding(
        self: &Arc<Self>,
        timeout: Duration,
        held_bytes: impl FnOnce() -> usize,
    ) -> Result<Lease, Refused> {
        let (granted, _reserved) = {
            let mut st = self.state.lock();
            self.arrive(&mut st);
            if st.waiting.is_empty() {
                if let Some(mut lease) = self.take(&mut st) {
                    lease.counted = true;
                    return Ok(lease);
                }
            }
            if st.waiting.len() >= self.queue_depth {
                // Waiters that gave up still hold places until someone looks.
                st.waiting.retain(|w| !w.is_closed());
                if st.waiting.len() >= self.queue_depth {
                    st.window.leave(now(), false);
                    return Err(Refused::QueueFull);
                }
            }
            let reserved = match &st.budget {
                Some(budget) => match budget.reserve(held_bytes()) {
                    Some(reserved) => Some(reserved),
                    None => {
                        st.window.leave(now(), false);
                        return Err(Refused::HeldBytes);
                    }
                },
                None => None,
            };
            let (tx, rx) = oneshot::channel();
            st.waiting.push_back(tx);
            (rx, reserved)
        };
        // Created with the lock released: it takes the lock when dropped.
        let mut counted = Counted(Some(Arc::clone(self)));
        match tokio::time::timeout(timeout, granted).await {
            Ok(Ok(mut lease)) => {
                counted.0 = None;
                lease.counted = true;
                Ok(lease)
            }
            // The sender went without a lease: only when the throttler itself is dropped.
            Ok(Err(_)) | Err(_) => Err(Refused::Timeout),
        }
    }

    /// Closes the demand window at `now` into the autoscaler's message for this revision, if
    /// its demand is being reported; a window with no demand at all ends the reporting, and
    /// the revision's next request is reported at once again (Knative's concurrency reporter).
    pub fn report(&self, now: Instant) -> Option<WireStatMessage> {
        let reporting = self.reporting.as_ref()?;
        let mut st = self.state.lock();
        let closed = st.window.close(now);
        if !st.tracked {
            return None;
        }
        let first = if std::mem::take(&mut st.first_reported) {
            1.0
        } else {
            0.0
        };
        if closed.concurrency == 0.0 && st.window.in_flight() == 0 {
            st.tracked = false;
        }
        Some(reporting.message(Stat {
            average_concurrent_requests: (closed.concurrency - first).max(0.0),
            request_count: f64::from(closed.requests) - first,
            ..Stat::default()
        }))
    }

    pub fn load(&self) -> Load {
        let st = self.state.lock();
        Load {
            in_flight: st.pods.iter().map(|p| p.in_flight).sum(),
            waiting: st.waiting.iter().filter(|w| !w.is_closed()).count(),
            pods: st.pods.len(),
        }
    }

    /// A request came: it counts from now; the first of a revision not being reported is
    /// reported at once, so the autoscaler can scale from zero without waiting a tick.
    fn arrive(&self, st: &mut State) {
        st.window.enter(now(), false);
        if !st.tracked {
            st.tracked = true;
            if let Some(reporting) = &self.reporting {
                st.first_reported = true;
                reporting.sink.send(vec![reporting.message(Stat {
                    average_concurrent_requests: 1.0,
                    request_count: 1.0,
                    ..Stat::default()
                })]);
            }
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
            counted: false,
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
        if !self.armed && !self.counted {
            return;
        }
        let mut st = self.throttler.state.lock();
        if self.counted {
            st.window.leave(now(), false);
        }
        if self.armed {
            release(&mut st, self.pod);
            self.throttler.dispatch(&mut st);
        }
    }
}

impl Drop for Throttler {
    fn drop(&mut self) {
        // Its prober, if waiting, wakes to find it gone.
        self.probe_wanted.notify_one();
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(throttler) = self.0.take() {
            throttler.state.lock().window.leave(now(), false);
        }
    }
}

impl Reporting {
    fn message(&self, mut stat: Stat) -> WireStatMessage {
        stat.pod_name = self.sink.pod_name().to_owned();
        WireStatMessage {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            stat: Some(stat),
        }
    }
}

// === Helpers ===

fn unprobed(st: &State) -> Vec<SocketAddr> {
    st.ready
        .iter()
        .chain(&st.not_ready)
        .filter(|p| !st.healthy.contains(p))
        .copied()
        .collect()
}

/// The clock of the demand window: tokio's, so that tests in paused time control it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A request on `pod` ended; a pod no longer listed has nothing to give back.
fn release(st: &mut State, pod: SocketAddr) {
    if let Some(p) = st.pods.iter_mut().find(|p| p.addr == pod) {
        p.in_flight = p.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests;
