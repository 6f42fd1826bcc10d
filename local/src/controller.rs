//! `knoxy local`'s reconcile loop (contract `autoscaler-local.md` §2-4): each Service's
//! Configuration makes its revisions; each revision has its KPA and its instances; each
//! second the instances are supervised (a crash reported and replaced), scraped, and scaled
//! to what the KPA applies; the snapshot for the gateway is every Service's KIngress (its
//! traffic flattened to ready revisions), every revision, and its instances as endpoints.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knoxy_control::derive::Snapshot;
use knoxy_control::kingress::KIngress;
use knoxy_control::kpa::config::HPA_CLASS;
use knoxy_control::kpa::scaler::Active;
use knoxy_control::kpa::{collector, RevisionScaler, Sample, Scaling};
use knoxy_control::revision::RevisionSpec;
use knoxy_control::serving::domainmapping::{self, unclaimed, Facts};
use knoxy_control::serving::gc::{Candidate, NO_GC};
use knoxy_control::serving::ingress::Target;
use knoxy_control::serving::ingress::{ingress, url, Route};
use knoxy_control::serving::rollout::Rollout;
use knoxy_control::serving::service::{Configuration, Service, ServiceSpec};
use knoxy_control::serving::status::{
    revision_status, service_status, Activity, ConfigurationFacts, Health, RouteFacts,
};
use knoxy_control::serving::traffic::{
    defaulted, flatten, statuses, ConfigurationState, RevisionState, Status, TrafficStatus,
};

use crate::input::Input;
use crate::scrape::scrape;
use crate::snapshot::{snapshot, LocalRevision, Placeholder};
use crate::supervisor::{Instance, InstanceSpec};
use crate::view::{DomainMappingView, Event, RevisionView, ServiceView, View};

/// A revision whose instance crashes this many times before ever being ready has failed.
const CRASHES_TO_FAIL: u32 = 3;
/// How long a stopped instance's queue may drain.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How many recent events the operator's view keeps.
const EVENTS: usize = 50;

pub struct Controller {
    /// The `knoxy-queue` binary.
    queue: PathBuf,
    /// What starts instances so that they die with us (see [`Controller::launch_with`]).
    launcher: Option<PathBuf>,
    /// Where a bare command name is looked for first (the directory of knoxy's binaries).
    search: Vec<PathBuf>,
    input: Input,
    configurations: BTreeMap<String, Configuration>,
    /// Why a Service's last edit was not applied.
    pub service_errors: BTreeMap<String, String>,
    revisions: BTreeMap<String, Revision>,
    next_instance: u64,
    stopping: Vec<std::thread::JoinHandle<()>>,
    /// The second of the last scrape.
    last_scraped: i64,
    /// Each Service's generation (bumped by a spec change) and the spec it counts.
    generations: BTreeMap<String, (u64, ServiceSpec)>,
    /// Each Route's last programmed traffic: kept through a traffic error, as Knative
    /// leaves the KIngress untouched.
    routes: BTreeMap<String, Programmed>,
    /// Each `latestRevision` target's gradual rollout, by (Service, tag).
    rollouts: BTreeMap<(String, Option<String>), Rollout>,
    /// Revisions some Route marks (`routingState: active`); the rest are `reserve`.
    routed: BTreeSet<String>,
    statuses: BTreeMap<String, ServiceView>,
    mappings: BTreeMap<String, DomainMappingView>,
    events: VecDeque<Event>,
    /// Events not yet printed.
    unlogged: Vec<String>,
    /// The second of the last step.
    now: i64,
}

/// What a Route last programmed.
struct Programmed {
    ingress: KIngress,
    traffic: Vec<TrafficStatus>,
}

struct Revision {
    namespace: String,
    service: String,
    name: String,
    spec: RevisionSpec,
    instance: Result<InstanceSpec, String>,
    kpa: RevisionScaler,
    instances: Vec<Running>,
    ever_ready: bool,
    crashes: u32,
    failed: Option<String>,
    /// The replicas last applied (for scale events).
    applied: Option<u32>,
    /// The Routes have been reconciled since it was created (its routing state is known).
    evaluated: bool,
    /// Its activation timed out (none of its instances ever turned ready in time).
    timed_out: bool,
    /// When it was created, and when its routing state last changed (for GC).
    created: i64,
    routing_state_modified: i64,
    /// Annotated `serving.knative.dev/no-gc: "true"`.
    no_gc: bool,
}

struct Running {
    instance: Instance,
    ready: bool,
}

impl Controller {
    pub fn new(queue: PathBuf, search: Vec<PathBuf>) -> Controller {
        Controller {
            queue,
            launcher: None,
            search,
            input: Input::default(),
            configurations: BTreeMap::new(),
            service_errors: BTreeMap::new(),
            revisions: BTreeMap::new(),
            next_instance: 1,
            stopping: Vec::new(),
            last_scraped: i64::MIN,
            generations: BTreeMap::new(),
            routes: BTreeMap::new(),
            routed: BTreeSet::new(),
            rollouts: BTreeMap::new(),
            statuses: BTreeMap::new(),
            mappings: BTreeMap::new(),
            events: VecDeque::new(),
            unlogged: Vec::new(),
            now: 0,
        }
    }

    /// Starts instances through `launcher` (knoxy's own binary), so that they die with
    /// this process even when it is killed.
    pub fn launch_with(&mut self, launcher: PathBuf) {
        self.launcher = Some(launcher);
    }

    /// Applies a new reading of the inputs at second `now`: a changed template makes a new
    /// revision; a Service no longer there takes its revisions and instances with it.
    pub fn load(&mut self, input: Input, now: i64) {
        self.now = now;
        for e in &input.errors {
            self.event(format!("{e} (what runs keeps running)"));
        }
        for (key, svc) in &input.services {
            let generation = self
                .generations
                .entry(key.clone())
                .or_insert_with(|| (0, ServiceSpec::default()));
            if generation.0 == 0 || generation.1 != svc.spec {
                *generation = (generation.0 + 1, svc.spec.clone());
            }
            let config = self.configurations.entry(key.clone()).or_default();
            match config.apply(&svc.metadata.name, &svc.spec.template) {
                Ok(Some(name)) => {
                    self.service_errors.remove(key);
                    let rev = self.new_revision(svc, &name, &input, now);
                    let why = rev.failed.clone();
                    self.revisions
                        .insert(format!("{}/{name}", svc.metadata.namespace), rev);
                    self.event(format!("{key}: revision {name} created"));
                    if let Some(why) = why {
                        self.event(format!("{key}: revision {name} failed: {why}"));
                    }
                }
                Ok(None) => {
                    self.service_errors.remove(key);
                }
                Err(e) => {
                    if self.service_errors.get(key) != Some(&e) {
                        self.event(format!("Service {key}: {e}"));
                    }
                    self.service_errors.insert(key.clone(), e);
                }
            }
        }
        let gone: Vec<String> = self
            .configurations
            .keys()
            .filter(|k| !input.services.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            self.event(format!("{key}: deleted"));
            self.configurations.remove(&key);
            self.generations.remove(&key);
            self.routes.remove(&key);
            self.statuses.remove(&key);
            self.rollouts.retain(|(svc, _), _| *svc != key);
            let (ns, name) = key.split_once('/').unwrap_or(("", &key));
            let dead: Vec<String> = self
                .revisions
                .iter()
                .filter(|(_, r)| r.namespace == ns && r.service == name)
                .map(|(k, _)| k.clone())
                .collect();
            for k in dead {
                if let Some(rev) = self.revisions.remove(&k) {
                    for running in rev.instances {
                        self.stop(running.instance);
                    }
                }
            }
        }
        self.input = input;
    }

    /// The inputs last loaded.
    pub fn input(&self) -> &Input {
        &self.input
    }

    fn new_revision(&self, svc: &Service, name: &str, input: &Input, now: i64) -> Revision {
        let template = &svc.spec.template;
        let mut spec = template.spec.clone();
        input.defaults.apply(&mut spec);
        let settings = input.defaults.settings(&spec, "spec").ok();
        let cc = settings.map_or(0, |s| s.container_concurrency);
        // Validated when read: a failure here falls back to the defaults.
        let mut scaling = Scaling::from_annotations(
            &template.metadata.annotations,
            &input.autoscaler,
            "spec.template.metadata.annotations",
        )
        .unwrap_or_default();
        if scaling.progress_deadline.is_none() {
            scaling.progress_deadline = input.progress_deadline;
        }
        let instance = self.instance_spec(svc, name, &spec, input);
        let failed = if scaling.class(&input.autoscaler) == HPA_CLASS {
            Some(format!(
                "the class {HPA_CLASS} scales on CPU through Kubernetes' HorizontalPodAutoscaler, which knoxy local does not have: use the KPA (leave autoscaling.knative.dev/class out, or set kpa.autoscaling.knative.dev)"
            ))
        } else {
            instance.as_ref().err().cloned()
        };
        Revision {
            namespace: svc.metadata.namespace.clone(),
            service: svc.metadata.name.clone(),
            name: name.to_owned(),
            kpa: RevisionScaler::new(&scaling, cc, &input.autoscaler, now, 0),
            instance,
            spec,
            instances: Vec::new(),
            ever_ready: false,
            crashes: 0,
            failed,
            applied: None,
            evaluated: false,
            timed_out: false,
            created: now,
            routing_state_modified: now,
            no_gc: template.metadata.annotations.get(NO_GC).map(String::as_str) == Some("true"),
        }
    }

    /// What an instance of the revision runs: the container's command and args, or the
    /// command its image maps to (with the container's args).
    fn instance_spec(
        &self,
        svc: &Service,
        name: &str,
        spec: &RevisionSpec,
        input: &Input,
    ) -> Result<InstanceSpec, String> {
        let container = spec.containers.first().ok_or("no container")?;
        let mut argv = if container.command.is_empty() {
            input.images.get(&container.image).cloned().ok_or_else(|| {
                format!(
                    "image {:?} has no command: give the container a command, or map the image in a LocalConfig",
                    container.image
                )
            })?
        } else {
            container.command.clone()
        };
        argv.extend(container.args.iter().cloned());
        if let Some(found) = self.find(&argv[0]) {
            argv[0] = found.display().to_string();
        }
        let settings = input.defaults.settings(spec, "spec")?;
        Ok(InstanceSpec {
            namespace: svc.metadata.namespace.clone(),
            service: svc.metadata.name.clone(),
            configuration: svc.metadata.name.clone(),
            revision: name.to_owned(),
            argv,
            env: container
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            container_concurrency: settings.container_concurrency,
            timeout_seconds: i64::try_from(settings.timeout.as_secs()).unwrap_or(300),
            queue: self.queue.clone(),
            launcher: self.launcher.clone(),
        })
    }

    /// A bare command name in one of the search directories.
    fn find(&self, command: &str) -> Option<PathBuf> {
        if command.contains('/') {
            return None;
        }
        self.search
            .iter()
            .map(|d| d.join(command))
            .find(|p| Path::is_file(p))
    }

    /// One second at `now`: supervise, scrape, record the activator's reports, scale.
    pub fn step(&mut self, now: i64, activator: &[(String, Sample)]) {
        self.now = now;
        let keys: Vec<String> = self.revisions.keys().cloned().collect();
        let mut events = Vec::new();
        for key in keys {
            let mut to_stop = Vec::new();
            let routed = self.routed.contains(&key);
            let Some(rev) = self.revisions.get_mut(&key) else {
                continue;
            };
            // A revision no Route marks is `reserve`: unreachable, so min-scale is off. A
            // new one is pending until the Routes have been looked at.
            let reachable = routed || !rev.evaluated;
            // Supervise: a crashed instance is reported and dropped (the KPA's count brings
            // a new one); its readiness is the kubelet's probe through its queue.
            rev.instances.retain_mut(|r| match r.instance.exited() {
                Some(why) => {
                    events.push(format!(
                        "{key}: instance {} stopped: {why}",
                        r.instance.name
                    ));
                    if !rev.ever_ready {
                        rev.crashes += 1;
                    }
                    false
                }
                None => true,
            });
            if rev.crashes >= CRASHES_TO_FAIL && rev.failed.is_none() {
                let why = format!(
                    "the container exited {} times before it was ready",
                    rev.crashes
                );
                events.push(format!("{key}: failed: {why}"));
                rev.failed = Some(why);
            }
            for r in rev.instances.iter_mut().filter(|r| !r.ready) {
                r.ready = r.instance.ready();
                if r.ready && !rev.ever_ready {
                    events.push(format!("{key}: ready"));
                }
                rev.ever_ready |= r.ready;
            }
            // Scrape a sample of the ready instances, standing for all of them (once a
            // second: a step that an activator's report brought adds nothing twice).
            let ready: Vec<&Running> = rev.instances.iter().filter(|r| r.ready).collect();
            if now > self.last_scraped && !rev.kpa.activator_only() {
                let n = collector::sample_size(ready.len());
                let samples: Vec<Sample> = ready
                    .iter()
                    .take(n)
                    .filter_map(|r| scrape(r.instance.metrics))
                    .collect();
                if let Some(all) = collector::scaled(&samples, ready.len()) {
                    rev.kpa.scraped(now, all);
                }
            }
            for (_, s) in activator.iter().filter(|(k, _)| *k == key) {
                rev.kpa.activator_reported(now, *s);
            }
            let ready_count = u32::try_from(ready.len()).unwrap_or(u32::MAX);
            let outcome = rev.kpa.run(now, ready_count, reachable);
            if outcome.is_some_and(|o| o.active == Active::TimedOut) && !rev.timed_out {
                rev.timed_out = !rev.ever_ready;
                events.push(format!(
                    "{key}: the target could not be activated (progress deadline and 30 s)"
                ));
            }
            let wanted = outcome.and_then(|o| o.replicas);
            if let (Some(n), None) = (wanted, &rev.failed) {
                if rev.applied != Some(n) {
                    let panicking = rev.kpa.decided().is_some_and(|d| d.panicking);
                    let from = rev.applied.map_or("start".to_owned(), |a| a.to_string());
                    events.push(format!(
                        "{key}: scaled {from} -> {n}{}",
                        if panicking { " (panic)" } else { "" }
                    ));
                    rev.applied = Some(n);
                }
                let n = n as usize;
                while rev.instances.len() > n {
                    // The newest not-ready one first, else the newest.
                    let i = rev
                        .instances
                        .iter()
                        .rposition(|r| !r.ready)
                        .unwrap_or(rev.instances.len() - 1);
                    to_stop.push(rev.instances.remove(i).instance);
                }
                while rev.instances.len() < n {
                    let Ok(spec) = &rev.instance else { break };
                    let name = format!("{}-{}", rev.name, self.next_instance);
                    self.next_instance += 1;
                    match Instance::start(spec, &name) {
                        Ok(instance) => rev.instances.push(Running {
                            instance,
                            ready: false,
                        }),
                        Err(e) => {
                            events.push(format!("{key}: {e}"));
                            rev.crashes += 1;
                            break;
                        }
                    }
                }
            }
            for instance in to_stop {
                self.stop(instance);
            }
        }
        for e in events {
            self.event(e);
        }
        self.last_scraped = now;
    }

    /// Some instance has started and is not ready yet.
    pub fn starting(&self) -> bool {
        self.revisions
            .values()
            .any(|r| r.instances.iter().any(|i| !i.ready))
    }

    /// Records an event for the operator's view and its log.
    fn event(&mut self, message: String) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            second: self.now,
            message: message.clone(),
        });
        self.unlogged.push(message);
    }

    /// The events since the last call, for the log.
    pub fn take_unlogged(&mut self) -> Vec<String> {
        std::mem::take(&mut self.unlogged)
    }

    /// Stops an instance in the background (its queue drains); [`Controller::shutdown`]
    /// waits for them all.
    fn stop(&mut self, instance: Instance) {
        self.stopping.retain(|t| !t.is_finished());
        self.stopping
            .push(std::thread::spawn(move || instance.stop(STOP_GRACE)));
    }

    /// Stops every instance and waits until all are gone.
    pub fn shutdown(&mut self) {
        let revisions = std::mem::take(&mut self.revisions);
        for rev in revisions.into_values() {
            for running in rev.instances {
                self.stop(running.instance);
            }
        }
        for t in self.stopping.drain(..) {
            let _ = t.join();
        }
    }

    /// Reconciles every Route and writes each Service's status: returns the objects the
    /// gateway serves. A Route whose traffic does not resolve keeps what it last programmed.
    pub fn reconcile(&mut self, private: Option<SocketAddr>) -> Snapshot {
        let states: BTreeMap<String, RevisionState> = self
            .revisions
            .values()
            .map(|rev| {
                let state = RevisionState {
                    configuration: rev.service.clone(),
                    service: Some(rev.service.clone()),
                    ready: health(rev).status(),
                    h2c: rev.spec.settings("spec").is_ok_and(|s| s.h2c),
                };
                (rev.name.clone(), state)
            })
            .collect();
        // Each Configuration's latest created, latest ready, and why its latest failed.
        let mut facts: BTreeMap<String, [Option<String>; 3]> = BTreeMap::new();
        let mut configurations = BTreeMap::new();
        for (key, config) in &self.configurations {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            let latest_ready = config
                .revisions
                .iter()
                .rev()
                .map(|(name, _)| name)
                .find(|name| states.get(*name).is_some_and(|s| s.ready == Status::True))
                .cloned();
            let latest_created = config.latest_created().map(str::to_owned);
            let latest_failed = latest_created
                .as_ref()
                .and_then(|n| self.revisions.get(&format!("{ns}/{n}")))
                .and_then(|r| health(r).failure().map(str::to_owned));
            let ready = match (&latest_ready, &latest_failed) {
                (None, Some(_)) => Status::False,
                (None, None) => Status::Unknown,
                (Some(_), _) => Status::True,
            };
            configurations.insert(
                name.to_owned(),
                ConfigurationState {
                    latest_ready: latest_ready.clone(),
                    ready,
                },
            );
            facts.insert(key.clone(), [latest_created, latest_ready, latest_failed]);
        }
        let mut routed = BTreeSet::new();
        for (key, svc) in &self.input.services {
            let name = &svc.metadata.name;
            let ns = &svc.metadata.namespace;
            let traffic = defaulted(&svc.spec.traffic, name);
            let mut net = self.input.network.clone();
            net.domain = if svc.cluster_local() {
                None
            } else {
                self.input.domains.for_labels(&svc.metadata.labels)
            };
            let flattened = flatten(&traffic, Some(name), &configurations, &states, |tag| {
                url(name, ns, tag, &net)
            });
            let duration = svc.rollout_duration(self.input.rollout_duration);
            let mut rolling = false;
            let error = match flattened {
                Ok((targets, _)) => {
                    let (targets, moving) = roll_out(
                        &mut self.rollouts,
                        key,
                        targets,
                        &states,
                        duration,
                        self.now,
                    );
                    rolling = moving;
                    let status = statuses(&targets, |tag| url(name, ns, tag, &net));
                    let mut labels = svc.metadata.labels.clone();
                    labels.insert("serving.knative.dev/service".into(), name.clone());
                    let route = Route {
                        name: name.clone(),
                        namespace: ns.clone(),
                        labels,
                        targets,
                        cluster_local: net.domain.is_none(),
                        ..Route::default()
                    };
                    let programmed = Programmed {
                        ingress: ingress(&route, &net),
                        traffic: status,
                    };
                    self.routes.insert(key.clone(), programmed);
                    None
                }
                Err(e) => Some(e),
            };
            let [created, ready, failed] = facts.remove(key).unwrap_or_default();
            let programmed = self.routes.get(key);
            // Routing state (§4.5): what the traffic names, pinned or programmed, and each
            // latest-revision target's latest created revision; kept while the Route is
            // neither Ready nor failed.
            for t in &traffic {
                match (&t.revision_name, t.latest_revision) {
                    (Some(r), Some(false)) => {
                        routed.insert(format!("{ns}/{r}"));
                    }
                    _ => {
                        routed.extend(created.iter().map(|r| format!("{ns}/{r}")));
                    }
                }
            }
            for t in programmed.iter().flat_map(|p| &p.traffic) {
                routed.insert(format!("{ns}/{}", t.revision_name));
            }
            if error.as_ref().is_some_and(|e| e.status == Status::Unknown) {
                let prefix = format!("{ns}/{name}-");
                routed.extend(
                    self.routed
                        .iter()
                        .filter(|r| r.starts_with(&prefix))
                        .cloned(),
                );
            }
            let status = service_status(
                self.generations.get(key).map_or(1, |g| g.0),
                &ConfigurationFacts {
                    latest_created: created.as_deref(),
                    latest_ready: ready.as_deref(),
                    latest_failed: failed.as_deref(),
                },
                &RouteFacts {
                    url: &url(name, ns, "", &net),
                    address: &format!("http://{name}.{ns}.svc.{}", net.cluster_domain),
                    error: error.as_ref(),
                    traffic: programmed.map(|p| p.traffic.as_slice()),
                    rolling,
                },
            );
            self.statuses.insert(
                key.clone(),
                ServiceView {
                    namespace: ns.clone(),
                    name: name.clone(),
                    status,
                    error: self.service_errors.get(key).cloned(),
                },
            );
        }
        for (key, rev) in &mut self.revisions {
            if rev.evaluated && routed.contains(key) != self.routed.contains(key) {
                rev.routing_state_modified = self.now;
            }
            rev.evaluated = true;
        }
        self.routed = routed;
        self.collect_garbage();
        let mut ingresses: Vec<KIngress> =
            self.routes.values().map(|p| p.ingress.clone()).collect();
        let mut placeholders = Vec::new();
        self.map_domains(private, &mut ingresses, &mut placeholders);
        let revisions: Vec<LocalRevision> = self
            .revisions
            .values()
            .map(|r| LocalRevision {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                spec: r.spec.clone(),
                instances: r
                    .instances
                    .iter()
                    .map(|i| (i.instance.endpoint, i.ready))
                    .collect(),
            })
            .collect();
        snapshot(&ingresses, &revisions, &placeholders)
    }

    /// Deletes the revisions `config-gc` says go (§1.9): with their instances, from their
    /// Configuration.
    fn collect_garbage(&mut self) {
        let mut doomed = Vec::new();
        for (key, config) in &self.configurations {
            let ns = key.split_once('/').map_or("", |(ns, _)| ns);
            let latest_ready = self
                .statuses
                .get(key)
                .and_then(|s| s.status.latest_ready_revision_name.clone());
            let candidates: Vec<Candidate> = config
                .revisions
                .iter()
                .filter_map(|(name, _)| {
                    let rev_key = format!("{ns}/{name}");
                    let r = self.revisions.get(&rev_key)?;
                    Some(Candidate {
                        name: rev_key.clone(),
                        created: r.created,
                        routing_state_modified: r.routing_state_modified,
                        reserve: r.evaluated && !self.routed.contains(&rev_key),
                        latest_ready: latest_ready.as_deref() == Some(name.as_str())
                            || config.latest_created() == Some(name.as_str()),
                        no_gc: r.no_gc,
                    })
                })
                .collect();
            for name in self.input.gc.collect(&candidates, self.now) {
                doomed.push((key.clone(), name));
            }
        }
        for (config, rev_key) in doomed {
            let Some(rev) = self.revisions.remove(&rev_key) else {
                continue;
            };
            if let Some(c) = self.configurations.get_mut(&config) {
                c.revisions.retain(|(name, _)| *name != rev.name);
            }
            self.event(format!("{rev_key}: deleted by config-gc"));
            for running in rev.instances {
                self.stop(running.instance);
            }
        }
    }

    /// Each DomainMapping's status, and for a Ready one its KIngress and the placeholder
    /// Service it leads through (§4.6).
    fn map_domains(
        &mut self,
        private: Option<SocketAddr>,
        ingresses: &mut Vec<KIngress>,
        placeholders: &mut Vec<Placeholder>,
    ) {
        let mut views = BTreeMap::new();
        let mut events = Vec::new();
        for (key, dm) in &self.input.mappings {
            let ns = &dm.metadata.namespace;
            let host = &dm.metadata.name;
            let r = &dm.spec.reference;
            let resolved = if r.kind != "Service" || r.api_version != "serving.knative.dev/v1" {
                Err(format!(
                    "knoxy local maps domains to serving.knative.dev/v1 Services, not {} {}",
                    r.api_version, r.kind
                ))
            } else {
                match self.statuses.get(&format!("{ns}/{}", r.name)) {
                    None => Err(format!(
                        "services.serving.knative.dev {:?} not found",
                        r.name
                    )),
                    Some(svc) => svc
                        .status
                        .address
                        .as_ref()
                        .map(|a| a.url.clone())
                        .ok_or_else(|| format!("address not set for Service {:?}", r.name)),
                }
            };
            let claimed_by = self.input.claims.get(host).cloned();
            if claimed_by.is_none() && !self.input.autocreate_claims {
                let why = unclaimed(host);
                if self
                    .mappings
                    .get(key)
                    .is_none_or(|v| v.error.as_ref() != Some(&why))
                {
                    events.push(format!("DomainMapping {key}: {why}"));
                }
            }
            let facts = Facts {
                claimed_by,
                autocreate: self.input.autocreate_claims,
                resolved: resolved.clone(),
                scheme: self.input.network.external_scheme.clone(),
            };
            let status = domainmapping::status(dm, &facts);
            let ready = status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == Status::True);
            if let (true, Ok(address), Some(private)) = (ready, &resolved, private) {
                ingresses.push(domainmapping::ingress(
                    dm,
                    address,
                    &self.input.network.ingress_class,
                ));
                placeholders.push(Placeholder {
                    namespace: ns.clone(),
                    name: r.name.clone(),
                    private,
                });
            }
            let error = (facts.claimed_by.is_none() && !facts.autocreate).then(|| unclaimed(host));
            views.insert(
                key.clone(),
                DomainMappingView {
                    namespace: ns.clone(),
                    name: host.clone(),
                    status,
                    error,
                },
            );
        }
        self.mappings = views;
        for e in events {
            self.event(e);
        }
    }

    /// The operator's view: each Service's status, each revision's instances and KPA, and
    /// the recent events.
    pub fn view(&self) -> View {
        let revisions = self
            .revisions
            .iter()
            .map(|(key, r)| {
                let ready = r.instances.iter().filter(|i| i.ready).count();
                let ready = u32::try_from(ready).unwrap_or(u32::MAX);
                let outcome = r.kpa.outcome();
                let activity = match outcome.map(|o| o.active) {
                    Some(Active::Ready) => Activity::Active,
                    Some(Active::Queued) | None => Activity::Queued,
                    Some(Active::NoTraffic) => Activity::NoTraffic,
                    Some(Active::TimedOut) => Activity::TimedOut,
                };
                let (metric, observed) = r.kpa.observed();
                let decided = r.kpa.decided();
                RevisionView {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    service: r.service.clone(),
                    routing_state: match (self.routed.contains(key), r.evaluated) {
                        (true, _) => "active",
                        (false, true) => "reserve",
                        (false, false) => "pending",
                    },
                    status: revision_status(&health(r), activity, ready, r.kpa.replicas()),
                    instances: r.instances.len(),
                    desired: decided.map(|d| d.desired),
                    metric: format!("{metric:?}").to_lowercase(),
                    stable: observed.map(|o| o.0),
                    panic: observed.map(|o| o.1),
                    panicking: decided.is_some_and(|d| d.panicking),
                    activator_in_path: outcome.is_some_and(|o| o.proxy),
                }
            })
            .collect();
        View {
            services: self.statuses.values().cloned().collect(),
            domain_mappings: self.mappings.values().cloned().collect(),
            revisions,
            events: self.events.iter().cloned().collect(),
        }
    }
}

/// Each `latestRevision` target of a Service's resolved traffic through its gradual
/// rollout at `now` (§4.4): the target split over the revisions still rolling; and whether
/// any is.
fn roll_out(
    rollouts: &mut BTreeMap<(String, Option<String>), Rollout>,
    service: &str,
    targets: Vec<Target>,
    states: &BTreeMap<String, RevisionState>,
    duration: f64,
    now: i64,
) -> (Vec<Target>, bool) {
    let now = now as f64;
    let mut out = Vec::new();
    let mut rolling = false;
    for t in targets {
        if t.configuration.is_none() {
            out.push(t);
            continue;
        }
        let r = rollouts
            .entry((service.to_owned(), t.tag.clone()))
            .or_insert_with(|| Rollout::settled(&t.revision, t.percent));
        if r.percent != t.percent {
            *r = Rollout::settled(&t.revision, t.percent);
        } else if r.newest() != t.revision {
            r.begin(&t.revision, duration, now, now);
        }
        r.advance(now);
        rolling |= r.in_progress();
        for (revision, percent) in &r.revisions {
            out.push(Target {
                revision: revision.clone(),
                percent: *percent,
                h2c: states.get(revision).is_some_and(|s| s.h2c),
                ..t.clone()
            });
        }
    }
    (out, rolling)
}

/// What a revision's containers have shown so far.
fn health(r: &Revision) -> Health {
    match (&r.failed, r.ever_ready) {
        (_, true) => Health::Healthy,
        // `initial-scale: 0` (allowed): no pod is needed to be Ready (§5 item 36).
        (None, false) if r.kpa.initial_scale() == 0 => Health::Healthy,
        (Some(why), false) => Health::Failed(why.clone()),
        (None, false) if r.timed_out => Health::NeverReady,
        (None, false) => Health::Deploying,
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}
