//! `knoxy local`'s reconcile loop (contract `autoscaler-local.md` §2-4): each Service's
//! Configuration makes its revisions; each revision has its KPA and its instances; each
//! second the instances are supervised (a crash reported and replaced), scraped, and scaled
//! to what the KPA applies; the snapshot for the gateway is every Service's KIngress (its
//! traffic flattened to ready revisions), every revision, and its instances as endpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knoxy_control::derive::Snapshot;
use knoxy_control::kingress::KIngress;
use knoxy_control::kpa::{collector, RevisionScaler, Sample, Scaling};
use knoxy_control::revision::RevisionSpec;
use knoxy_control::serving::ingress::{ingress, Route};
use knoxy_control::serving::service::{Configuration, Service};
use knoxy_control::serving::traffic::{
    defaulted, flatten, ConfigurationState, RevisionState, Status, TrafficError,
};

use crate::input::Input;
use crate::scrape::scrape;
use crate::snapshot::{snapshot, LocalRevision};
use crate::supervisor::{Instance, InstanceSpec};

/// A revision whose instance crashes this many times before ever being ready has failed.
const CRASHES_TO_FAIL: u32 = 3;
/// How long a stopped instance's queue may drain.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub struct Controller {
    /// The `knoxy-queue` binary.
    queue: PathBuf,
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
}

struct Running {
    instance: Instance,
    ready: bool,
}

impl Controller {
    pub fn new(queue: PathBuf, search: Vec<PathBuf>) -> Controller {
        Controller {
            queue,
            search,
            input: Input::default(),
            configurations: BTreeMap::new(),
            service_errors: BTreeMap::new(),
            revisions: BTreeMap::new(),
            next_instance: 1,
            stopping: Vec::new(),
            last_scraped: i64::MIN,
        }
    }

    /// Applies a new reading of the inputs at second `now`: a changed template makes a new
    /// revision; a Service no longer there takes its revisions and instances with it.
    pub fn load(&mut self, input: Input, now: i64) {
        for (key, svc) in &input.services {
            let config = self.configurations.entry(key.clone()).or_default();
            match config.apply(&svc.metadata.name, &svc.spec.template) {
                Ok(Some(name)) => {
                    self.service_errors.remove(key);
                    let rev = self.new_revision(svc, &name, &input, now);
                    self.revisions
                        .insert(format!("{}/{name}", svc.metadata.namespace), rev);
                }
                Ok(None) => {
                    self.service_errors.remove(key);
                }
                Err(e) => {
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
            self.configurations.remove(&key);
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

    fn new_revision(&self, svc: &Service, name: &str, input: &Input, now: i64) -> Revision {
        let template = &svc.spec.template;
        let spec = template.spec.clone();
        let settings = spec.settings("spec").ok();
        let cc = settings.map_or(0, |s| s.container_concurrency);
        // Validated when read: a failure here falls back to the defaults.
        let scaling = Scaling::from_annotations(
            &template.metadata.annotations,
            &input.autoscaler,
            "spec.template.metadata.annotations",
        )
        .unwrap_or_default();
        let instance = self.instance_spec(svc, name, &spec, input);
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
            failed: None,
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
        let settings = spec.settings("spec")?;
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
        let keys: Vec<String> = self.revisions.keys().cloned().collect();
        for key in keys {
            let mut to_stop = Vec::new();
            let Some(rev) = self.revisions.get_mut(&key) else {
                continue;
            };
            // Supervise: a crashed instance is reported and dropped (the KPA's count brings
            // a new one); its readiness is the kubelet's probe through its queue.
            rev.instances.retain_mut(|r| match r.instance.exited() {
                Some(why) => {
                    eprintln!(
                        "knoxy local: {key}: instance {} stopped: {why}",
                        r.instance.name
                    );
                    if !rev.ever_ready {
                        rev.crashes += 1;
                    }
                    false
                }
                None => true,
            });
            if rev.crashes >= CRASHES_TO_FAIL && rev.failed.is_none() {
                rev.failed = Some(format!(
                    "the container exited {} times before it was ready",
                    rev.crashes
                ));
            }
            for r in rev.instances.iter_mut().filter(|r| !r.ready) {
                r.ready = r.instance.ready();
                rev.ever_ready |= r.ready;
            }
            // Scrape a sample of the ready instances, standing for all of them (once a
            // second: a step that an activator's report brought adds nothing twice).
            let ready: Vec<&Running> = rev.instances.iter().filter(|r| r.ready).collect();
            if now > self.last_scraped {
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
            let wanted = rev.kpa.run(now, ready_count, true).and_then(|o| o.replicas);
            if let (Some(n), None) = (wanted, &rev.failed) {
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
                            eprintln!("knoxy local: {key}: {e}");
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
        self.last_scraped = now;
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

    /// The objects the gateway serves, and each Service's traffic error if any.
    pub fn snapshot(&self) -> (Snapshot, BTreeMap<String, TrafficError>) {
        let mut configurations = BTreeMap::new();
        let mut states = BTreeMap::new();
        for rev in self.revisions.values() {
            let ready = match (&rev.failed, rev.ever_ready) {
                (Some(_), false) => Status::False,
                (_, true) => Status::True,
                (None, false) => Status::Unknown,
            };
            states.insert(
                rev.name.clone(),
                RevisionState {
                    configuration: rev.service.clone(),
                    service: Some(rev.service.clone()),
                    ready,
                    h2c: rev.spec.settings("spec").is_ok_and(|s| s.h2c),
                },
            );
        }
        for (key, config) in &self.configurations {
            let latest_ready = config
                .revisions
                .iter()
                .rev()
                .map(|(name, _)| name)
                .find(|name| states.get(*name).is_some_and(|s| s.ready == Status::True))
                .cloned();
            let latest_failed = config
                .latest_created()
                .and_then(|n| states.get(n))
                .is_some_and(|s| s.ready == Status::False);
            let ready = match (&latest_ready, latest_failed) {
                (None, true) => Status::False,
                (None, false) => Status::Unknown,
                (Some(_), _) => Status::True,
            };
            let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
            configurations.insert(
                name.to_owned(),
                ConfigurationState {
                    latest_ready,
                    ready,
                },
            );
        }
        let mut ingresses: Vec<KIngress> = Vec::new();
        let mut errors = BTreeMap::new();
        for (key, svc) in &self.input.services {
            let name = &svc.metadata.name;
            let traffic = defaulted(&svc.spec.traffic, name);
            let mut net = self.input.network.clone();
            net.domain = if svc.cluster_local() {
                None
            } else {
                self.input.domains.for_labels(&svc.metadata.labels)
            };
            let tag_url = |tag: &str| match &net.domain {
                Some(d) => format!("http://{tag}-{name}.{}.{d}", svc.metadata.namespace),
                None => format!(
                    "http://{tag}-{name}.{}.svc.{}",
                    svc.metadata.namespace, net.cluster_domain
                ),
            };
            match flatten(&traffic, Some(name), &configurations, &states, tag_url) {
                Ok((targets, _status)) => {
                    let mut labels = svc.metadata.labels.clone();
                    labels.insert("serving.knative.dev/service".into(), name.clone());
                    let route = Route {
                        name: name.clone(),
                        namespace: svc.metadata.namespace.clone(),
                        labels,
                        targets,
                        cluster_local: net.domain.is_none(),
                        ..Route::default()
                    };
                    ingresses.push(ingress(&route, &net));
                }
                Err(e) => {
                    errors.insert(key.clone(), e);
                }
            }
        }
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
        (snapshot(&ingresses, &revisions), errors)
    }

    /// (revision key, instances, ready instances, desired) for the operator's view.
    pub fn revisions(&self) -> Vec<(String, usize, usize, Option<u32>)> {
        self.revisions
            .iter()
            .map(|(k, r)| {
                let ready = r.instances.iter().filter(|i| i.ready).count();
                (
                    k.clone(),
                    r.instances.len(),
                    ready,
                    r.kpa.decided().map(|d| d.desired),
                )
            })
            .collect()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}
