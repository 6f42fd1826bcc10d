//! A revision's `autoscaling.knative.dev/*` annotations (contract `autoscaler-local.md`
//! §1.3, §1.5): validated as Knative's webhook validates them, with its wording (every
//! failure, one per line), then turned with `config-autoscaler` into the decider's [`Spec`]
//! and the KPA's bounds (§2.4, §2.6).

use std::collections::BTreeMap;

use super::buckets::Algorithm;
use super::config::{AutoscalerConfig, HPA_CLASS, KPA_CLASS, TARGET_MIN};
use super::decider::Spec;
use super::goparse::{self, show, GoDuration};

const PREFIX: &str = "autoscaling.knative.dev/";

/// What the autoscaler scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Concurrency,
    Rps,
}

/// A revision's autoscaling annotations, parsed; None: the ConfigMap's value applies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scaling {
    pub class: Option<String>,
    pub metric: Option<Metric>,
    pub target: Option<f64>,
    pub target_utilization_percentage: Option<f64>,
    pub target_burst_capacity: Option<f64>,
    pub min_scale: Option<i32>,
    pub max_scale: Option<i32>,
    pub initial_scale: Option<i32>,
    pub activation_scale: Option<i32>,
    pub window: Option<GoDuration>,
    pub panic_window_percentage: Option<f64>,
    pub panic_threshold_percentage: Option<f64>,
    pub scale_down_delay: Option<GoDuration>,
    pub scale_to_zero_pod_retention_period: Option<GoDuration>,
    pub algorithm: Option<Algorithm>,
    /// `serving.knative.dev/progress-deadline`.
    pub progress_deadline: Option<GoDuration>,
}

/// The annotation that bounds a revision's activation.
pub const PROGRESS_DEADLINE: &str = "serving.knative.dev/progress-deadline";
/// config-deployment's default `progress-deadline`.
pub const DEFAULT_PROGRESS_DEADLINE: GoDuration = GoDuration::seconds(600);

/// What the KPA applies around the decider (§2.6).
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub min: u32,
    /// 0: no limit.
    pub max: u32,
    pub initial: u32,
    pub stable_window: u32,
    pub panic_window: u32,
    pub retention: GoDuration,
    pub grace: GoDuration,
    pub scale_to_zero: bool,
    /// How long a revision may take to activate (`serving.knative.dev/progress-deadline`,
    /// else config-deployment's `progress-deadline`, 600 s).
    pub progress_deadline: GoDuration,
}

impl Scaling {
    /// Parses and validates `annotations` (every key, not only autoscaling ones); errors
    /// name the annotation under `path` (e.g. `spec.template.metadata.annotations`).
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        config: &AutoscalerConfig,
        path: &str,
    ) -> Result<Scaling, Vec<String>> {
        let mut errors = Vec::new();
        let field = |key: &str| format!("{path}.{PREFIX}{key}");
        // The kebab-case key wins over its old camelCase alias.
        let get = |key: &str, alias: Option<&str>| {
            annotations
                .get(&format!("{PREFIX}{key}"))
                .or_else(|| alias.and_then(|a| annotations.get(&format!("{PREFIX}{a}"))))
                .map(String::as_str)
        };
        let mut s = Scaling::default();
        let invalid = |key: &str, value: &str, errors: &mut Vec<String>| {
            errors.push(format!("invalid value: {value}: {}", field(key)));
        };

        if let Some(class) = get("class", None) {
            if class.ends_with(".knative.dev") && class != KPA_CLASS && class != HPA_CLASS {
                invalid("class", class, &mut errors);
            }
            s.class = Some(class.to_owned());
        }
        let class = s
            .class
            .clone()
            .unwrap_or_else(|| config.pod_autoscaler_class.clone());
        if let Some(metric) = get("metric", None) {
            match (class.as_str(), metric) {
                (KPA_CLASS, "concurrency") => s.metric = Some(Metric::Concurrency),
                (KPA_CLASS, "rps") => s.metric = Some(Metric::Rps),
                (KPA_CLASS, _) | (HPA_CLASS, "") => invalid("metric", metric, &mut errors),
                _ => {}
            }
        }
        let float = |key: &str, alias: Option<&str>, errors: &mut Vec<String>| {
            let v = get(key, alias)?;
            match goparse::float(v) {
                Ok(f) => Some(f),
                Err(_) => {
                    errors.push(format!("invalid value: {v}: {}", field(key)));
                    None
                }
            }
        };
        let within = |key: &str, v: f64, lo: f64, hi: f64, errors: &mut Vec<String>| {
            if !(lo..=hi).contains(&v) {
                errors.push(format!(
                    "expected {} <= {} <= {}: {}",
                    show(lo),
                    show(v),
                    show(hi),
                    field(key)
                ));
            }
        };
        if let Some(t) = float("target", None, &mut errors) {
            if t < TARGET_MIN {
                errors.push(format!(
                    "target {} should be at least {}: {}",
                    show(t),
                    show(TARGET_MIN),
                    field("target")
                ));
            }
            s.target = Some(t);
        }
        if let Some(u) = float(
            "target-utilization-percentage",
            Some("targetUtilizationPercentage"),
            &mut errors,
        ) {
            within("target-utilization-percentage", u, 1.0, 100.0, &mut errors);
            s.target_utilization_percentage = Some(u);
        }
        if let Some(tbc) = float(
            "target-burst-capacity",
            Some("targetBurstCapacity"),
            &mut errors,
        ) {
            if tbc < 0.0 && tbc != -1.0 {
                invalid("target-burst-capacity", &show(tbc), &mut errors);
            }
            s.target_burst_capacity = Some(tbc);
        }
        if let Some(p) = float(
            "panic-window-percentage",
            Some("panicWindowPercentage"),
            &mut errors,
        ) {
            within("panic-window-percentage", p, 1.0, 100.0, &mut errors);
            s.panic_window_percentage = Some(p);
        }
        if let Some(p) = float(
            "panic-threshold-percentage",
            Some("panicThresholdPercentage"),
            &mut errors,
        ) {
            within("panic-threshold-percentage", p, 110.0, 1000.0, &mut errors);
            s.panic_threshold_percentage = Some(p);
        }

        let int = |key: &str, alias: Option<&str>, errors: &mut Vec<String>| {
            let v = get(key, alias)?;
            match goparse::int32(v) {
                Ok(i) => Some(i),
                Err(_) => {
                    errors.push(format!("invalid value: {v}: {}", field(key)));
                    None
                }
            }
        };
        s.min_scale = int("min-scale", Some("minScale"), &mut errors);
        s.max_scale = int("max-scale", Some("maxScale"), &mut errors);
        for (key, v) in [("min-scale", s.min_scale), ("max-scale", s.max_scale)] {
            if let Some(v) = v.filter(|v| *v < 0) {
                errors.push(format!("expected 0 <= {v} <= 2147483647: {}", field(key)));
            }
        }
        let (min, max) = (s.min_scale.unwrap_or(0), s.max_scale.unwrap_or(0));
        if max != 0 && min > max && min >= 0 {
            errors.push(format!(
                "max-scale={max} is less than min-scale={min}: {}, {}",
                field("max-scale"),
                field("min-scale")
            ));
        }
        let limit = config.max_scale_limit;
        if limit > 0 {
            match s.max_scale {
                Some(0) => errors.push(format!(
                    "max-scale=0 (unlimited), must be less than {limit}: {}",
                    field("max-scale")
                )),
                Some(m) if m > limit => errors.push(format!(
                    "expected 1 <= {m} <= {limit}: {}",
                    field("max-scale")
                )),
                _ => {}
            }
        }
        if let Some(i) = int("initial-scale", Some("initialScale"), &mut errors) {
            if i < 0 {
                errors.push(format!(
                    "invalid value: {i}: {}/initial-scale must be greater than 0",
                    field("initial-scale")
                ));
            } else if i == 0 && !config.allow_zero_initial_scale {
                errors.push(format!(
                    "invalid value: 0: {}/initial-scale=0 not allowed by cluster",
                    field("initial-scale")
                ));
            }
            s.initial_scale = Some(i);
        }
        if let Some(a) = int("activation-scale", None, &mut errors) {
            let key = field("activation-scale");
            if a < 2 {
                errors.push(format!(
                    "activation-scale={a} must be greater than 1: {key}"
                ));
            } else if min > a {
                errors.push(format!(
                    "min-scale={min} is greater than activation-scale={a}: {key}"
                ));
            } else if max > 0 && max < a {
                errors.push(format!(
                    "max-scale={max} is less than activation-scale={a}: {key}"
                ));
            }
            s.activation_scale = Some(a);
        }

        let duration = |key: &str, alias: Option<&str>, errors: &mut Vec<String>| {
            let v = get(key, alias)?;
            match goparse::duration(v) {
                Ok(d) => Some((d, v)),
                Err(_) => {
                    errors.push(format!("invalid value: {v}: {}", field(key)));
                    None
                }
            }
        };
        // Knative quotes the value as written (`311m`), the bounds as Go prints them.
        let between = |key: &str,
                       (d, raw): (GoDuration, &str),
                       lo: GoDuration,
                       hi: GoDuration,
                       errors: &mut Vec<String>| {
            if d < lo || d > hi {
                errors.push(format!("expected {lo} <= {raw} <= {hi}: {}", field(key)));
            }
        };
        let hour = GoDuration::seconds(3600);
        if let Some(w) = duration("window", None, &mut errors) {
            between("window", w, GoDuration::seconds(6), hour, &mut errors);
            if !w.0.whole_seconds() {
                errors.push(format!(
                    "must be specified with at most second precision: {}",
                    field("window")
                ));
            }
            s.window = Some(w.0);
        }
        if let Some(d) = duration("scale-down-delay", Some("scaleDownDelay"), &mut errors) {
            between("scale-down-delay", d, GoDuration::ZERO, hour, &mut errors);
            if !d.0.whole_seconds() {
                errors.push(format!(
                    "must be specified with at most second precision: {}",
                    field("scale-down-delay")
                ));
            }
            s.scale_down_delay = Some(d.0);
        }
        if let Some(d) = duration(
            "scale-to-zero-pod-retention-period",
            Some("scaleToZeroPodRetentionPeriod"),
            &mut errors,
        ) {
            between(
                "scale-to-zero-pod-retention-period",
                d,
                GoDuration::ZERO,
                hour,
                &mut errors,
            );
            s.scale_to_zero_pod_retention_period = Some(d.0);
        }
        if let Some(v) = annotations.get(PROGRESS_DEADLINE) {
            match goparse::duration(v) {
                Ok(d) if !d.is_negative() && d.whole_seconds() => s.progress_deadline = Some(d),
                _ => errors.push(format!("invalid value: {v}: {path}.{PROGRESS_DEADLINE}")),
            }
        }
        if let Some(a) = get(
            "metric-aggregation-algorithm",
            Some("metricAggregationAlgorithm"),
        ) {
            match a {
                "linear" => s.algorithm = Some(Algorithm::Linear),
                "weighted-exponential" | "weightedExponential" => {
                    s.algorithm = Some(Algorithm::WeightedExponential)
                }
                // Checked only when the class is explicitly the KPA.
                other if s.class.as_deref() == Some(KPA_CLASS) => {
                    invalid("metric-aggregation-algorithm", other, &mut errors)
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }

    /// The class that scales this revision: the annotation, else the config's.
    pub fn class<'a>(&'a self, config: &'a AutoscalerConfig) -> &'a str {
        self.class
            .as_deref()
            .unwrap_or(&config.pod_autoscaler_class)
    }

    pub fn metric(&self) -> Metric {
        self.metric.unwrap_or(Metric::Concurrency)
    }

    /// The decider's settings for a revision with containerConcurrency `cc` (§2.4).
    pub fn spec(&self, cc: u32, config: &AutoscalerConfig, reachable: bool) -> Spec {
        let (mut total, utilisation) = match self.metric() {
            Metric::Rps => (config.rps_target_default, 0.7),
            Metric::Concurrency if cc > 0 => (f64::from(cc), config.target_fraction),
            Metric::Concurrency => (
                config.container_concurrency_target_default,
                config.target_fraction,
            ),
        };
        if let Some(t) = self.target {
            total = match (self.metric(), cc) {
                (Metric::Concurrency, cc) if cc > 0 => t.min(f64::from(cc)),
                _ => t,
            };
        }
        let utilisation = self
            .target_utilization_percentage
            .map_or(utilisation, |u| u / 100.0);
        let seconds = |d: GoDuration| u32::try_from(d.std().as_secs()).unwrap_or(u32::MAX);
        Spec {
            target: (total * utilisation).max(TARGET_MIN),
            total_target: total,
            panic_threshold: self
                .panic_threshold_percentage
                .unwrap_or(config.panic_threshold_percentage)
                / 100.0,
            max_scale_up_rate: config.max_scale_up_rate,
            max_scale_down_rate: config.max_scale_down_rate,
            target_burst_capacity: self
                .target_burst_capacity
                .unwrap_or(config.target_burst_capacity),
            stable_window: seconds(self.window.unwrap_or(config.stable_window)),
            scale_down_delay: seconds(self.scale_down_delay.unwrap_or(config.scale_down_delay)),
            activation_scale: self.activation_scale.map_or(1, |a| a.max(1) as u32),
            reachable,
        }
    }

    /// The KPA's bounds and windows (§2.6, §3.1).
    pub fn bounds(&self, config: &AutoscalerConfig) -> Bounds {
        let stable = self.window.unwrap_or(config.stable_window);
        let pct = self
            .panic_window_percentage
            .unwrap_or(config.panic_window_percentage);
        let initial = match self.initial_scale {
            Some(0) if config.allow_zero_initial_scale => 0,
            Some(i) if i > 0 => i,
            _ => config.initial_scale,
        };
        let count = |v: i32| u32::try_from(v.max(0)).unwrap_or(0);
        Bounds {
            min: count(self.min_scale.unwrap_or(config.min_scale)),
            max: count(self.max_scale.unwrap_or(config.max_scale)),
            initial: count(initial),
            stable_window: u32::try_from(stable.std().as_secs()).unwrap_or(u32::MAX),
            panic_window: AutoscalerConfig::panic_window(stable, pct),
            retention: self
                .scale_to_zero_pod_retention_period
                .unwrap_or(config.scale_to_zero_pod_retention_period),
            grace: config.scale_to_zero_grace_period,
            scale_to_zero: config.enable_scale_to_zero,
            progress_deadline: self.progress_deadline.unwrap_or(DEFAULT_PROGRESS_DEADLINE),
        }
    }
}

#[cfg(test)]
mod tests;
