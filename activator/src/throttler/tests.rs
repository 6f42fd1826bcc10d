//! The throttler in paused time, and on real worker threads for the concurrency bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 8012))
}

const LONG: Duration = Duration::from_secs(60);

/// (in flight, waiting)
fn load(t: &Throttler) -> (u32, usize) {
    let l = t.load();
    (l.in_flight, l.waiting)
}

#[tokio::test(start_paused = true)]
async fn cc_one_gives_each_pod_one_request_and_the_next_waits_for_a_slot() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH);
    t.set_pods(1, &[addr(2), addr(1)], &[]);
    let a = t.acquire(LONG).await.expect("room");
    let b = t.acquire(LONG).await.expect("room");
    assert_eq!(
        (a.pod(), b.pod()),
        (addr(1), addr(2)),
        "lowest address first"
    );
    let waiting = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(LONG).await.map(|l| (l.pod(), l.waited())) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(load(&t), (2, 1));
    assert!(!a.waited());
    drop(b);
    assert_eq!(waiting.await.expect("task"), Ok((addr(2), true)));
    drop(a);
    assert_eq!(load(&t), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_served_first_come_first_served() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH);
    t.set_pods(1, &[addr(1)], &[]);
    let first = t.acquire(LONG).await.expect("room");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..5 {
        let (t, tx) = (Arc::clone(&t), tx.clone());
        tokio::spawn(async move {
            let lease = t.acquire(LONG).await.expect("served");
            tx.send(n).expect("send");
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(lease);
        });
        // Each queues before the next starts.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(first);
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(rx.recv().await.expect("a request served"));
    }
    assert_eq!(order, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn past_the_queue_depth_a_request_is_refused_and_a_place_frees_when_a_waiter_leaves() {
    let t = Throttler::new(1, 2);
    t.set_pods(1, &[addr(1)], &[]);
    let _busy = t.acquire(LONG).await.expect("room");
    let w1 = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(LONG).await.map(|l| l.pod()) }
    });
    let w2 = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(Duration::from_millis(50)).await.map(|l| l.pod()) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        t.acquire(LONG).await.map(|l| l.pod()),
        Err(Refused::QueueFull)
    );
    assert_eq!(w2.await.expect("task"), Err(Refused::Timeout));
    // The second waiter gave up: its place is free again.
    let w3 = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(Duration::from_millis(10)).await.map(|l| l.pod()) }
    });
    assert_eq!(
        w3.await.expect("task"),
        Err(Refused::Timeout),
        "queued, not refused"
    );
    w1.abort();
}

#[tokio::test(start_paused = true)]
async fn with_no_pod_requests_are_held_until_one_appears_or_their_timeout() {
    let t = Throttler::new(0, DEFAULT_QUEUE_DEPTH);
    let started = tokio::time::Instant::now();
    assert_eq!(
        t.acquire(Duration::from_secs(2)).await.map(|l| l.pod()),
        Err(Refused::Timeout)
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let held: Vec<_> = (0..20)
        .map(|_| {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.acquire(LONG).await.map(|l| l.pod()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(load(&t), (0, 20));
    t.set_pods(0, &[addr(7)], &[]);
    for h in held {
        assert_eq!(
            h.await.expect("task"),
            Ok(addr(7)),
            "unlimited: all at once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_pod_list_keeps_the_counts_of_the_pods_that_stay() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH);
    t.set_pods(1, &[addr(1)], &[]);
    let on_1 = t.acquire(LONG).await.expect("room");
    t.set_pods(1, &[addr(1), addr(2)], &[]);
    let next = t.acquire(LONG).await.expect("room");
    assert_eq!(next.pod(), addr(2), "pod 1 is still busy");
    // Pod 1 leaves with its request running; the release finds nothing to give back.
    t.set_pods(1, &[addr(2), addr(3)], &[]);
    drop(on_1);
    assert_eq!(load(&t), (1, 0));
    // A bigger containerConcurrency gives room on the same pods.
    t.set_pods(2, &[addr(2), addr(3)], &[]);
    let second = t.acquire(LONG).await.expect("room");
    assert_eq!(
        second.pod(),
        addr(2),
        "the busy pod's second slot, first in order"
    );
    drop((next, second));
    assert_eq!(load(&t), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_than_cc_on_a_pod_from_requests_on_every_thread() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH);
    t.set_pods(1, &[addr(1), addr(2)], &[]);
    let on_pod: Arc<HashMap<SocketAddr, AtomicU32>> =
        Arc::new([(addr(1), AtomicU32::new(0)), (addr(2), AtomicU32::new(0))].into());
    let worst = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..400)
        .map(|_| {
            let (t, on_pod, worst) = (Arc::clone(&t), Arc::clone(&on_pod), Arc::clone(&worst));
            tokio::spawn(async move {
                let lease = t.acquire(LONG).await.expect("served");
                let now = on_pod[&lease.pod()].fetch_add(1, Ordering::SeqCst) + 1;
                worst.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                on_pod[&lease.pod()].fetch_sub(1, Ordering::SeqCst);
                drop(lease);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(worst.load(Ordering::SeqCst), 1);
    assert_eq!(load(&t), (0, 0));
}

// === Demand reporting ===

fn reporting() -> (Arc<Throttler>, crate::stats::Outbox) {
    let (sink, outbox) = StatSink::new("gateway-pod-1");
    let reporting = Reporting {
        namespace: "ns".into(),
        name: "rev-1".into(),
        sink,
    };
    (
        Throttler::reporting(1, DEFAULT_QUEUE_DEPTH, Some(reporting)),
        outbox,
    )
}

fn tick(t: &Throttler) -> Option<(f64, f64)> {
    let m = t.report(now())?;
    assert_eq!((m.namespace.as_str(), m.name.as_str()), ("ns", "rev-1"));
    let stat = m.stat.expect("a stat");
    assert_eq!(stat.pod_name, "gateway-pod-1");
    Some((stat.average_concurrent_requests, stat.request_count))
}

#[tokio::test(start_paused = true)]
async fn the_first_request_is_reported_at_once_and_the_windows_after_it_average_the_demand() {
    use knoxy_concurrency::WireStatMessages;
    use prost::Message as _;

    let (t, mut outbox) = reporting();
    assert_eq!(tick(&t), None, "nothing to report before any request");
    // No pod: the request waits, and the autoscaler hears of it at once.
    let held = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(LONG).await.map(|l| l.pod()) }
    });
    tokio::task::yield_now().await;
    let frame = outbox.try_recv().expect("a frame at once");
    let msgs = WireStatMessages::decode(frame).expect("protobuf");
    let stat = msgs.messages[0].stat.clone().expect("a stat");
    assert_eq!(
        (
            msgs.messages[0].name.as_str(),
            stat.average_concurrent_requests,
            stat.request_count
        ),
        ("rev-1", 1.0, 1.0)
    );
    // A window in which it waited throughout: the 1 already reported is taken out once.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(tick(&t), Some((0.0, 0.0)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(tick(&t), Some((1.0, 0.0)), "still waiting: concurrency 1");
    // A pod comes half-way through the next window and the request ends with it.
    tokio::time::advance(Duration::from_millis(500)).await;
    t.set_pods(1, &[addr(1)], &[]);
    assert_eq!(held.await.expect("task"), Ok(addr(1)));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(tick(&t), Some((0.5, 0.0)));
    // A window without demand is reported, then the revision is no longer tracked...
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(tick(&t), Some((0.0, 0.0)));
    assert_eq!(tick(&t), None);
    // ...so its next request is reported at once again.
    drop(t.acquire(LONG).await.expect("room"));
    assert!(outbox.try_recv().is_some(), "reported at once");
}

#[tokio::test(start_paused = true)]
async fn a_refused_or_abandoned_request_stops_counting() {
    let (t, _outbox) = reporting();
    let gave_up = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(LONG).await.map(|l| l.pod()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(load(&t), (0, 1), "waiting");
    tokio::time::advance(Duration::from_millis(500)).await;
    gave_up.abort();
    let _ = gave_up.await;
    tokio::time::advance(Duration::from_millis(500)).await;
    // Waited half the window (the first 1 taken out), and nothing after.
    assert_eq!(tick(&t), Some((0.0, 0.0)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(tick(&t), Some((0.0, 0.0)));
    assert_eq!(tick(&t), None, "no longer tracked: it left");
}

// === Probing ===

#[tokio::test(start_paused = true)]
async fn with_probing_a_pod_is_used_once_its_probe_passes_ready_or_not() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH).probing();
    t.set_pods(1, &[addr(1)], &[addr(2)]);
    assert_eq!(t.unprobed(), (vec![addr(1), addr(2)], false));
    let held = tokio::spawn({
        let t = Arc::clone(&t);
        async move { t.acquire(LONG).await.map(|l| l.pod()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        t.unprobed(),
        (vec![addr(1), addr(2)], true),
        "a request waits"
    );
    // Kubernetes does not call pod 2 ready yet, but it answers its probe: it is used.
    t.passed(addr(2));
    assert_eq!(held.await.expect("task"), Ok(addr(2)));
    assert_eq!(t.unprobed().0, [addr(1)]);
    t.passed(addr(9));
    assert_eq!(t.load().pods, 1, "a pod that is not listed is not used");
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_turns_not_ready_or_leaves_is_probed_again() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH).probing();
    t.set_pods(1, &[addr(1), addr(2)], &[]);
    t.passed(addr(1));
    t.passed(addr(2));
    assert_eq!(t.load().pods, 2);
    t.set_pods(1, &[addr(2)], &[addr(1)]);
    assert_eq!(
        t.unprobed().0,
        [addr(1)],
        "ready to not-ready: probed again"
    );
    assert_eq!(t.load().pods, 1);
    t.set_pods(1, &[], &[]);
    t.set_pods(1, &[addr(2)], &[]);
    assert_eq!(t.unprobed().0, [addr(2)], "gone and back: probed again");
    // Without probing, Kubernetes' ready is trusted.
    let trusting = Throttler::new(1, DEFAULT_QUEUE_DEPTH);
    trusting.set_pods(1, &[addr(1)], &[addr(2)]);
    assert_eq!(trusting.load().pods, 1);
}

#[tokio::test(start_paused = true)]
async fn replicas_split_a_limited_revisions_pods_and_share_an_unlimited_ones() {
    let pods = [addr(1), addr(2), addr(3)];
    let replica = |index, cc| {
        let t = Throttler::new(cc, DEFAULT_QUEUE_DEPTH).shared(Share::new(index, 2));
        t.set_pods(cc, &pods, &[]);
        t
    };
    let (first, second) = (replica(0, 1), replica(1, 1));
    // 3 pods for 2 replicas: a slice of one each, the remainder (pod 3) to replica 0.
    assert_eq!(first.load().pods, 2);
    assert_eq!(second.load().pods, 1);
    let a = first.acquire(LONG).await.expect("room");
    let b = first.acquire(LONG).await.expect("room");
    let c = second.acquire(LONG).await.expect("room");
    assert_eq!((a.pod(), b.pod(), c.pod()), (addr(1), addr(3), addr(2)));
    // Capacity is containerConcurrency on this replica's pods only: the next one waits.
    let more = second.acquire(Duration::from_millis(50)).await;
    assert_eq!(more.err(), Some(Refused::Timeout));

    let unlimited = (replica(0, 0), replica(1, 0));
    assert_eq!((unlimited.0.load().pods, unlimited.1.load().pods), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_pod_is_left_until_its_probe_passes_again() {
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH).probing();
    t.set_pods(1, &[addr(1), addr(2)], &[]);
    t.passed(addr(1));
    t.passed(addr(2));
    t.unreachable(addr(1));
    assert_eq!(t.load().pods, 1);
    assert_eq!(t.unprobed().0, [addr(1)], "probed again");
    let lease = t.acquire(LONG).await.expect("room");
    assert_eq!(lease.pod(), addr(2));
    t.passed(addr(1));
    assert_eq!(t.acquire(LONG).await.expect("room").pod(), addr(1));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_would_hold_more_than_the_budget_is_refused_at_once() {
    let budget = crate::Budget::new(250);
    let t = Throttler::new(1, DEFAULT_QUEUE_DEPTH).budgeted(Some(Arc::clone(&budget)));
    let wait = |t: &Arc<Throttler>| {
        let t = Arc::clone(t);
        tokio::spawn(async move { t.acquire_holding(LONG, || 100).await.map(|l| l.pod()) })
    };
    let (first, second) = (wait(&t), wait(&t));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(budget.used(), 200);
    assert_eq!(
        t.acquire_holding(LONG, || 100).await.err(),
        Some(Refused::HeldBytes)
    );
    assert_eq!(load(&t), (0, 2), "the refused one neither waits nor counts");
    t.set_pods(1, &[addr(1), addr(2)], &[]);
    assert_eq!(first.await.expect("task"), Ok(addr(1)));
    assert_eq!(second.await.expect("task"), Ok(addr(2)));
    assert_eq!(budget.used(), 0, "given back once they stopped waiting");
    // A request that finds room at once holds nothing back.
    t.set_pods(1, &[addr(1), addr(2), addr(3)], &[]);
    assert!(t.acquire_holding(LONG, || 1000).await.is_ok());
}
