//! `config-autoscaler` (contract `autoscaler-local.md` §1.2): Knative's keys, defaults,
//! parse errors and range checks, worded as Knative words them. Unknown keys and
//! `_example` are ignored; the first failing check is reported alone.

use std::collections::BTreeMap;

use super::goparse::{self, show, GoDuration};

/// The autoscaler's cluster-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    pub enable_scale_to_zero: bool,
    pub allow_zero_initial_scale: bool,
    pub pod_autoscaler_class: String,
    /// `container-concurrency-target-percentage` as a fraction in (0, 1].
    pub target_fraction: f64,
    pub container_concurrency_target_default: f64,
    pub rps_target_default: f64,
    pub target_burst_capacity: f64,
    pub stable_window: GoDuration,
    pub panic_window_percentage: f64,
    pub panic_threshold_percentage: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    pub activator_capacity: f64,
    pub initial_scale: i32,
    pub min_scale: i32,
    pub max_scale: i32,
    pub max_scale_limit: i32,
    pub scale_to_zero_grace_period: GoDuration,
    pub scale_to_zero_pod_retention_period: GoDuration,
    pub scale_down_delay: GoDuration,
}

/// The KPA class, Knative's default `pod-autoscaler-class`.
pub const KPA_CLASS: &str = "kpa.autoscaling.knative.dev";
/// The HPA class (not run by `knoxy local`).
pub const HPA_CLASS: &str = "hpa.autoscaling.knative.dev";
/// The smallest target Knative accepts.
pub const TARGET_MIN: f64 = 0.01;

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            enable_scale_to_zero: true,
            allow_zero_initial_scale: false,
            pod_autoscaler_class: KPA_CLASS.to_owned(),
            target_fraction: 0.7,
            container_concurrency_target_default: 100.0,
            rps_target_default: 200.0,
            target_burst_capacity: 211.0,
            stable_window: GoDuration::seconds(60),
            panic_window_percentage: 10.0,
            panic_threshold_percentage: 200.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            activator_capacity: 100.0,
            initial_scale: 1,
            min_scale: 0,
            max_scale: 0,
            max_scale_limit: 0,
            scale_to_zero_grace_period: GoDuration::seconds(30),
            scale_to_zero_pod_retention_period: GoDuration::ZERO,
            scale_down_delay: GoDuration::ZERO,
        }
    }
}

impl AutoscalerConfig {
    /// The ConfigMap's `data`: absent keys keep their defaults.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<AutoscalerConfig, String> {
        let mut c = AutoscalerConfig::default();
        let parsed = (|| {
            let get = |key: &str| data.get(key).map(|v| v.trim());
            macro_rules! field {
                ($key:literal, $parse:path, $slot:expr) => {
                    if let Some(v) = get($key) {
                        $slot =
                            $parse(v).map_err(|e| format!("failed to parse {:?}: {e}", $key))?;
                    }
                };
            }
            field!(
                "enable-scale-to-zero",
                goparse::boolean,
                c.enable_scale_to_zero
            );
            field!(
                "allow-zero-initial-scale",
                goparse::boolean,
                c.allow_zero_initial_scale
            );
            if let Some(v) = get("pod-autoscaler-class") {
                c.pod_autoscaler_class = v.to_owned();
            }
            let mut percentage = 70.0;
            field!(
                "container-concurrency-target-percentage",
                goparse::float,
                percentage
            );
            // Knative takes a value above 1 as a percentage, else as a fraction already.
            c.target_fraction = if percentage > 1.0 {
                percentage / 100.0
            } else {
                percentage
            };
            field!(
                "container-concurrency-target-default",
                goparse::float,
                c.container_concurrency_target_default
            );
            field!(
                "requests-per-second-target-default",
                goparse::float,
                c.rps_target_default
            );
            field!(
                "target-burst-capacity",
                goparse::float,
                c.target_burst_capacity
            );
            field!("stable-window", goparse::duration, c.stable_window);
            field!(
                "panic-window-percentage",
                goparse::float,
                c.panic_window_percentage
            );
            field!(
                "panic-threshold-percentage",
                goparse::float,
                c.panic_threshold_percentage
            );
            field!("max-scale-up-rate", goparse::float, c.max_scale_up_rate);
            field!("max-scale-down-rate", goparse::float, c.max_scale_down_rate);
            field!("activator-capacity", goparse::float, c.activator_capacity);
            field!("initial-scale", goparse::int32, c.initial_scale);
            field!("min-scale", goparse::int32, c.min_scale);
            field!("max-scale", goparse::int32, c.max_scale);
            field!("max-scale-limit", goparse::int32, c.max_scale_limit);
            field!(
                "scale-to-zero-grace-period",
                goparse::duration,
                c.scale_to_zero_grace_period
            );
            field!(
                "scale-to-zero-pod-retention-period",
                goparse::duration,
                c.scale_to_zero_pod_retention_period
            );
            field!("scale-down-delay", goparse::duration, c.scale_down_delay);
            Ok::<(), String>(())
        })();
        parsed.map_err(|e| format!("failed to parse data: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        let fail = |ok: bool, message: String| if ok { Ok(()) } else { Err(message) };
        fail(
            self.scale_to_zero_grace_period > GoDuration::ZERO,
            format!(
                "scale-to-zero-grace-period must be positive, was: {}",
                self.scale_to_zero_grace_period
            ),
        )?;
        fail(
            !self.scale_down_delay.is_negative(),
            format!(
                "scale-down-delay cannot be negative, was: {}",
                self.scale_down_delay
            ),
        )?;
        fail(
            self.scale_down_delay.whole_seconds(),
            format!(
                "scale-down-delay = {}, must be specified with at most second precision",
                self.scale_down_delay
            ),
        )?;
        fail(
            !self.scale_to_zero_pod_retention_period.is_negative(),
            format!(
                "scale-to-zero-pod-retention-period cannot be negative, was: {}",
                self.scale_to_zero_pod_retention_period
            ),
        )?;
        let tbc = self.target_burst_capacity;
        fail(
            tbc >= 0.0 || tbc == -1.0,
            format!("target-burst-capacity must be either non-negative or -1 (for unlimited), was: {tbc:.6}"),
        )?;
        fail(
            self.target_fraction > 0.0 && self.target_fraction <= 1.0,
            format!(
                "container-concurrency-target-percentage = {:.6} is outside of valid range of (0, 100]",
                self.target_fraction
            ),
        )?;
        let target = self.target_fraction * self.container_concurrency_target_default;
        fail(
            target >= TARGET_MIN,
            format!("container-concurrency-target-percentage and container-concurrency-target-default yield target concurrency of {}, can't be less than {}", show(target), show(TARGET_MIN)),
        )?;
        fail(
            self.rps_target_default >= TARGET_MIN,
            format!(
                "requests-per-second-target-default must be at least {}, was: {}",
                show(TARGET_MIN),
                show(self.rps_target_default)
            ),
        )?;
        fail(
            self.activator_capacity >= 1.0,
            format!(
                "activator-capacity = {}, must be at least 1",
                show(self.activator_capacity)
            ),
        )?;
        fail(
            self.max_scale_up_rate > 1.0,
            format!(
                "max-scale-up-rate = {}, must be greater than 1.0",
                show(self.max_scale_up_rate)
            ),
        )?;
        fail(
            self.max_scale_down_rate > 1.0,
            format!(
                "max-scale-down-rate = {}, must be greater than 1.0",
                show(self.max_scale_down_rate)
            ),
        )?;
        let window = self.stable_window;
        fail(
            window >= GoDuration::seconds(6) && window <= GoDuration::seconds(3600),
            format!("stable-window = {window}, must be in [6s; 1h0m0s] range"),
        )?;
        fail(
            window.whole_seconds(),
            format!("stable-window = {window}, must be specified with at most second precision"),
        )?;
        let pct = self.panic_window_percentage;
        fail(
            (1.0..=100.0).contains(&pct),
            format!(
                "panic-window-percentage = {}, must be in [1, 100] interval",
                show(pct)
            ),
        )?;
        fail(
            self.initial_scale >= 1 || (self.initial_scale == 0 && self.allow_zero_initial_scale),
            format!(
                "initial-scale = {}, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)",
                self.initial_scale
            ),
        )?;
        fail(
            self.min_scale >= 0,
            format!("min-scale = {}, must be at least 0", self.min_scale),
        )?;
        fail(
            self.max_scale_limit >= 0,
            format!(
                "max-scale-limit = {}, must be at least 0",
                self.max_scale_limit
            ),
        )?;
        let limit = self.max_scale_limit;
        let low = if limit > 0 { 1 } else { 0 };
        fail(
            self.max_scale >= 0 && (limit == 0 || (low..=limit).contains(&self.max_scale)),
            format!(
                "max-scale = {}, must be in [{low}, max-scale-limit({limit})] range",
                self.max_scale
            ),
        )?;
        fail(
            !(self.max_scale > 0 && self.min_scale > self.max_scale),
            format!(
                "min-scale ({}) must be less than max-scale ({})",
                self.min_scale, self.max_scale
            ),
        )?;
        Ok(())
    }

    /// The panic window: the stable window × the percentage, whole seconds, at least 1 s
    /// (Knative's `resources/metric.go`).
    pub fn panic_window(stable: GoDuration, percentage: f64) -> u32 {
        let seconds = stable.std().as_secs_f64() * percentage / 100.0;
        (seconds.round() as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::data;

    #[test]
    fn absent_keys_keep_knatives_defaults_and_unknown_ones_are_ignored() {
        let c =
            AutoscalerConfig::from_data(&data(&[("_example", "x"), ("nope", "1")])).expect("valid");
        assert_eq!(c, AutoscalerConfig::default());
        assert_eq!(c.stable_window.to_string(), "1m0s");
        assert_eq!(c.target_fraction, 0.7);
    }

    #[test]
    fn values_are_read_as_go_reads_them() {
        let c = AutoscalerConfig::from_data(&data(&[
            ("stable-window", "10s"),
            ("container-concurrency-target-percentage", "0.6"),
            ("enable-scale-to-zero", "False"),
            ("scale-down-delay", "1m"),
            ("max-scale", "5"),
            ("min-scale", "1"),
        ]))
        .expect("valid");
        assert_eq!(c.stable_window, GoDuration::seconds(10));
        assert_eq!(c.target_fraction, 0.6, "a fraction stays a fraction");
        assert!(!c.enable_scale_to_zero);
        assert_eq!(c.scale_down_delay, GoDuration::seconds(60));
        assert_eq!((c.min_scale, c.max_scale), (1, 5));
    }

    #[test]
    fn errors_are_worded_as_knatives() {
        for (pairs, want) in [
            (vec![("stable-window", "60")], "failed to parse data: failed to parse \"stable-window\": time: missing unit in duration \"60\""),
            (vec![("stable-window", "5s")], "stable-window = 5s, must be in [6s; 1h0m0s] range"),
            (vec![("stable-window", "2h")], "stable-window = 2h0m0s, must be in [6s; 1h0m0s] range"),
            (vec![("stable-window", "6500ms")], "stable-window = 6.5s, must be specified with at most second precision"),
            (vec![("max-scale-up-rate", "1")], "max-scale-up-rate = 1, must be greater than 1.0"),
            (vec![("target-burst-capacity", "-2")], "target-burst-capacity must be either non-negative or -1 (for unlimited), was: -2.000000"),
            (vec![("container-concurrency-target-percentage", "101")], "container-concurrency-target-percentage = 1.010000 is outside of valid range of (0, 100]"),
            (vec![("scale-to-zero-grace-period", "0s")], "scale-to-zero-grace-period must be positive, was: 0s"),
            (vec![("scale-down-delay", "-1s")], "scale-down-delay cannot be negative, was: -1s"),
            (vec![("initial-scale", "0")], "initial-scale = 0, must be at least 0 (or at least 1 when allow-zero-initial-scale is false)"),
            (vec![("min-scale", "5"), ("max-scale", "2")], "min-scale (5) must be less than max-scale (2)"),
            (vec![("max-scale-limit", "10"), ("max-scale", "11")], "max-scale = 11, must be in [1, max-scale-limit(10)] range"),
            (vec![("enable-scale-to-zero", "yes")], "failed to parse data: failed to parse \"enable-scale-to-zero\": strconv.ParseBool: parsing \"yes\": invalid syntax"),
            (vec![("activator-capacity", "0.5")], "activator-capacity = 0.5, must be at least 1"),
        ] {
            assert_eq!(
                AutoscalerConfig::from_data(&data(&pairs)).err().as_deref(),
                Some(want),
                "{pairs:?}"
            );
        }
        assert!(AutoscalerConfig::from_data(&data(&[
            ("initial-scale", "0"),
            ("allow-zero-initial-scale", "true")
        ]))
        .is_ok());
    }

    #[test]
    fn the_panic_window_is_a_share_of_the_stable_one_in_whole_seconds() {
        // Knative's metric_test.go: defaults 6 s; 10 s → 1 s; 10 min → 1 min; 51 % of 60 s → 31 s.
        let w = AutoscalerConfig::panic_window;
        assert_eq!(w(GoDuration::seconds(60), 10.0), 6);
        assert_eq!(w(GoDuration::seconds(10), 10.0), 1);
        assert_eq!(w(GoDuration::seconds(600), 10.0), 60);
        assert_eq!(w(GoDuration::seconds(60), 51.0), 31);
        assert_eq!(w(GoDuration::seconds(6), 1.0), 1, "at least a second");
    }
}
