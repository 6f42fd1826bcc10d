//! The Kubernetes source: one kube-rs watcher per kind, folding events into one snapshot;
//! a thread of its own derives and installs the table whenever the snapshot moved, once
//! every kind has been listed (until then, nothing is served and `/ready` says 503).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use knoxy_control::derive::{IngressStatus, Moved, Snapshot};
use knoxy_control::k8s::{EndpointSlice, Secret, Service};
use knoxy_control::kingress::KIngress;
use knoxy_control::revision::Revision;
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use parking_lot::{Condvar, Mutex};

use crate::explain;
use crate::kinds::Kind;
use crate::lease::{self, Election};
use crate::object::Watched;
use crate::status::{self, Installed, Writing};
use crate::store::{self, Change, Kept, Statuses};

/// How often an unchanged watch error is logged again.
const REPEAT_ERROR: Duration = Duration::from_secs(60);
/// The kinds watched, in the order their problems are listed.
const KINDS: usize = 5;

// === Types ===

/// What the source does besides feeding the table.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Campaign for the status writer's lease; None: never lead.
    pub election: Option<Election>,
    /// What status to write, when leading; None: write none.
    pub writing: Option<Writing>,
}

/// What a running source tells the gateway.
#[derive(Clone)]
pub struct Running {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    wake: Condvar,
    /// A table derived from a complete listing of every kind is installed.
    synced: AtomicBool,
    /// This replica holds the lease: it writes status.
    pub(crate) leading: Arc<AtomicBool>,
    pub(crate) installed_changed: tokio::sync::Notify,
    /// The status of each KIngress of Knoxy's class, as the watch last saw it; apart from
    /// `state`, so that the status writer's look at it never delays a table.
    pub(crate) observed: Mutex<Observed>,
    /// The KIngresses moved: the Secrets they name may have too.
    ingresses_changed: tokio::sync::Notify,
}

/// The statuses the watch saw, and which of them moved since the status writer looked.
#[derive(Default)]
pub(crate) struct Observed {
    pub(crate) statuses: Statuses,
    pub(crate) moved: std::collections::HashSet<String>,
    /// A relist replaced them all.
    pub(crate) all_moved: bool,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) snapshot: Snapshot,
    /// What the installed table serves.
    pub(crate) installed: Arc<Installed>,
    /// Whether each kind has been listed since the start.
    listed: [bool; KINDS],
    /// Each kind's last watch error, while it lasts.
    errors: [Option<String>; KINDS],
    /// Each kind's objects that do not decode, `Kind ns/name: problem`.
    undecodable: [Vec<String>; KINDS],
    /// The snapshot moved since it was last handed out.
    dirty: bool,
    /// Where it moved.
    moved: Moved,
}

// === The flow ===

/// Connects to the cluster (an error says what configuration was tried), starts watching,
/// and calls `install` with each new snapshot; it answers with each KIngress's status.
pub fn start<F>(options: Options, install: F) -> Result<Running, String>
where
    F: FnMut(&Snapshot, &Moved) -> Arc<BTreeMap<String, IngressStatus>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the Kubernetes source's runtime: {e}"))?;
    let (client, url) = runtime.block_on(crate::connect::client())?;
    // Errors to come say what failed; this says where it was asked.
    eprintln!("knoxy: watching the Kubernetes API server at {url}");
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        synced: AtomicBool::new(false),
        leading: Arc::default(),
        installed_changed: tokio::sync::Notify::new(),
        observed: Mutex::default(),
        ingresses_changed: tokio::sync::Notify::new(),
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
                    tokio::spawn(watch_secrets(client.clone(), Arc::clone(&watching), 3)),
                    tokio::spawn(watch::<Revision>(client.clone(), Arc::clone(&watching), 4)),
                ];
                if let Some(election) = options.election {
                    let leading = Arc::clone(&watching.leading);
                    tokio::spawn(lease::campaign(client.clone(), election, leading));
                }
                if let Some(writing) = options.writing {
                    tokio::spawn(status::write_statuses(
                        client,
                        Arc::clone(&watching),
                        writing,
                    ));
                }
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

    /// What the installed table serves (`/served`): its number, which changes whenever the
    /// table does, and `namespace/name` → generation of each KIngress served as it is now.
    pub fn installed(&self) -> Arc<Installed> {
        Arc::clone(&self.shared.state.lock().installed)
    }

    /// Whether this replica writes KIngress status now.
    pub fn leading(&self) -> bool {
        self.shared.leading.load(Ordering::Acquire)
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
    let mut failures = Failures::new((group, plural), slot);
    while let Some(event) = events.next().await {
        let mut guard = shared.state.lock();
        let state = &mut *guard;
        match event {
            Ok(event) => {
                failures.answered(state, &event);
                let mut unused = Statuses::new();
                let mut observed = T::STATUS.then(|| shared.observed.lock());
                if let Some(o) = observed.as_deref_mut() {
                    match &event {
                        watcher::Event::Apply(w)
                        | watcher::Event::Delete(w)
                        | watcher::Event::InitApply(w) => {
                            o.moved.insert(w.key());
                        }
                        watcher::Event::InitDone => o.all_moved = true,
                        watcher::Event::Init => {}
                    }
                }
                let key = match &event {
                    watcher::Event::Apply(w) | watcher::Event::Delete(w) => Some(w.key()),
                    _ => None,
                };
                let statuses = observed.as_mut().map_or(&mut unused, |o| &mut o.statuses);
                let change = store::apply(&mut state.snapshot, statuses, &mut kept, event);
                drop(observed);
                match (change, key) {
                    (Change::Changed, Some(key)) => {
                        T::moved(&mut state.moved).insert(key);
                    }
                    (Change::None, _) => {}
                    // A relist may have moved anything.
                    _ => state.moved.all = true,
                }
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
                    if T::STATUS {
                        shared.ingresses_changed.notify_one();
                    }
                }
            }
            Err(e) => failures.failed(state, &e),
        }
    }
}

/// Secrets: only their metadata is watched, so no Secret's data crosses the wire or stays
/// in memory unless a KIngress of Knoxy's class names it; those are fetched (again when
/// their resourceVersion moves) and kept trimmed to their certificate and key.
async fn watch_secrets(client: Client, shared: Arc<Shared>, slot: usize) {
    let ar = Secret::api_resource();
    let api: Api<PartialObjectMeta<Watched<Secret>>> = Api::all_with(client.clone(), &ar);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // `namespace/name` → resourceVersion of every Secret, and of each one fetched.
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, String>> = None;
    let mut fetched: BTreeMap<String, String> = BTreeMap::new();
    let mut listed = false;
    let mut failures = Failures::new(("", "secrets"), slot);
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(event)) => {
                    failures.answered(&mut shared.state.lock(), &event);
                    let version = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                        let key = format!("{}/{}", m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default());
                        (key, m.resource_version.clone().unwrap_or_default())
                    };
                    match event {
                        watcher::Event::Init => listing = Some(BTreeMap::new()),
                        watcher::Event::InitApply(m) => {
                            let (key, rv) = version(&m.metadata);
                            listing.get_or_insert_with(BTreeMap::new).insert(key, rv);
                        }
                        watcher::Event::InitDone => {
                            versions = listing.take().unwrap_or_default();
                            listed = true;
                        }
                        watcher::Event::Apply(m) => {
                            let (key, rv) = version(&m.metadata);
                            versions.insert(key, rv);
                        }
                        watcher::Event::Delete(m) => {
                            versions.remove(&version(&m.metadata).0);
                        }
                    }
                }
                Some(Err(e)) => {
                    failures.failed(&mut shared.state.lock(), &e);
                    continue;
                }
            },
            () = shared.ingresses_changed.notified() => {}
        }
        if !listed {
            continue;
        }
        let named = named_secrets(&shared.state.lock().snapshot);
        let mut changed = false;
        for key in named.iter().filter(|k| versions.contains_key(*k)) {
            if fetched.get(key) == versions.get(key) {
                continue;
            }
            let (ns, name) = key.split_once('/').unwrap_or_default();
            let api: Api<Watched<Secret>> = Api::namespaced_with(client.clone(), ns, &ar);
            match api.get_opt(name).await {
                Ok(found) => {
                    let kept = found.and_then(|w| w.object.ok()).and_then(Kind::keep);
                    let mut state = shared.state.lock();
                    match kept {
                        Some(secret) => {
                            state.snapshot.secrets.insert(key.clone(), Arc::new(secret))
                        }
                        None => state.snapshot.secrets.remove(key),
                    };
                    state.moved.secrets.insert(key.clone());
                    fetched.insert(key.clone(), versions[key].clone());
                    changed = true;
                }
                Err(e) => eprintln!(
                    "knoxy: cannot get Secret {key}: {}",
                    crate::connect::chain(&e)
                ),
            }
        }
        let mut state = shared.state.lock();
        let state = &mut *state;
        let before = state.snapshot.secrets.len();
        state.snapshot.secrets.retain(|k, _| {
            let keep = named.contains(k) && versions.contains_key(k);
            if !keep {
                state.moved.secrets.insert(k.clone());
            }
            keep
        });
        fetched.retain(|k, _| named.contains(k) && versions.contains_key(k));
        changed |= state.snapshot.secrets.len() != before;
        if changed || !state.listed[slot] {
            state.listed[slot] = true;
            state.dirty = true;
            shared.wake.notify_one();
        }
    }
}

/// `namespace/name` of every Secret a KIngress's `spec.tls` names.
fn named_secrets(snapshot: &Snapshot) -> std::collections::BTreeSet<String> {
    snapshot
        .ingresses
        .values()
        .flat_map(|k| &k.spec.tls)
        .map(|t| format!("{}/{}", t.secret_namespace, t.secret_name))
        .collect()
}

/// Hands each moved snapshot to `install`, once every kind is listed; events that arrive
/// while a table is being derived are taken together by the next one.
fn install_each<F>(shared: &Shared, mut install: F)
where
    F: FnMut(&Snapshot, &Moved) -> Arc<BTreeMap<String, IngressStatus>>,
{
    for table in 1.. {
        let mut state = shared.state.lock();
        while !(state.dirty && state.listed.iter().all(|l| *l)) {
            shared.wake.wait(&mut state);
        }
        state.dirty = false;
        let moved = std::mem::take(&mut state.moved);
        // Derived under the lock rather than from a copy: copying 10,000 KIngresses' worth
        // of maps cost more than the watch events that wait meanwhile.
        let statuses = install(&state.snapshot, &moved);
        state.installed = Arc::new(Installed::new(table, &state.snapshot, &statuses));
        drop(state);
        shared.installed_changed.notify_one();
        shared.synced.store(true, Ordering::Release);
    }
}

// === Helpers ===

/// One kind's watch errors: each logged when it appears (and every minute while it lasts),
/// and listed on `/status` until the watch answers again.
struct Failures {
    resource: explain::Resource,
    slot: usize,
    logged: Option<(String, Instant)>,
}

impl Failures {
    fn new(resource: explain::Resource, slot: usize) -> Failures {
        Failures {
            resource,
            slot,
            logged: None,
        }
    }

    /// An event came; a (re)list's `Init` comes before it asks anything, so it is no answer.
    fn answered<K>(&mut self, state: &mut State, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::Init) {
            return;
        }
        if state.errors[self.slot].take().is_some() {
            eprintln!("knoxy: watching {} again", self.resource.1);
            self.logged = None;
        }
    }

    fn failed(&mut self, state: &mut State, e: &watcher::Error) {
        let text = explain::watch_error(e, self.resource);
        let repeat = self
            .logged
            .as_ref()
            .is_none_or(|(last, at)| *last != text || at.elapsed() >= REPEAT_ERROR);
        if repeat {
            eprintln!("knoxy: {text} (retrying)");
            self.logged = Some((text.clone(), Instant::now()));
        }
        state.errors[self.slot] = Some(text);
    }
}

fn problems(state: &State) -> Vec<String> {
    let errors = state.errors.iter().flatten().cloned();
    errors
        .chain(state.undecodable.iter().flatten().cloned())
        .collect()
}
