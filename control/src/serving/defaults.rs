//! `config-defaults` (contract `autoscaler-local.md` §1.6): the revision timeouts and
//! containerConcurrency a template leaves unset, and the limits the webhook checks a
//! template against; parsed and checked in Knative's words, applied when a revision is made.

use std::collections::BTreeMap;

use crate::revision::{
    RevisionSpec, Settings, DEFAULT_TIMEOUT_SECONDS, MAX_CONTAINER_CONCURRENCY, MAX_TIMEOUT_SECONDS,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub revision_timeout_seconds: i64,
    pub max_revision_timeout_seconds: i64,
    pub revision_response_start_timeout_seconds: i64,
    /// 0: off.
    pub revision_idle_timeout_seconds: i64,
    pub container_concurrency: i64,
    pub container_concurrency_max_limit: i64,
    pub allow_container_concurrency_zero: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            revision_timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            max_revision_timeout_seconds: MAX_TIMEOUT_SECONDS,
            revision_response_start_timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            revision_idle_timeout_seconds: 0,
            container_concurrency: 0,
            container_concurrency_max_limit: MAX_CONTAINER_CONCURRENCY,
            allow_container_concurrency_zero: true,
        }
    }
}

impl Defaults {
    /// The ConfigMap's data over Knative's defaults; the first problem, in Knative's words.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Defaults, String> {
        let mut d = Defaults::default();
        let int = |key: &str, slot: &mut i64| -> Result<(), String> {
            if let Some(v) = data.get(key) {
                *slot = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("failed to parse {key:?}: {v:?} is not an integer"))?;
            }
            Ok(())
        };
        int("revision-timeout-seconds", &mut d.revision_timeout_seconds)?;
        int(
            "max-revision-timeout-seconds",
            &mut d.max_revision_timeout_seconds,
        )?;
        // The response-start timeout follows the timeout unless it is set.
        d.revision_response_start_timeout_seconds = d.revision_timeout_seconds;
        int(
            "revision-response-start-timeout-seconds",
            &mut d.revision_response_start_timeout_seconds,
        )?;
        int(
            "revision-idle-timeout-seconds",
            &mut d.revision_idle_timeout_seconds,
        )?;
        int("container-concurrency", &mut d.container_concurrency)?;
        int(
            "container-concurrency-max-limit",
            &mut d.container_concurrency_max_limit,
        )?;
        if let Some(v) = data.get("allow-container-concurrency-zero") {
            d.allow_container_concurrency_zero = crate::kpa::goparse::boolean(v)
                .map_err(|e| format!("allow-container-concurrency-zero: {e}"))?;
        }
        d.check()?;
        Ok(d)
    }

    fn check(&self) -> Result<(), String> {
        let timeout = self.revision_timeout_seconds;
        if timeout > self.max_revision_timeout_seconds {
            return Err(format!(
                "revision-timeout-seconds ({timeout}) cannot be greater than max-revision-timeout-seconds ({})",
                self.max_revision_timeout_seconds
            ));
        }
        for (key, value) in [
            (
                "revision-response-start-timeout-seconds",
                self.revision_response_start_timeout_seconds,
            ),
            (
                "revision-idle-timeout-seconds",
                self.revision_idle_timeout_seconds,
            ),
        ] {
            if value > 0 && value > timeout {
                return Err(format!(
                    "{key} ({value}) cannot be greater than revision-timeout-seconds ({timeout})"
                ));
            }
        }
        let limit = self.container_concurrency_max_limit;
        if limit < 1 {
            return Err(format!(
                "expected 1 <= {limit} <= 2147483647: container-concurrency-max-limit"
            ));
        }
        let cc = self.container_concurrency;
        if !(0..=limit).contains(&cc) {
            return Err(format!(
                "expected 0 <= {cc} <= {limit}: container-concurrency"
            ));
        }
        Ok(())
    }

    /// Knative's revision defaulting (on create): an unset or zero timeout takes the
    /// default; the response-start and idle defaults only when non-zero and strictly below
    /// the timeout; an unset containerConcurrency takes the default.
    pub fn apply(&self, spec: &mut RevisionSpec) {
        let timeout = match spec.timeout_seconds {
            None | Some(0) => self.revision_timeout_seconds,
            Some(t) => t,
        };
        spec.timeout_seconds = Some(timeout);
        for (slot, default) in [
            (
                &mut spec.response_start_timeout_seconds,
                self.revision_response_start_timeout_seconds,
            ),
            (
                &mut spec.idle_timeout_seconds,
                self.revision_idle_timeout_seconds,
            ),
        ] {
            if slot.is_none() && default != 0 && default < timeout {
                *slot = Some(default);
            }
        }
        if spec.container_concurrency.is_none() {
            spec.container_concurrency = Some(self.container_concurrency);
        }
    }

    /// The webhook's checks of a template's spec at `path`, under these limits.
    pub fn validate(&self, spec: &RevisionSpec, path: &str) -> Vec<String> {
        let mut errors: Vec<String> = self.settings(spec, path).err().into_iter().collect();
        if !self.allow_container_concurrency_zero && spec.container_concurrency == Some(0) {
            errors.push(format!(
                "expected 1 <= 0 <= {}: {path}.containerConcurrency",
                self.container_concurrency_max_limit
            ));
        }
        errors
    }

    /// The spec's settings under these limits.
    pub fn settings(&self, spec: &RevisionSpec, path: &str) -> Result<Settings, String> {
        spec.settings_within(
            path,
            self.max_revision_timeout_seconds,
            self.container_concurrency_max_limit,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::data;

    #[test]
    fn the_configmap_is_checked_in_knatives_words() {
        assert_eq!(Defaults::from_data(&data(&[])), Ok(Defaults::default()));
        let table = [
            (
                vec![("revision-timeout-seconds", "700")],
                "revision-timeout-seconds (700) cannot be greater than max-revision-timeout-seconds (600)",
            ),
            (
                vec![("revision-timeout-seconds", "100"), ("revision-idle-timeout-seconds", "200")],
                "revision-idle-timeout-seconds (200) cannot be greater than revision-timeout-seconds (100)",
            ),
            (
                vec![("container-concurrency", "2000")],
                "expected 0 <= 2000 <= 1000: container-concurrency",
            ),
            (
                vec![("container-concurrency-max-limit", "0")],
                "expected 1 <= 0 <= 2147483647: container-concurrency-max-limit",
            ),
        ];
        for (pairs, want) in table {
            assert_eq!(Defaults::from_data(&data(&pairs)), Err(want.to_owned()));
        }
        let d = Defaults::from_data(&data(&[("revision-timeout-seconds", "100")])).expect("valid");
        assert_eq!(d.revision_response_start_timeout_seconds, 100);
    }

    #[test]
    fn defaults_fill_a_new_revision_as_knative_does() {
        let mut spec = RevisionSpec::default();
        Defaults::default().apply(&mut spec);
        assert_eq!(spec.timeout_seconds, Some(300));
        // 300/300: the response-start default is not strictly below the timeout.
        assert_eq!(spec.response_start_timeout_seconds, None);
        assert_eq!(spec.container_concurrency, Some(0));
        let d = Defaults::from_data(&data(&[
            ("revision-response-start-timeout-seconds", "20"),
            ("revision-idle-timeout-seconds", "30"),
            ("container-concurrency", "5"),
        ]))
        .expect("valid");
        let mut spec = RevisionSpec {
            timeout_seconds: Some(25),
            ..RevisionSpec::default()
        };
        d.apply(&mut spec);
        assert_eq!(spec.response_start_timeout_seconds, Some(20));
        assert_eq!(spec.idle_timeout_seconds, None, "30 is not below 25");
        assert_eq!(spec.container_concurrency, Some(5));
    }

    #[test]
    fn templates_are_held_to_the_configured_limits() {
        let d = Defaults::from_data(&data(&[
            ("max-revision-timeout-seconds", "900"),
            ("allow-container-concurrency-zero", "false"),
        ]))
        .expect("valid");
        let path = "spec.template.spec";
        let long = RevisionSpec {
            timeout_seconds: Some(901),
            ..RevisionSpec::default()
        };
        assert_eq!(
            d.validate(&long, path),
            ["expected 0 <= 901 <= 900: spec.template.spec.timeoutSeconds"]
        );
        let allowed = RevisionSpec {
            timeout_seconds: Some(900),
            container_concurrency: Some(3),
            ..RevisionSpec::default()
        };
        assert!(d.validate(&allowed, path).is_empty());
        let zero = RevisionSpec {
            container_concurrency: Some(0),
            ..RevisionSpec::default()
        };
        assert_eq!(
            d.validate(&zero, path),
            ["expected 1 <= 0 <= 1000: spec.template.spec.containerConcurrency"]
        );
    }
}
