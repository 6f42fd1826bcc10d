//! The Kubernetes source: one kube-rs watcher per kind, folding events into one snapshot;
//! a thread of its own derives and installs the table whenever the snapshot moved, once
//! every kind has been listed (until then, nothing is served and `/ready` says 503).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use knoxy_control::derive::Snapshot;
use knoxy_control::k8s::{EndpointSlice, Secret, Service};
use knoxy_control::kingress::KIngress;
use knoxy_control::revision::Revision;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use parking_lot::{Condvar, Mutex};

use crate::explain;
use crate::kinds::Kind;
use crate::object::Watched;
use crate::store::{self, Change, Kept};

/// How often an unchanged watch error is logged again.
const REPEAT_ERROR: Duration = Duration::from_secs(60);
/// The kinds watched, in the order their problems are listed.
const KINDS: usize = 5;

// === Types ===

/// What a running source tells the gateway.
#[derive(Clone)]
pub struct Running {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// A table derived from a complete listing of every kind is installed.
    synced: AtomicBool,
}

#[derive(Default)]
struct State {
    snapshot: Snapshot,
    /// Whether each kind has been listed since the start.
    listed: [bool; KINDS],
    /// Each kind's last watch error, while it lasts.
    errors: [Option<String>; KINDS],
    /// Each kind's objects that do not decode, `Kind ns/name: problem`.
    undecodable: [Vec<String>; KINDS],
    /// The snapshot moved since it was last handed out.
    dirty: bool,
}

// === The flow ===

/// Connects to the cluster (an error says what configuration was tried), starts watching,
/// and calls `install` with each new snapshot.
pub fn start<F>(install: F) -> Result<Running, String>
where
    F: FnMut(&Snapshot) + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the Kubernetes source's runtime: {e}"))?;
    let client = runtime.block_on(crate::connect::client())?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        synced: AtomicBool::new(false),
    });
    let watching = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("knoxy-kube".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let kinds = [
                    tokio::spawn(watch::<KIngress>(client.clone(), Arc::clone(&watching), 0)),
                    tokio::spawn(watch::<Service>(client.clone(), Arc::clone(&watching), 1)),
                    tokio::spawn(watch::<EndpointSlice>(
                        client.clone(),
                        Arc::clone(&watching),
                        2,
                    )),
                    tokio::spawn(watch::<Secret>(client.clone(), Arc::clone(&watching), 3)),
                    tokio::spawn(watch::<Revision>(client, Arc::clone(&watching), 4)),
                ];
                for kind in kinds {
                    let _ = kind.await;
                }
            })
        })
        .map_err(|e| format!("the Kubernetes source's thread: {e}"))?;
    let installing = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("knoxy-kube-tables".to_owned())
        .spawn(move || install_each(&installing, install))
        .map_err(|e| format!("the Kubernetes source's thread: {e}"))?;
    Ok(Running { shared })
}

impl Running {
    /// Whether a table from a complete listing is installed (`/ready` waits for it).
    pub fn synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Watch errors and objects that do not decode, now.
    pub fn problems(&self) -> Vec<String> {
        problems(&self.shared.state.lock())
    }
}

/// Follows one kind for the life of the process; kube-rs's watcher resumes a dropped watch
/// from the last resourceVersion seen, and relists after `410 Gone`, with backoff.
async fn watch<T: Kind>(client: Client, shared: Arc<Shared>, slot: usize) {
    let api: Api<Watched<T>> = Api::all_with(client, &T::api_resource());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut kept = Kept::<T>::default();
    let (group, _, kind, plural) = T::RESOURCE;
    let mut logged: Option<(String, Instant)> = None;
    while let Some(event) = events.next().await {
        let mut state = shared.state.lock();
        match event {
            Ok(event) => {
                // A (re)list starts with Init before it asks anything: not yet a success.
                let answered = !matches!(event, watcher::Event::Init);
                if answered && state.errors[slot].take().is_some() {
                    eprintln!("knoxy: watching {plural} again");
                    logged = None;
                }
                let change = store::apply(&mut state.snapshot, &mut kept, event);
                if change == Change::Listed {
                    state.listed[slot] = true;
                }
                let undecodable: Vec<String> = kept
                    .problems
                    .iter()
                    .map(|(key, e)| {
                        format!("{kind} {key}: {e} (its last good version, if any, is kept)")
                    })
                    .collect();
                if undecodable != state.undecodable[slot] {
                    for p in undecodable
                        .iter()
                        .filter(|p| !state.undecodable[slot].contains(p))
                    {
                        eprintln!("knoxy: {p}");
                    }
                    state.undecodable[slot] = undecodable;
                }
                if change != Change::None {
                    state.dirty = true;
                    shared.wake.notify_one();
                }
            }
            Err(e) => {
                let text = explain::watch_error(&e, (group, plural));
                let repeat = logged
                    .as_ref()
                    .is_none_or(|(last, at)| *last != text || at.elapsed() >= REPEAT_ERROR);
                if repeat {
                    eprintln!("knoxy: {text} (retrying)");
                    logged = Some((text.clone(), Instant::now()));
                }
                state.errors[slot] = Some(text);
            }
        }
    }
}

/// Hands each moved snapshot to `install`, once every kind is listed; events that arrive
/// while a table is being derived are taken together by the next one.
fn install_each<F>(shared: &Shared, mut install: F)
where
    F: FnMut(&Snapshot),
{
    loop {
        let snapshot = {
            let mut state = shared.state.lock();
            while !(state.dirty && state.listed.iter().all(|l| *l)) {
                shared.wake.wait(&mut state);
            }
            state.dirty = false;
            state.snapshot.clone()
        };
        install(&snapshot);
        shared.synced.store(true, Ordering::Release);
    }
}

// === Helpers ===

fn problems(state: &State) -> Vec<String> {
    let errors = state.errors.iter().flatten().cloned();
    errors
        .chain(state.undecodable.iter().flatten().cloned())
        .collect()
}
