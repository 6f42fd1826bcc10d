//! `derive`: a snapshot of Kubernetes-shaped objects in, the route table and a status for
//! each KIngress out. Pure: no IO, env, clock or spawning; the output does not depend on the
//! order objects arrived in (the snapshot's maps are sorted by `namespace/name`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::k8s::{Endpoint, EndpointSlice, Secret, Service, APP_PROTOCOL_H2C, SERVICE_NAME_LABEL};
use crate::kingress::{IngressBackendSplit, IntOrString, KIngress, KNOXY_INGRESS_CLASS};
use crate::probe_hash::probe_hash;
use crate::revision::{Revision, PRIVATE_SUFFIX};
use crate::route::{Backend, Cert, RevisionTarget, Route, RouteTable, Split, Target, VirtualHost};
use crate::validate::{self, FieldError, CLUSTER_LOCAL};

// === Types ===

/// Keys here come from the objects, not from clients: a fast hash is safe.
type Fast = foldhash::fast::RandomState;

/// The objects every source (Kubernetes watch, files, local mode) produces, keyed `ns/name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Shared, so that sources can keep objects and hand out snapshots without copying them.
    pub ingresses: BTreeMap<String, Arc<KIngress>>,
    pub services: BTreeMap<String, Arc<Service>>,
    pub endpoint_slices: BTreeMap<String, Arc<EndpointSlice>>,
    pub secrets: BTreeMap<String, Arc<Secret>>,
    /// Knative revisions: a split naming one goes to its pods through the activator role.
    pub revisions: BTreeMap<String, Arc<Revision>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeriveConfig {
    /// The ingress class served; KIngresses of any other class are left alone.
    pub class: String,
}

impl Default for DeriveConfig {
    fn default() -> Self {
        DeriveConfig {
            class: KNOXY_INGRESS_CLASS.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub table: RouteTable,
    /// One entry per KIngress of our class; others get none (they are not ours to touch).
    pub status: BTreeMap<String, IngressStatus>,
    /// What the next [`derive_after`] falls back to when a KIngress turns invalid.
    pub last_valid: Arc<LastValid>,
}

/// The last valid version of each KIngress of our class, by `namespace/name`.
pub type LastValid = BTreeMap<String, Arc<KIngress>>;

/// The keys (`namespace/name`) of a snapshot's objects that moved since the snapshot the
/// previous [`Deriver::derive_moved`] saw, as the source saw them change: where to look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Anything may have moved (a first snapshot, a relist): look at everything.
    pub all: bool,
    pub ingresses: HashSet<String>,
    pub services: HashSet<String>,
    pub endpoint_slices: HashSet<String>,
    pub secrets: HashSet<String>,
    pub revisions: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressStatus {
    /// Served; `hash` is what probes with `K-Network-Hash: override` come back with.
    Ready { hash: Arc<str> },
    /// The object fails validation, so it is not what is served: its last valid version is
    /// (`serving` is that version's probe hash), or nothing when there is none or it is not
    /// ready. As the webhook would have refused the edit, an invalid edit changes nothing.
    Invalid {
        errors: Vec<FieldError>,
        serving: Option<Arc<str>>,
    },
    /// A backend or secret is missing; the whole KIngress waits (as Kourier does).
    NotReady {
        reason: &'static str,
        message: String,
    },
    /// An older KIngress (by `creationTimestamp`, then `namespace/name`) already serves this host.
    Conflict { host: String },
}

// === The flow ===

/// The route table and statuses of a snapshot, from scratch: an invalid KIngress is not
/// served, since nothing earlier is known of it.
pub fn derive(snap: &Snapshot, cfg: &DeriveConfig) -> Derived {
    Deriver::new(cfg.clone()).derive(snap)
}

/// `derive`, where each invalid KIngress stands for its version in `last_valid` (the
/// previous output's [`Derived::last_valid`]): folding snapshots through it is what a
/// [`Deriver`] does.
pub fn derive_after(last_valid: &LastValid, snap: &Snapshot, cfg: &DeriveConfig) -> Derived {
    let mut deriver = Deriver::new(cfg.clone());
    deriver.last_valid = Arc::new(last_valid.clone());
    deriver.derive(snap)
}

/// `derive_after` the previous call's output, remembering each KIngress's translation
/// between calls: a KIngress whose object and whose every read Service, EndpointSlice and
/// Secret are unchanged is not translated again. The output is always what `derive_after`
/// gives for the same snapshot and the previous output's `last_valid`.
///
/// Told what moved ([`Deriver::derive_moved`]), it looks only there: at 10,000 KIngresses a
/// change costs a walk of the cached translations in age order, not a check of every read.
#[derive(Debug, Default)]
pub struct Deriver {
    cfg: DeriveConfig,
    /// Each KIngress of our class, by `namespace/name`.
    cache: HashMap<String, Cached, Fast>,
    /// The same keys, oldest first: the order hosts are claimed in.
    by_age: BTreeSet<Age>,
    slices: SliceIndex,
    revisions: BTreeMap<String, CachedRevision>,
    /// The previous output's `last_valid`.
    last_valid: Arc<LastValid>,
    /// Whether a first snapshot has been seen whole.
    primed: bool,
}

/// Oldest first: by `creationTimestamp`, then `namespace/name`; those without a timestamp last.
type Age = (bool, Option<i128>, String);

#[derive(Debug)]
struct Cached {
    ingress: Arc<KIngress>,
    /// Why `ingress` is invalid; empty when it is valid.
    problems: Vec<FieldError>,
    /// The version served: `ingress` when valid, else its last valid version, if any.
    served: Option<Translation>,
}

#[derive(Debug)]
struct Translation {
    of: Arc<KIngress>,
    reads: Reads,
    result: Result<Arc<Translated>, IngressStatus>,
}

/// A revision's target for the activator role, and what it was made from.
#[derive(Debug)]
struct CachedRevision {
    revision: Arc<Revision>,
    reads: Reads,
    target: Option<Arc<RevisionTarget>>,
}

/// One KIngress turned into routes, before it is installed into the table.
#[derive(Debug)]
struct Translated {
    hash: Arc<str>,
    rules: Vec<Rule>,
    certs: Vec<Arc<Cert>>,
}

#[derive(Debug)]
struct Rule {
    /// Lower-cased; empty means every host.
    hosts: Vec<Arc<str>>,
    cluster_local: bool,
    vhost: Arc<VirtualHost>,
}

impl Deriver {
    pub fn new(cfg: DeriveConfig) -> Self {
        Deriver {
            cfg,
            ..Deriver::default()
        }
    }

    /// The output for `snap`, looking at every object.
    pub fn derive(&mut self, snap: &Snapshot) -> Derived {
        self.derive_moved(
            snap,
            &Moved {
                all: true,
                ..Moved::default()
            },
        )
    }

    /// The output for `snap`, where only what `moved` names differs from the snapshot of the
    /// previous call (the caller vouches for that: the result is `derive`'s when it holds).
    pub fn derive_moved(&mut self, snap: &Snapshot, moved: &Moved) -> Derived {
        let everything = moved.all || !self.primed;
        self.primed = true;
        let slices_moved = if everything {
            self.slices = SliceIndex::new(snap);
            HashSet::new()
        } else {
            self.slices.update(snap, &moved.endpoint_slices)
        };
        // Whether a cached translation must be checked against the snapshot again.
        let recheck = |reads: &Reads| everything || reads.touched(moved, &slices_moved);
        if everything {
            self.recache_all(snap);
        } else {
            moved
                .ingresses
                .iter()
                .for_each(|key| self.recache(snap, key));
        }
        let mut out = Derived::default();
        out.table.public.reserve(self.cache.len());
        out.table.private.reserve(self.cache.len());
        let mut last_valid = Vec::new();
        for (_, _, key) in &self.by_age {
            let Some(cached) = self.cache.get_mut(key.as_str()) else {
                continue;
            };
            let valid = if cached.problems.is_empty() {
                Some(&cached.ingress)
            } else {
                self.last_valid.get(key)
            };
            match (valid, &cached.served) {
                (Some(v), Some(t))
                    if same(&t.of, v)
                        && (!recheck(&t.reads) || t.reads.still_hold(snap, &self.slices)) => {}
                (Some(v), _) => {
                    let mut view = View::new(snap, &self.slices);
                    let result = translate(&mut view, key, v).map(Arc::new);
                    cached.served = Some(Translation {
                        of: Arc::clone(v),
                        reads: view.reads,
                        result,
                    });
                }
                (None, _) => cached.served = None,
            }
            if let (true, Some(v)) = (everything, valid) {
                last_valid.push((key.clone(), Arc::clone(v)));
            }
            // The hash of the version served, or why it is not; None when there is none.
            let served = cached.served.as_ref().map(|t| match &t.result {
                Ok(t) => match conflict(&out.table, t) {
                    Some(host) => Err(IngressStatus::Conflict {
                        host: host.to_string(),
                    }),
                    None => {
                        t.install(&mut out.table);
                        Ok(Arc::clone(&t.hash))
                    }
                },
                Err(status) => Err(status.clone()),
            });
            let status = match (cached.problems.is_empty(), served) {
                (true, Some(Ok(hash))) => IngressStatus::Ready { hash },
                (true, Some(Err(why))) => why,
                (_, served) => IngressStatus::Invalid {
                    errors: cached.problems.clone(),
                    serving: served.and_then(Result::ok),
                },
            };
            out.status.insert(key.clone(), status);
        }
        if everything {
            self.last_valid = Arc::new(last_valid.into_iter().collect());
        } else {
            // Only a moved KIngress's valid version can differ from the previous call's.
            let kept = Arc::make_mut(&mut self.last_valid);
            for key in &moved.ingresses {
                match self.cache.get(key) {
                    Some(c) if c.problems.is_empty() => {
                        kept.insert(key.clone(), Arc::clone(&c.ingress));
                    }
                    // Invalid: its last valid version, if any, stays.
                    Some(_) => {}
                    None => {
                        kept.remove(key);
                    }
                }
            }
        }
        self.derive_revisions(snap, moved, everything, &slices_moved);
        out.table.revisions = self
            .revisions
            .iter()
            .filter_map(|(k, c)| Some((k.clone(), Arc::clone(c.target.as_ref()?))))
            .collect();
        out.last_valid = Arc::clone(&self.last_valid);
        out
    }

    /// Every KIngress of our class again, keeping the translations of those unchanged.
    fn recache_all(&mut self, snap: &Snapshot) {
        let mut old = std::mem::take(&mut self.cache);
        self.by_age.clear();
        for (key, ingress) in &snap.ingresses {
            if !ingress.has_class(&self.cfg.class) {
                continue;
            }
            self.by_age.insert(age(key, ingress));
            let cached = match old.remove(key.as_str()) {
                Some(c) if same(&c.ingress, ingress) => c,
                old => Cached::new(ingress, old),
            };
            self.cache.insert(key.clone(), cached);
        }
    }

    /// One KIngress again: changed, added, gone, or of another class now.
    fn recache(&mut self, snap: &Snapshot, key: &String) {
        let now = snap
            .ingresses
            .get(key)
            .filter(|i| i.has_class(&self.cfg.class));
        if let (Some(c), Some(i)) = (self.cache.get(key.as_str()), now) {
            if same(&c.ingress, i) {
                return;
            }
        }
        let old = self.cache.remove(key.as_str());
        if let Some(c) = &old {
            self.by_age.remove(&age(key, &c.ingress));
        }
        if let Some(ingress) = now {
            self.by_age.insert(age(key, ingress));
            self.cache.insert(key.clone(), Cached::new(ingress, old));
        }
    }

    /// Each revision's target, made again where the revision or what it read moved.
    fn derive_revisions(
        &mut self,
        snap: &Snapshot,
        moved: &Moved,
        everything: bool,
        slices_moved: &HashSet<String>,
    ) {
        let make = |key: &String, revision: &Arc<Revision>, slices: &SliceIndex| {
            let mut view = View::new(snap, slices);
            let target = match revision_backend(&mut view, revision) {
                Ok(Backend {
                    target: Target::Revision(target),
                    ..
                }) => Some(target),
                _ => None,
            };
            let cached = CachedRevision {
                revision: Arc::clone(revision),
                reads: view.reads,
                target,
            };
            (key.clone(), cached)
        };
        let slices = &self.slices;
        if everything {
            let mut old = std::mem::take(&mut self.revisions);
            self.revisions = snap
                .revisions
                .iter()
                .map(|(key, revision)| match old.remove(key) {
                    Some(c) if same(&c.revision, revision) && c.reads.still_hold(snap, slices) => {
                        (key.clone(), c)
                    }
                    _ => make(key, revision, slices),
                })
                .collect();
            return;
        }
        let mut again: Vec<&String> = moved.revisions.iter().collect();
        again.extend(
            self.revisions
                .iter()
                .filter(|(_, c)| {
                    c.reads.touched(moved, slices_moved) && !c.reads.still_hold(snap, slices)
                })
                .map(|(k, _)| k),
        );
        let remade: Vec<_> = again
            .into_iter()
            .map(|key| (key.clone(), snap.revisions.get(key)))
            .collect();
        for (key, revision) in remade {
            match revision {
                Some(revision) => {
                    let (key, cached) = make(&key, revision, &self.slices);
                    self.revisions.insert(key, cached);
                }
                None => {
                    self.revisions.remove(&key);
                }
            }
        }
    }
}

impl Cached {
    /// A KIngress not seen before in this version; `old` is its previous entry, if any.
    fn new(ingress: &Arc<KIngress>, old: Option<Cached>) -> Cached {
        Cached {
            ingress: Arc::clone(ingress),
            problems: problems(ingress),
            // Kept: the version served may well be the same as before.
            served: old.and_then(|c| c.served),
        }
    }
}

fn age(key: &str, ingress: &KIngress) -> Age {
    let created = ingress.metadata.created();
    (created.is_none(), created, key.to_owned())
}

/// The object's validation problems, after Knative's defaults, as the webhook checks it.
fn problems(ingress: &KIngress) -> Vec<FieldError> {
    let mut ingress = ingress.clone();
    validate::set_defaults(&mut ingress.spec);
    validate::validate(&ingress).err().unwrap_or_default()
}

fn translate(
    view: &mut View<'_>,
    key: &str,
    ingress: &KIngress,
) -> Result<Translated, IngressStatus> {
    // Validated by the caller; translated with the defaults the webhook would have set.
    let mut ingress = ingress.clone();
    validate::set_defaults(&mut ingress.spec);
    let hash: Arc<str> = probe_hash(&ingress).into();
    let name: Arc<str> = key.into();
    let redirect = ingress.spec.http_option == "Redirected";
    let ns = &ingress.metadata.namespace;

    let mut rules = Vec::new();
    for rule in &ingress.spec.rules {
        let cluster_local = rule.visibility == CLUSTER_LOCAL;
        let mut routes = Vec::new();
        for path in rule.http.iter().flat_map(|h| h.paths.iter().flatten()) {
            let splits = path
                .splits
                .iter()
                .flatten()
                .map(|s| split(view, ns, s))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route {
                ingress: Arc::clone(&name),
                prefix: if path.path.is_empty() {
                    "/".to_owned()
                } else {
                    path.path.clone()
                },
                headers: header_pairs(path.headers.iter().map(|(k, m)| (k, &m.exact))),
                append_headers: header_pairs(&path.append_headers),
                rewrite_host: Some(path.rewrite_host.as_str())
                    .filter(|h| !h.is_empty())
                    .and_then(|h| HeaderValue::from_str(h).ok()),
                splits,
                redirect_https: redirect && !cluster_local,
                probe_hash: Arc::clone(&hash),
            });
        }
        rules.push(Rule {
            hosts: rule
                .hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase().into())
                .collect(),
            cluster_local,
            vhost: Arc::new(VirtualHost { routes }),
        });
    }
    let certs = ingress
        .spec
        .tls
        .iter()
        .map(|tls| cert(view, &tls.secret_namespace, &tls.secret_name, &tls.hosts).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Translated { hash, rules, certs })
}

impl Translated {
    fn install(&self, table: &mut RouteTable) {
        for rule in &self.rules {
            let mut claim = |host| {
                table.private.claim(host, &rule.vhost);
                if !rule.cluster_local {
                    table.public.claim(host, &rule.vhost);
                }
            };
            if rule.hosts.is_empty() {
                claim(None);
            }
            rule.hosts.iter().for_each(|h| claim(Some(h)));
        }
        table.certs.extend(self.certs.iter().cloned());
    }
}

/// The first host of `t` that an earlier KIngress already serves (`*` for a rule without
/// hosts when an earlier one has that too).
fn conflict<'t>(table: &RouteTable, t: &'t Translated) -> Option<&'t str> {
    t.rules.iter().find_map(|r| {
        if r.hosts.is_empty() {
            return table.private.has_any().then_some("*");
        }
        r.hosts.iter().find(|h| table.private.has(h)).map(|h| &**h)
    })
}

// === What a translation read ===

/// The snapshot as `translate` sees it: every lookup is recorded, so that a cached
/// translation can be reused exactly while the same lookups give the same objects.
struct View<'s> {
    snap: &'s Snapshot,
    slices: &'s SliceIndex,
    reads: Reads,
}

#[derive(Debug, Default)]
struct Reads {
    services: Vec<(String, Option<Arc<Service>>)>,
    /// By `namespace/service-name`, the slices labelled with it.
    slices: Vec<(String, Vec<Arc<EndpointSlice>>)>,
    secrets: Vec<(String, Option<Arc<Secret>>)>,
    revisions: Vec<(String, Option<Arc<Revision>>)>,
}

/// EndpointSlices by the `namespace/name` of the Service they belong to, in key order.
#[derive(Debug, Default)]
struct SliceIndex {
    by_service: HashMap<String, Vec<Arc<EndpointSlice>>, Fast>,
    /// Each indexed slice's Service, by the slice's `namespace/name`.
    service_of: HashMap<String, String, Fast>,
}

impl<'s> View<'s> {
    fn new(snap: &'s Snapshot, slices: &'s SliceIndex) -> Self {
        View {
            snap,
            slices,
            reads: Reads::default(),
        }
    }

    fn service(&mut self, key: String) -> Option<&'s Arc<Service>> {
        let found = self.snap.services.get(&key);
        self.reads.services.push((key, found.cloned()));
        found
    }

    fn slices(&mut self, key: String) -> &'s [Arc<EndpointSlice>] {
        let found = self.slices.get(&key);
        self.reads.slices.push((key, found.to_vec()));
        found
    }

    fn secret(&mut self, key: String) -> Option<&'s Arc<Secret>> {
        let found = self.snap.secrets.get(&key);
        self.reads.secrets.push((key, found.cloned()));
        found
    }

    fn revision(&mut self, key: String) -> Option<&'s Arc<Revision>> {
        let found = self.snap.revisions.get(&key);
        self.reads.revisions.push((key, found.cloned()));
        found
    }
}

impl Reads {
    /// Whether any key read is among those that moved (`slices` by their Service's key).
    fn touched(&self, moved: &Moved, slices: &HashSet<String>) -> bool {
        fn any<T>(reads: &[(String, T)], moved: &HashSet<String>) -> bool {
            !moved.is_empty() && reads.iter().any(|(k, _)| moved.contains(k))
        }
        any(&self.services, &moved.services)
            || any(&self.slices, slices)
            || any(&self.secrets, &moved.secrets)
            || any(&self.revisions, &moved.revisions)
    }

    fn still_hold(&self, snap: &Snapshot, slices: &SliceIndex) -> bool {
        self.services
            .iter()
            .all(|(k, was)| same_opt(snap.services.get(k), was))
            && self
                .secrets
                .iter()
                .all(|(k, was)| same_opt(snap.secrets.get(k), was))
            && self
                .revisions
                .iter()
                .all(|(k, was)| same_opt(snap.revisions.get(k), was))
            && self.slices.iter().all(|(k, was)| {
                let now = slices.get(k);
                now.len() == was.len() && now.iter().zip(was).all(|(a, b)| same(a, b))
            })
    }
}

impl SliceIndex {
    fn new(snap: &Snapshot) -> Self {
        let mut index = SliceIndex::default();
        for (key, slice) in &snap.endpoint_slices {
            if let Some(service) = service_of(slice) {
                index
                    .by_service
                    .entry(service.clone())
                    .or_default()
                    .push(Arc::clone(slice));
                index.service_of.insert(key.clone(), service);
            }
        }
        index
    }

    /// Follows the slices `moved` names to their version in `snap`; answers the keys of the
    /// Services whose slices moved.
    fn update(&mut self, snap: &Snapshot, moved: &HashSet<String>) -> HashSet<String> {
        let mut services = HashSet::new();
        for key in moved {
            // Keys are `namespace/name` of the object (as every source keys them).
            let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
            if let Some(service) = self.service_of.remove(key) {
                if let Some(list) = self.by_service.get_mut(&service) {
                    list.retain(|s| s.metadata.name != name);
                    if list.is_empty() {
                        self.by_service.remove(&service);
                    }
                }
                services.insert(service);
            }
            let Some(slice) = snap.endpoint_slices.get(key) else {
                continue;
            };
            let Some(service) = service_of(slice) else {
                continue;
            };
            // A Service's slices share its namespace: in key order is in name order.
            let list = self.by_service.entry(service.clone()).or_default();
            let at = list.partition_point(|s| s.metadata.name.as_str() < name);
            list.insert(at, Arc::clone(slice));
            self.service_of.insert(key.clone(), service.clone());
            services.insert(service);
        }
        services
    }

    fn get(&self, key: &str) -> &[Arc<EndpointSlice>] {
        self.by_service.get(key).map_or(&[], Vec::as_slice)
    }
}

/// `namespace/name` of the Service a slice belongs to, from its label.
fn service_of(slice: &EndpointSlice) -> Option<String> {
    let service = slice.metadata.labels.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{service}", slice.metadata.namespace))
}

/// The same object: shared, or equal in value (a source may re-create unchanged objects).
fn same<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

fn same_opt<T: PartialEq>(now: Option<&Arc<T>>, was: &Option<Arc<T>>) -> bool {
    match (now, was) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

// === Helpers ===

fn split(view: &mut View<'_>, ns: &str, s: &IngressBackendSplit) -> Result<Split, IngressStatus> {
    Ok(Split {
        percent: u32::try_from(s.percent).unwrap_or(0),
        backend: backend(view, ns, &s.service_name, &s.service_port)?,
        append_headers: header_pairs(&s.append_headers),
    })
}

/// Service + Service port → where to connect (contract §1.2, "Backend resolution").
fn backend(
    view: &mut View<'_>,
    ns: &str,
    name: &str,
    port: &IntOrString,
) -> Result<Backend, IngressStatus> {
    let not_ready = |reason, message| IngressStatus::NotReady { reason, message };
    if let Some(revision) = view.revision(format!("{ns}/{name}")) {
        return revision_backend(view, revision)
            .map_err(|e| not_ready("RevisionInvalid", format!("revision {ns}/{name}: {e}")));
    }
    let service = view.service(format!("{ns}/{name}")).ok_or_else(|| {
        not_ready(
            "ServiceNotFound",
            format!("service {ns}/{name} does not exist"),
        )
    })?;
    let sp = service
        .spec
        .ports
        .iter()
        .find(|p| match port {
            IntOrString::Int(n) => i64::from(p.port) == *n,
            IntOrString::String(s) => &p.name == s,
        })
        .ok_or_else(|| {
            not_ready(
                "PortNotFound",
                format!("service {ns}/{name} has no port {}", port_text(port)),
            )
        })?;
    let h2c = sp.name == "http2" || sp.name == "h2c" || sp.app_protocol == APP_PROTOCOL_H2C;
    if service.spec.kind == "ExternalName" {
        let host = service.spec.external_name.trim_end_matches('.').to_owned();
        return Ok(Backend::new(
            Target::Dns {
                host,
                port: sp.port,
            },
            h2c,
        ));
    }
    let mut addrs = Vec::new();
    let slices = view.slices(format!("{ns}/{name}"));
    for slice in slices {
        // The slice carries the resolved target port under the Service port's name.
        let target = slice
            .ports
            .iter()
            .find(|p| p.name == sp.name)
            .and_then(|p| p.port)
            .or(match &sp.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                _ => Some(sp.port),
            });
        let Some(target) = target else { continue };
        for endpoint in slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.ready != Some(false))
        {
            addrs.extend(socket_addrs(endpoint, target));
        }
    }
    if addrs.is_empty() {
        return Err(not_ready(
            "NoReadyEndpoints",
            format!("service {ns}/{name} has no ready endpoints"),
        ));
    }
    addrs.sort_unstable();
    addrs.dedup();
    Ok(Backend::new(Target::Endpoints(addrs), h2c))
}

/// A revision's pods: the addresses of its private Service (`<rev>-private`) on the queue's
/// port for the revision's protocol (`http`: 8012, `http2`: 8013), ready or not yet (§4.5).
fn revision_backend(view: &mut View<'_>, revision: &Revision) -> Result<Backend, String> {
    let settings = revision.settings()?;
    let meta = &revision.metadata;
    let port_name = if settings.h2c { "http2" } else { "http" };
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    let private = format!("{}/{}{PRIVATE_SUFFIX}", meta.namespace, meta.name);
    for slice in view.slices(private) {
        let Some(port) = slice
            .ports
            .iter()
            .find(|p| p.name == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let pods = if endpoint.conditions.ready == Some(false) {
                &mut not_ready
            } else {
                &mut ready
            };
            pods.extend(socket_addrs(endpoint, port));
        }
    }
    for pods in [&mut ready, &mut not_ready] {
        pods.sort_unstable();
        pods.dedup();
    }
    not_ready.retain(|p| ready.binary_search(p).is_err());
    let mut activators: Vec<IpAddr> = view
        .slices(meta.key())
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.ready != Some(false))
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse().ok())
        .collect();
    activators.sort_by_cached_key(ToString::to_string);
    activators.dedup();
    let target = RevisionTarget {
        key: meta.key(),
        settings,
        ready,
        not_ready,
        activators,
    };
    Ok(Backend::new(
        Target::Revision(Arc::new(target)),
        settings.h2c,
    ))
}

/// An endpoint's addresses on `port`; one that is not an IP address is skipped.
fn socket_addrs(endpoint: &Endpoint, port: u16) -> impl Iterator<Item = SocketAddr> + '_ {
    endpoint
        .addresses
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(move |ip| SocketAddr::new(ip, port))
}

fn cert(
    view: &mut View<'_>,
    ns: &str,
    name: &str,
    hosts: &[String],
) -> Result<Cert, IngressStatus> {
    let missing = |what: &str| IngressStatus::NotReady {
        reason: "SecretNotReady",
        message: format!("secret {ns}/{name}: {what}"),
    };
    let secret = view
        .secret(format!("{ns}/{name}"))
        .ok_or_else(|| missing("does not exist"))?;
    let field = |key: &str| -> Result<Vec<u8>, IngressStatus> {
        let b64 = secret
            .data
            .get(key)
            .ok_or_else(|| missing(&format!("no {key}")))?;
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
            .map_err(|e| missing(&format!("{key} is not base64: {e}")))
    };
    Ok(Cert {
        hosts: hosts.to_vec(),
        cert_pem: field("tls.crt")?,
        key_pem: field("tls.key")?,
    })
}

/// Header names and values, parsed (validation has already rejected any that do not parse).
fn header_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(HeaderName, HeaderValue)> {
    pairs
        .into_iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect()
}

fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

#[cfg(test)]
pub(crate) mod props;
#[cfg(test)]
mod tests;
