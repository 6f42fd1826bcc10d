//! `serving.knative.dev/v1` `Service` (contract `autoscaler-local.md` §4.1-4.2, §5 items
//! 1-9): the fields `knoxy local` reads, the webhook's checks in its words (every failure,
//! one per line), and the Configuration's revisions: a new one, `<service>-00001` onwards
//! (or the template's own name), each time the template changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::defaults::Defaults;
use super::traffic::{self, TrafficTarget};
use crate::kingress::ObjectMeta;
use crate::kpa::{AutoscalerConfig, Scaling};
use crate::revision::RevisionSpec;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

/// A misspelt field here (`trafic`) is an error, not a silent default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub template: Template,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
}

/// `spec.template`: a revision to be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: RevisionSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The Service (and Route) annotation that sets a gradual rollout's duration.
pub const ROLLOUT_DURATION: &str = "serving.knative.dev/rollout-duration";

/// The label that keeps a Service off the public domain.
pub const VISIBILITY_LABEL: &str = "networking.knative.dev/visibility";

impl Service {
    /// The webhook's checks; every failure, in Knative's words.
    pub fn validate(&self, autoscaler: &AutoscalerConfig, defaults: &Defaults) -> Vec<String> {
        let mut errors = Vec::new();
        let name = &self.metadata.name;
        if !traffic::dns1035(name) {
            errors.push(format!("invalid value: {name}: metadata.name"));
        }
        for key in self.metadata.annotations.keys() {
            if key.starts_with("autoscaling.knative.dev") {
                errors.push(format!(
                    "invalid key name {key:?}: metadata.annotations\nautoscaling annotations must be put under \"spec.template.metadata.annotations\" to work"
                ));
            }
        }
        if let Some(v) = self.metadata.annotations.get(ROLLOUT_DURATION) {
            if !crate::kpa::goparse::duration(v).is_ok_and(|d| !d.is_negative()) {
                errors.push(format!(
                    "invalid value: {v}: metadata.annotations.{ROLLOUT_DURATION}"
                ));
            }
        }
        let template = &self.spec.template;
        if let Some(byo) = &template.metadata.name {
            if !byo.starts_with(&format!("{name}-")) {
                errors.push(format!(
                    "invalid value: {byo:?} must have prefix \"{name}-\": spec.template.metadata.name"
                ));
            } else if !traffic::dns1035(byo) {
                errors.push(format!("invalid value: {byo}: spec.template.metadata.name"));
            }
        }
        if let Err(e) = Scaling::from_annotations(
            &template.metadata.annotations,
            autoscaler,
            "spec.template.metadata.annotations",
        ) {
            errors.extend(e);
        }
        errors.extend(defaults.validate(&template.spec, "spec.template.spec"));
        match template.spec.containers.as_slice() {
            [] => errors.push("missing field(s): spec.template.spec.containers".to_owned()),
            [first, ..] if first.image.is_empty() && first.command.is_empty() => {
                errors.push("missing field(s): spec.template.spec.containers[0].image".to_owned())
            }
            _ => {}
        }
        errors.extend(traffic::validate(&self.spec.traffic, "spec.traffic"));
        errors
    }

    /// Its gradual rollout's duration in seconds: the annotation, else `config`'s.
    pub fn rollout_duration(&self, config: i64) -> f64 {
        match self.metadata.annotations.get(ROLLOUT_DURATION) {
            Some(v) => crate::kpa::goparse::duration(v).map_or(0.0, |d| d.std().as_secs_f64()),
            None => config as f64,
        }
    }

    /// Labelled cluster-local: no public URL.
    pub fn cluster_local(&self) -> bool {
        self.metadata
            .labels
            .get(VISIBILITY_LABEL)
            .map(String::as_str)
            == Some("cluster-local")
    }
}

/// A Service's Configuration: its generation and the revisions its templates made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configuration {
    pub generation: u64,
    template: Option<Template>,
    /// (revision name, generation), oldest first.
    pub revisions: Vec<(String, u64)>,
}

impl Configuration {
    /// Applies the Service's current template: a changed template is a new generation and
    /// a new revision (a change to the Service's own labels or annotations is not). A
    /// changed template that keeps its own revision name is refused, as Knative refuses it.
    pub fn apply(&mut self, service: &str, template: &Template) -> Result<Option<String>, String> {
        if self.template.as_ref() == Some(template) {
            return Ok(None);
        }
        if let (Some(old), Some(name)) = (&self.template, &template.metadata.name) {
            if old.metadata.name.as_ref() == Some(name) {
                return Err(
                    "Saw the following changes without a name change (-old +new): spec.template"
                        .to_owned(),
                );
            }
        }
        self.generation += 1;
        let name = template
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| format!("{service}-{:05}", self.generation));
        if self.revisions.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "Revision creation failed with message: revisions.serving.knative.dev {name:?} already exists."
            ));
        }
        self.template = Some(template.clone());
        self.revisions.push((name.clone(), self.generation));
        Ok(Some(name))
    }

    /// The revision of the current generation (`latestCreatedRevisionName`).
    pub fn latest_created(&self) -> Option<&str> {
        self.revisions.last().map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests;
