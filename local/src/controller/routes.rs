//! The controller's Route side (contract `autoscaler-local.md` §4.3-4.6): each Service's
//! traffic resolved (through a gradual rollout) into its KIngress and status, routing state,
//! revision GC, and DomainMappings; what the gateway is handed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use knoxy_control::derive::Snapshot;
use knoxy_control::kingress::KIngress;
use knoxy_control::serving::domainmapping::{self, unclaimed, Facts};
use knoxy_control::serving::gc::Candidate;
use knoxy_control::serving::ingress::{ingress, invalid_host, url, Route, Target};
use knoxy_control::serving::rollout::Rollout;
use knoxy_control::serving::status::{service_status, ConfigurationFacts, RouteFacts};
use knoxy_control::serving::traffic::{
    defaulted, flatten, statuses, ConfigurationState, RevisionState, Status, TrafficError,
};

use super::{health, Controller, Programmed};
use crate::snapshot::{snapshot, LocalRevision, Placeholder};
use crate::view::{DomainMappingView, ServiceView};

impl Controller {
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
            let tags = |targets: &[Target]| -> Option<String> {
                let tags = targets.iter().filter_map(|t| t.tag.as_deref());
                invalid_host(name, ns, tags, &net)
            };
            let flattened = flattened.and_then(|(targets, status)| match tags(&targets) {
                None => Ok((targets, status)),
                Some(message) => Err(TrafficError {
                    status: Status::False,
                    reason: "ErrorConfig",
                    message,
                }),
            });
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
