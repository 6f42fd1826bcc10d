//! Status as Knative's reconcilers write it (contract `autoscaler-local.md` §4.1-4.3, §5
//! items 15-20): a Revision's `Ready`/`Active` and replicas, a Configuration's `Ready`, a
//! Route's `AllTrafficAssigned`/`IngressReady`/`CertificateProvisioned`, and a Service's
//! `ConfigurationsReady`/`RoutesReady` mirroring them, with `Ready` their conjunction. Pure
//! functions of what the local loop knows; conditions sorted by type, as Knative keeps them.

use serde::Serialize;

use super::traffic::{Status, TrafficError, TrafficStatus};

/// One `status.conditions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: Status,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `status.address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub url: String,
}

/// A Service's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub observed_generation: u64,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_created_revision_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_ready_revision_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficStatus>,
    pub conditions: Vec<Condition>,
}

/// A Revision's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    pub actual_replicas: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<u32>,
    pub conditions: Vec<Condition>,
}

/// What is known of a revision's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Some instance has been ready.
    Healthy,
    /// None ready yet.
    Deploying,
    /// It failed before it was ready, with why.
    Failed(String),
    /// Its activation timed out before any instance was ready.
    NeverReady,
}

impl Health {
    /// Why it failed, for its Configuration's `RevisionFailed` message.
    pub fn failure(&self) -> Option<&str> {
        match self {
            Health::Failed(why) => Some(why),
            Health::NeverReady => Some(NEVER_READY),
            Health::Healthy | Health::Deploying => None,
        }
    }

    /// The revision's `Ready`.
    pub fn status(&self) -> Status {
        match self {
            Health::Healthy => Status::True,
            Health::Deploying => Status::Unknown,
            Health::Failed(_) | Health::NeverReady => Status::False,
        }
    }
}

const NEVER_READY: &str = "Initial scale was never achieved";

/// The KPA's `Active` condition, as the PodAutoscaler's scaler gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    Active,
    Queued,
    NoTraffic,
    TimedOut,
}

/// What a Configuration knows: its revisions by generation, their health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigurationFacts<'a> {
    pub latest_created: Option<&'a str>,
    pub latest_ready: Option<&'a str>,
    /// The latest created revision failed, with why.
    pub latest_failed: Option<&'a str>,
}

/// What a Route knows: its URLs and the last flattening of its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts<'a> {
    pub url: &'a str,
    /// `http://<route>.<ns>.svc.<cluster-domain>`.
    pub address: &'a str,
    /// This flattening's error, if any.
    pub error: Option<&'a TrafficError>,
    /// The traffic last programmed (kept through an error, as the KIngress is).
    pub traffic: Option<&'a [TrafficStatus]>,
    /// A gradual rollout is moving traffic.
    pub rolling: bool,
}

/// A Revision's status: `Ready` = `ResourcesAvailable` ∧ `ContainerHealthy`; `Active` is
/// informational.
pub fn revision_status(
    health: &Health,
    activity: Activity,
    ready_pods: u32,
    desired: Option<u32>,
) -> RevisionStatus {
    let (resources, container) = match health {
        Health::Healthy => (true_("ResourcesAvailable"), true_("ContainerHealthy")),
        Health::Deploying => (
            unknown("ResourcesAvailable", "Deploying", ""),
            unknown("ContainerHealthy", "Deploying", ""),
        ),
        Health::Failed(why) => (
            false_("ResourcesAvailable", "ExitCode", why),
            false_("ContainerHealthy", "ExitCode", why),
        ),
        Health::NeverReady => (
            false_(
                "ResourcesAvailable",
                "ProgressDeadlineExceeded",
                NEVER_READY,
            ),
            unknown("ContainerHealthy", "Deploying", ""),
        ),
    };
    let active = match activity {
        Activity::Active => true_("Active"),
        Activity::Queued => unknown(
            "Active",
            "Queued",
            "Requests to the target are being buffered as resources are provisioned.",
        ),
        Activity::NoTraffic => false_(
            "Active",
            "NoTraffic",
            "The target is not receiving traffic.",
        ),
        Activity::TimedOut => false_("Active", "TimedOut", "The target could not be activated."),
    };
    let ready = all("Ready", &[&resources, &container]);
    RevisionStatus {
        actual_replicas: ready_pods,
        desired_replicas: desired,
        conditions: sorted(vec![active, container, ready, resources]),
    }
}

/// A Configuration's `Ready`: True once the latest created revision is the latest ready;
/// False when it failed (the older ready one keeps serving).
pub fn configuration_ready(c: &ConfigurationFacts) -> Condition {
    match (c.latest_failed, c.latest_created) {
        (Some(why), Some(name)) => false_(
            "Ready",
            "RevisionFailed",
            &format!("Revision {name:?} failed with message: {why}."),
        ),
        _ if c.latest_created.is_some() && c.latest_created == c.latest_ready => true_("Ready"),
        _ => unknown("Ready", "", ""),
    }
}

/// A Route's `Ready` = `AllTrafficAssigned` ∧ `IngressReady` ∧ `CertificateProvisioned`
/// (the gateway serves a KIngress as soon as it is handed over; no TLS locally).
pub fn route_ready(r: &RouteFacts) -> Condition {
    let assigned = match r.error {
        None => true_("AllTrafficAssigned"),
        Some(e) => Condition {
            kind: "AllTrafficAssigned",
            status: e.status,
            reason: e.reason.to_owned(),
            message: e.message.clone(),
        },
    };
    let ingress = match r.traffic {
        Some(_) if r.rolling => unknown(
            "IngressReady",
            "RolloutInProgress",
            "A gradual rollout of the latest revision(s) is in progress.",
        ),
        Some(_) => true_("IngressReady"),
        None => unknown(
            "IngressReady",
            "IngressNotConfigured",
            "Ingress has not yet been reconciled.",
        ),
    };
    let cert = Condition {
        reason: "TLSNotEnabled".to_owned(),
        message: "external-domain-tls is not enabled".to_owned(),
        ..true_("CertificateProvisioned")
    };
    all("Ready", &[&assigned, &ingress, &cert])
}

/// A Service's status from its Configuration's and Route's.
pub fn service_status(
    generation: u64,
    config: &ConfigurationFacts,
    route: &RouteFacts,
) -> ServiceStatus {
    let configured = Condition {
        kind: "ConfigurationsReady",
        ..configuration_ready(config)
    };
    let routed = Condition {
        kind: "RoutesReady",
        ..route_ready(route)
    };
    let ready = all("Ready", &[&configured, &routed]);
    ServiceStatus {
        observed_generation: generation,
        url: route.url.to_owned(),
        // Set once the traffic first resolved.
        address: route.traffic.map(|_| Address {
            url: route.address.to_owned(),
        }),
        latest_created_revision_name: config.latest_created.map(str::to_owned),
        latest_ready_revision_name: config.latest_ready.map(str::to_owned),
        traffic: route.traffic.map(<[_]>::to_vec).unwrap_or_default(),
        conditions: sorted(vec![configured, ready, routed]),
    }
}

/// The conjunction of `parts` as Knative's condition sets compute it: the first False,
/// else the first Unknown (with its reason and message), else True.
pub(crate) fn all(kind: &'static str, parts: &[&Condition]) -> Condition {
    let worst = parts
        .iter()
        .find(|c| c.status == Status::False)
        .or_else(|| parts.iter().find(|c| c.status == Status::Unknown));
    match worst {
        Some(c) => Condition {
            kind,
            status: c.status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        },
        None => condition(kind, Status::True, "", ""),
    }
}

pub(crate) fn condition(
    kind: &'static str,
    status: Status,
    reason: &str,
    message: &str,
) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

fn true_(kind: &'static str) -> Condition {
    condition(kind, Status::True, "", "")
}

fn unknown(kind: &'static str, reason: &str, message: &str) -> Condition {
    condition(kind, Status::Unknown, reason, message)
}

fn false_(kind: &'static str, reason: &str, message: &str) -> Condition {
    condition(kind, Status::False, reason, message)
}

fn sorted(mut conditions: Vec<Condition>) -> Vec<Condition> {
    conditions.sort_by_key(|c| c.kind);
    conditions
}

#[cfg(test)]
mod tests;
