//! What the operator sees of the controller: each Service's status, each revision's
//! instances, KPA and conditions, and the recent events.

use knoxy_control::kpa::scaler::Active;
use knoxy_control::serving::status::{revision_status, Activity, Health};

use super::{Controller, Revision};
use crate::view::{RevisionView, View};

impl Controller {
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

/// What a revision's containers have shown so far.
pub(super) fn health(r: &Revision) -> Health {
    match (&r.failed, r.ever_ready) {
        (_, true) => Health::Healthy,
        // `initial-scale: 0` (allowed): no pod is needed to be Ready (§5 item 36).
        (None, false) if r.kpa.initial_scale() == 0 => Health::Healthy,
        (Some(why), false) => Health::Failed(why.clone()),
        (None, false) if r.timed_out => Health::NeverReady,
        (None, false) => Health::Deploying,
    }
}
