//! A Route's traffic (contract `autoscaler-local.md` §4.1 defaulting, §4.3): validated in
//! Knative's words, then flattened to revisions: a `latestRevision` target takes its
//! configuration's latest ready revision, a pinned one must exist, be ready and belong to
//! the Route's Service. The result is what the KIngress is built from, and the Route's
//! `status.traffic`. Errors are the `AllTrafficAssigned` condition Knative would set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ingress::Target;

/// A `spec.traffic` entry, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A `status.traffic` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub revision_name: String,
    pub percent: i64,
    pub latest_revision: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    True,
    False,
    Unknown,
}

/// Why traffic could not be assigned (the `AllTrafficAssigned` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficError {
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

/// What the flattening knows of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigurationState {
    pub latest_ready: Option<String>,
    /// Its `Ready`: False when its latest revision failed and none is ready.
    pub ready: Status,
}

/// What the flattening knows of a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionState {
    pub configuration: String,
    /// The Service it belongs to (its `serving.knative.dev/service` label).
    pub service: Option<String>,
    pub ready: Status,
    pub h2c: bool,
}

/// Knative's defaulting for a Service's traffic: none means all to the latest revision;
/// `latestRevision` is whether no revision is named; `configurationName` is the Service's.
pub fn defaulted(traffic: &[TrafficTarget], service: &str) -> Vec<TrafficTarget> {
    if traffic.is_empty() {
        return vec![TrafficTarget {
            configuration_name: Some(service.to_owned()),
            latest_revision: Some(true),
            percent: Some(100),
            ..TrafficTarget::default()
        }];
    }
    traffic
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.latest_revision
                .get_or_insert(t.revision_name.as_deref().is_none_or(str::is_empty));
            t.percent.get_or_insert(0);
            if t.revision_name.is_none() && t.configuration_name.is_none() {
                t.configuration_name = Some(service.to_owned());
            }
            t
        })
        .collect()
}

/// The webhook's checks of a Service's `spec.traffic` (as written), every failure.
pub fn validate(traffic: &[TrafficTarget], path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut tags: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut sum = 0;
    for (i, t) in traffic.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if t.configuration_name.is_some() {
            errors.push(format!("must not set the field(s): {at}.configurationName"));
        }
        if t.url.is_some() {
            errors.push(format!("must not set the field(s): {at}.url"));
        }
        if let (Some(name), Some(true)) = (&t.revision_name, t.latest_revision) {
            errors.push(format!(
                "may not set revisionName {name:?} when latestRevision is true: {at}.latestRevision"
            ));
        }
        match t.percent {
            Some(p) if !(0..=100).contains(&p) => {
                errors.push(format!("expected 0 <= {p} <= 100: {at}.percent"))
            }
            Some(p) => sum += p,
            None => {}
        }
        if let Some(tag) = &t.tag {
            if !dns1035(tag) {
                errors.push(format!("invalid value: {tag}: {at}.tag"));
            }
            tags.entry(tag).or_default().push(i);
        }
    }
    for (tag, at) in tags.into_iter().filter(|(_, at)| at.len() > 1) {
        let paths: Vec<String> = at.iter().map(|i| format!("{path}[{i}].tag")).collect();
        errors.push(format!(
            "Multiple definitions for {tag:?}: {}",
            paths.join(", ")
        ));
    }
    if !traffic.is_empty() && sum != 100 {
        errors.push(format!("Traffic targets sum to {sum}, want 100: {path}"));
    }
    errors
}

/// The defaulted traffic of Route `route` (of Service `service`), resolved to revisions:
/// the KIngress targets and `status.traffic` (tag URLs from `tag_url`). Every entry is
/// visited; a failure beats a revision not ready yet.
pub fn flatten(
    traffic: &[TrafficTarget],
    service: Option<&str>,
    configurations: &BTreeMap<String, ConfigurationState>,
    revisions: &BTreeMap<String, RevisionState>,
    tag_url: impl Fn(&str) -> String,
) -> Result<(Vec<Target>, Vec<TrafficStatus>), TrafficError> {
    let mut targets = Vec::new();
    let mut worst: Option<TrafficError> = None;
    let mut fail = |e: TrafficError| {
        if worst
            .as_ref()
            .is_none_or(|w| w.status == Status::Unknown && e.status == Status::False)
        {
            worst = Some(e);
        }
    };
    for t in traffic {
        let latest = t.latest_revision.unwrap_or(false);
        let resolved = match (&t.revision_name, &t.configuration_name) {
            (Some(name), _) if !latest => pinned(name, service, revisions),
            (_, Some(config)) => latest_of(config, configurations, revisions),
            _ => continue,
        };
        match resolved {
            Ok(revision) => {
                let state = &revisions[&revision];
                targets.push(Target {
                    tag: t.tag.clone(),
                    configuration: latest.then(|| state.configuration.clone()),
                    revision,
                    percent: t.percent.unwrap_or(0),
                    h2c: state.h2c,
                });
            }
            Err(e) => fail(e),
        }
    }
    if let Some(e) = worst {
        return Err(e);
    }
    let status = statuses(&targets, tag_url);
    Ok((targets, status))
}

/// `status.traffic` of resolved targets: one entry per (tag, revision, latestRevision), in
/// order, percents summed; tagged ones with their URL.
pub fn statuses(targets: &[Target], tag_url: impl Fn(&str) -> String) -> Vec<TrafficStatus> {
    let mut status: Vec<TrafficStatus> = Vec::new();
    for t in targets {
        let latest = t.configuration.is_some();
        match status.iter_mut().find(|s| {
            s.tag == t.tag && s.revision_name == t.revision && s.latest_revision == latest
        }) {
            Some(same) => same.percent += t.percent,
            None => status.push(TrafficStatus {
                tag: t.tag.clone(),
                revision_name: t.revision.clone(),
                percent: t.percent,
                latest_revision: latest,
                url: t.tag.as_deref().map(&tag_url),
            }),
        }
    }
    status
}

fn pinned(
    name: &str,
    service: Option<&str>,
    revisions: &BTreeMap<String, RevisionState>,
) -> Result<String, TrafficError> {
    let missing = |status, message| TrafficError {
        status,
        reason: "RevisionMissing",
        message,
    };
    let Some(rev) = revisions.get(name) else {
        return Err(missing(
            Status::False,
            format!("Revision {name:?} referenced in traffic not found."),
        ));
    };
    if let Some(service) = service {
        if rev.service.as_deref() != Some(service) {
            let message = match &rev.service {
                Some(other) => format!(
                    "Revision {name:?} belongs to Service {other:?}, not Service {service:?}."
                ),
                None => format!("Revision {name:?} does not belong to Service {service:?}."),
            };
            return Err(TrafficError {
                status: Status::False,
                reason: "RevisionNotOwned",
                message,
            });
        }
    }
    match rev.ready {
        Status::True => Ok(name.to_owned()),
        Status::Unknown => Err(missing(
            Status::Unknown,
            format!("Revision {name:?} is not yet ready."),
        )),
        Status::False => Err(missing(
            Status::False,
            format!("Revision {name:?} failed to become ready."),
        )),
    }
}

fn latest_of(
    config: &str,
    configurations: &BTreeMap<String, ConfigurationState>,
    revisions: &BTreeMap<String, RevisionState>,
) -> Result<String, TrafficError> {
    let missing = |status, reason, message| TrafficError {
        status,
        reason,
        message,
    };
    let Some(c) = configurations.get(config) else {
        return Err(missing(
            Status::False,
            "ConfigurationMissing",
            format!("Configuration {config:?} referenced in traffic not found."),
        ));
    };
    let ready = c
        .latest_ready
        .as_ref()
        .filter(|r| revisions.get(*r).is_some_and(|r| r.ready == Status::True));
    match (ready, c.ready) {
        (Some(r), _) => Ok(r.clone()),
        (None, Status::False) => Err(missing(
            Status::False,
            "RevisionMissing",
            format!("Configuration {config:?} does not have any ready Revision."),
        )),
        (None, _) => Err(missing(
            Status::Unknown,
            "RevisionMissing",
            format!("Configuration {config:?} is waiting for a Revision to become ready."),
        )),
    }
}

/// A DNS-1035 label: lower-case letters, digits and '-', starting with a letter, ending
/// with a letter or digit, at most 63 characters.
pub fn dns1035(s: &str) -> bool {
    label(s, u8::is_ascii_lowercase)
}

/// A DNS-1123 label: as DNS-1035, but it may start with a digit.
pub fn dns1123(s: &str) -> bool {
    label(s, u8::is_ascii_alphanumeric)
}

fn label(s: &str, first: fn(&u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && first(&b[0])
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

#[cfg(test)]
mod tests;
