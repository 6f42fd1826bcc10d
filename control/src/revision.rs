//! `serving.knative.dev/v1` `Revision`, with the fields the gateway's activator role reads
//! (contract `ingress-activator.md` §4.7), and Knative's defaults and range checks for them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kingress::ObjectMeta;

/// `max-revision-timeout-seconds`' default: no revision may time out later.
pub const MAX_TIMEOUT_SECONDS: i64 = 600;
/// `revision-timeout-seconds`' default, for a revision that names none.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// `container-concurrency-max-limit`'s default.
pub const MAX_CONTAINER_CONCURRENCY: i64 = 1000;
/// The suffix of the Service that selects a revision's pods (`<rev>-private`).
pub const PRIVATE_SUFFIX: &str = "-private";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RevisionSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionSpec {
    #[serde(default)]
    pub container_concurrency: Option<i64>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub response_start_timeout_seconds: Option<i64>,
    #[serde(default)]
    pub idle_timeout_seconds: Option<i64>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

/// A container's environment variable (a literal value; `valueFrom` is not run locally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub container_port: Option<i64>,
}

/// What the throttler and the forwarder need of a revision, defaulted and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// 0: unlimited.
    pub container_concurrency: u32,
    /// The whole request, queueing included.
    pub timeout: Duration,
    /// Until the response head; None: off.
    pub response_start_timeout: Option<Duration>,
    /// Between writes of the response; None: off.
    pub idle_timeout: Option<Duration>,
    /// The user container speaks h2c (its port is named `h2c`).
    pub h2c: bool,
}

impl Revision {
    /// The revision's settings with Knative's defaults, or the first field out of range in
    /// the webhook's words (`expected 0 <= 601 <= 600: spec.timeoutSeconds`).
    pub fn settings(&self) -> Result<Settings, String> {
        self.spec.settings("spec")
    }
}

impl RevisionSpec {
    /// [`Revision::settings`] of a revision spec found at `path` (`spec.template.spec` in
    /// a Service).
    pub fn settings(&self, path: &str) -> Result<Settings, String> {
        self.settings_within(path, MAX_TIMEOUT_SECONDS, MAX_CONTAINER_CONCURRENCY)
    }

    /// [`RevisionSpec::settings`] under `config-defaults`' limits.
    pub fn settings_within(
        &self,
        path: &str,
        max_timeout: i64,
        max_cc: i64,
    ) -> Result<Settings, String> {
        let spec = self;
        let cc = in_range(
            spec.container_concurrency.unwrap_or(0),
            max_cc,
            &format!("{path}.containerConcurrency"),
        )?;
        let timeout = match spec.timeout_seconds {
            None | Some(0) => DEFAULT_TIMEOUT_SECONDS,
            Some(t) => in_range(t, max_timeout, &format!("{path}.timeoutSeconds"))?,
        };
        let optional = |value: Option<i64>, field: &str| -> Result<Option<Duration>, String> {
            match value {
                None | Some(0) => Ok(None),
                Some(t) => Ok(Some(secs(in_range(t, timeout, field)?))),
            }
        };
        Ok(Settings {
            container_concurrency: u32::try_from(cc).unwrap_or(u32::MAX),
            timeout: secs(timeout),
            response_start_timeout: optional(
                spec.response_start_timeout_seconds,
                &format!("{path}.responseStartTimeoutSeconds"),
            )?,
            idle_timeout: optional(
                spec.idle_timeout_seconds,
                &format!("{path}.idleTimeoutSeconds"),
            )?,
            h2c: spec
                .containers
                .iter()
                .flat_map(|c| c.ports.first())
                .next()
                .is_some_and(|p| p.name == "h2c"),
        })
    }
}

fn in_range(value: i64, max: i64, field: &str) -> Result<i64, String> {
    if (0..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("expected 0 <= {value} <= {max}: {field}"))
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(yaml: &str) -> Revision {
        serde_norway::from_str(yaml).expect("a revision")
    }

    #[test]
    fn knative_defaults_fill_what_is_unset() {
        let s = revision("metadata: {name: r}\nspec: {containers: [{image: x}]}")
            .settings()
            .expect("valid");
        assert_eq!(
            s,
            Settings {
                container_concurrency: 0,
                timeout: Duration::from_secs(300),
                response_start_timeout: None,
                idle_timeout: None,
                h2c: false,
            }
        );
    }

    #[test]
    fn fields_are_read_and_the_first_port_named_h2c_means_h2c() {
        let s = revision(
            "spec:\n  containerConcurrency: 10\n  timeoutSeconds: 60\n  responseStartTimeoutSeconds: 5\n  idleTimeoutSeconds: 30\n  containers: [{ports: [{name: h2c, containerPort: 8080}]}]",
        )
        .settings()
        .expect("valid");
        assert_eq!(s.container_concurrency, 10);
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.response_start_timeout, Some(Duration::from_secs(5)));
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
        assert!(s.h2c);
    }

    #[test]
    fn out_of_range_values_are_refused_in_the_webhooks_words() {
        for (spec, want) in [
            (
                "containerConcurrency: 1001",
                "expected 0 <= 1001 <= 1000: spec.containerConcurrency",
            ),
            (
                "containerConcurrency: -1",
                "expected 0 <= -1 <= 1000: spec.containerConcurrency",
            ),
            (
                "timeoutSeconds: 601",
                "expected 0 <= 601 <= 600: spec.timeoutSeconds",
            ),
            (
                "timeoutSeconds: 60, idleTimeoutSeconds: 61",
                "expected 0 <= 61 <= 60: spec.idleTimeoutSeconds",
            ),
            (
                "responseStartTimeoutSeconds: 9223372036854775807",
                "expected 0 <= 9223372036854775807 <= 300: spec.responseStartTimeoutSeconds",
            ),
        ] {
            let got = revision(&format!("spec: {{{spec}}}")).settings();
            assert_eq!(got, Err(want.to_owned()), "{spec}");
        }
    }
}
