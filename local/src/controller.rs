//! `knoxy local`'s reconcile loop (contract `autoscaler-local.md` §2-4): each Service's
//! Configuration makes its revisions; each revision has its KPA and its instances; each
//! second the instances are supervised (a crash reported and replaced), scraped, and scaled
//! to what the KPA applies; the snapshot for the gateway is every Service's KIngress (its
//! traffic flattened to ready revisions), every revision, and its instances as endpoints
//! (`routes`); the operator's view of it all (`operator`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use knoxy_control::kingress::KIngress;
use knoxy_control::kpa::config::HPA_CLASS;
use knoxy_control::kpa::scaler::Active;
use knoxy_control::kpa::{collector, RevisionScaler, Sample, Scaling};
use knoxy_control::revision::RevisionSpec;
use knoxy_control::serving::gc::NO_GC;
use knoxy_control::serving::rollout::Rollout;
use knoxy_control::serving::service::{Configuration, Service, ServiceSpec};
use knoxy_control::serving::traffic::TrafficStatus;

use crate::input::Input;
use crate::scrape::scrape;
use crate::supervisor::{Instance, InstanceSpec};
use crate::view::{DomainMappingView, Event, ServiceView};

mod operator;
mod routes;

use operator::health;

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
            // Supervise: a crashed instance is reported and dropped (the count applied brings
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
            // Without a decision (no data yet), the count last applied holds, as a
            // Deployment's does: an instance that died before it was ready is started again.
            let wanted = outcome.and_then(|o| o.replicas).or(rev.applied);
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
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}
