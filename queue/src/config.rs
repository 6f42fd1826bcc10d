//! Configuration from the environment Knative's revision controller gives the queue-proxy
//! container (contract §1.2), parsed once at the edge into typed fields.
//!
//! Every variable is parsed before any error is returned, so one run names every problem.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::log;
use crate::readiness::spec::{self, ProbeSpec};
use crate::requestlog::{Template, DEFAULT_TEMPLATE};
use crate::tls;

// === Variables and their defaults ===

/// Knative's required variables, in the order its envconfig checks them (contract §1.3).
const REQUIRED: [&str; 12] = [
    "CONTAINER_CONCURRENCY",
    "QUEUE_SERVING_PORT",
    "QUEUE_SERVING_TLS_PORT",
    "USER_PORT",
    "REVISION_TIMEOUT_SECONDS",
    "SERVING_LOGGING_CONFIG",
    "SERVING_LOGGING_LEVEL",
    "SERVING_NAMESPACE",
    "SERVING_CONFIGURATION",
    "SERVING_REVISION",
    "SERVING_POD",
    "SERVING_POD_IP",
];

/// Admin port serving `/wait-for-drain` (`S/pkg/networking/constants.go`).
pub const DEFAULT_ADMIN_PORT: u16 = 8022;
/// Autoscaler metrics port (`S/pkg/networking/constants.go`).
pub const DEFAULT_METRICS_PORT: u16 = 9090;
/// User-facing Prometheus metrics port (`P/observability/metrics/prometheus/server.go`).
pub const DEFAULT_USER_METRICS_PORT: u16 = 9091;
/// Quiet period after the last arriving request before shutdown (`main.go` `drainSleepDuration`).
pub const DEFAULT_DRAIN_QUIET: Duration = Duration::from_secs(30);
/// Where Knative mounts the `serving-certs` secret (`N/pkg/certificates/constants.go`).
pub const DEFAULT_CERTS_DIR: &str = "/var/lib/knative/certs";
/// Go's `ReadHeaderTimeout` on the queue's servers (`servers.go`).
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest `CONTAINER_CONCURRENCY` accepted. Knative's webhook caps `containerConcurrency`
/// at config-defaults `container-concurrency-max-limit`, 1000 by default but raisable by the
/// operator, so the queue does not assume 1000; a million is far past what one pod can hold
/// (11×CC client sockets) and keeps 11×CC and the breaker's semaphore far from overflow.
pub const MAX_CONTAINER_CONCURRENCY: i64 = 1_000_000;
/// The largest `REVISION_*_SECONDS` accepted: 100 years. Knative's `max-revision-timeout-seconds`
/// is 600 by default and raisable without bound; a deadline must still fit an `Instant`.
pub const MAX_TIMEOUT_SECONDS: i64 = 100 * 365 * 86_400;

// === Types ===

/// Where variables come from: the process env in `main`, a map in tests (no `set_var`).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// One problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Missing(&'static str),
    Invalid {
        name: &'static str,
        value: String,
        expected: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Knative's own wording, so operators' log searches keep working.
            ConfigError::Missing(name) => write!(f, "required key {name} missing value"),
            ConfigError::Invalid {
                name,
                value,
                expected,
            } => {
                write!(f, "{name}={value:?} is not valid: {expected}")
            }
        }
    }
}

/// Which TLS protocol versions the 8112 listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// User metrics exporter (`requestMetrics.protocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsProtocol {
    None,
    Prometheus,
    /// OTLP push (`grpc`, `http/protobuf`): accepted, but not exported by Knoxy (logged at start).
    Otlp(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub service: String,
    pub configuration: String,
    pub revision: String,
    pub pod: String,
    pub pod_ip: String,

    /// `CONTAINER_CONCURRENCY`; 0 or less means no breaker.
    pub container_concurrency: i64,
    pub serving_port: u16,
    pub tls_port: u16,
    pub user_port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    pub user_metrics_port: u16,
    pub user_metrics_host: Option<String>,
    /// Interface every listener binds (`KNOXY_BIND_ADDRESS`); Knative binds all interfaces.
    pub bind: IpAddr,

    pub revision_timeout: Duration,
    pub response_start_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub drain_quiet: Duration,

    pub readiness: Vec<ProbeSpec>,
    pub http2_auto_detection: bool,

    pub certs_dir: PathBuf,
    pub tls_min: TlsVersion,
    pub tls_max: TlsVersion,
    /// `QUEUE_PROXY_TLS_CIPHER_SUITES`, when set: the TLS 1.2 suites allowed.
    pub tls_cipher_suites: Option<Vec<rustls::SupportedCipherSuite>>,
    /// `QUEUE_PROXY_TLS_CURVE_PREFERENCES`, when set, in preference order.
    pub tls_curves: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    /// Names Go knows but Knoxy's TLS library does not implement (warned about at start).
    pub tls_unsupported: Vec<String>,

    /// The zap logger Knative configures (`SERVING_LOGGING_CONFIG`, `SERVING_LOGGING_LEVEL`);
    /// never an error: a bad config gives Knative's fallback logger.
    pub log: log::Settings,
    pub metrics_protocol: MetricsProtocol,
    pub tracing_protocol: String,
    pub request_log: Option<RequestLogConfig>,
}

/// The request log, when `enableRequestLog` is on (contract §10).
#[derive(Debug, Clone)]
pub struct RequestLogConfig {
    pub template: Template,
    /// `enableProbeRequestLog`: probes are logged too.
    pub probes: bool,
}

impl Config {
    /// Total number of requests the breaker admits (in flight plus waiting), or none without a breaker.
    pub fn breaker_capacity(&self) -> Option<(usize, usize)> {
        let cc = usize::try_from(self.container_concurrency)
            .ok()
            .filter(|cc| *cc > 0)?;
        // QueueDepth = 10×CC, MaxConcurrency = CC (contract §4).
        Some((cc, cc.saturating_mul(11)))
    }

    /// Knative's `ns/revision` log key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.revision)
    }
}

// === Parsing ===

impl Config {
    pub fn from_env(env: &impl Env) -> Result<Config, Vec<ConfigError>> {
        let mut p = Parser {
            env,
            errors: Vec::new(),
        };
        for name in REQUIRED {
            if env.get(name).is_none() {
                p.errors.push(ConfigError::Missing(name));
            }
        }

        let container_concurrency = p
            .int_at_most(
                "CONTAINER_CONCURRENCY",
                MAX_CONTAINER_CONCURRENCY,
                format!("expected an integer no greater than {MAX_CONTAINER_CONCURRENCY}; 0 or less: no limit"),
            )
            .unwrap_or(0);
        let serving_port = p.port("QUEUE_SERVING_PORT", 8012);
        let tls_port = p.port("QUEUE_SERVING_TLS_PORT", 8112);
        let user_port = p.port("USER_PORT", 8080);
        let revision_timeout = seconds(
            p.timeout("REVISION_TIMEOUT_SECONDS", "every request times out")
                .unwrap_or(300),
        );
        let response_start_timeout = p
            .timeout("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "off")
            .filter(|s| *s > 0)
            .map(seconds);
        let idle_timeout = p
            .timeout("REVISION_IDLE_TIMEOUT_SECONDS", "off")
            .filter(|s| *s > 0)
            .map(seconds);
        let http2_auto_detection = p.boolean("ENABLE_HTTP2_AUTO_DETECTION");
        // Validated only: hyper's HTTP/1 server always reads request bodies while responding.
        p.boolean("ENABLE_HTTP_FULL_DUPLEX");
        let multi = p.boolean("ENABLE_MULTI_CONTAINER_PROBES");
        let readiness = p.readiness(multi, user_port);
        let tls_min = p.tls_version("QUEUE_PROXY_TLS_MIN_VERSION", TlsVersion::Tls13);
        let tls_max = p.tls_version("QUEUE_PROXY_TLS_MAX_VERSION", TlsVersion::Tls13);
        if tls_min == TlsVersion::Tls13 && tls_max == TlsVersion::Tls12 {
            p.invalid(
                "QUEUE_PROXY_TLS_MAX_VERSION",
                "1.2",
                "must not be below QUEUE_PROXY_TLS_MIN_VERSION",
            );
        }
        let mut tls_unsupported = Vec::new();
        let tls_cipher_suites = p.tls_list(
            "QUEUE_PROXY_TLS_CIPHER_SUITES",
            tls::cipher_suite,
            &mut tls_unsupported,
        );
        let tls_curves = p.tls_list(
            "QUEUE_PROXY_TLS_CURVE_PREFERENCES",
            tls::curve,
            &mut tls_unsupported,
        );
        let observability = p.observability();
        let user_metrics_port = p.port("METRICS_PROMETHEUS_PORT", DEFAULT_USER_METRICS_PORT);
        let admin_port = p.port("KNOXY_ADMIN_PORT", DEFAULT_ADMIN_PORT);
        let metrics_port = p.port("KNOXY_METRICS_PORT", DEFAULT_METRICS_PORT);
        let bind = p.ip("KNOXY_BIND_ADDRESS");
        let drain_quiet = p
            .duration("KNOXY_DRAIN_QUIET_PERIOD")
            .unwrap_or(DEFAULT_DRAIN_QUIET);
        let log = log::Settings::from_knative(
            &env.get("SERVING_LOGGING_CONFIG").unwrap_or_default(),
            &env.get("SERVING_LOGGING_LEVEL").unwrap_or_default(),
        );

        if !p.errors.is_empty() {
            return Err(p.errors);
        }
        let string = |name| env.get(name).unwrap_or_default();
        Ok(Config {
            namespace: string("SERVING_NAMESPACE"),
            service: string("SERVING_SERVICE"),
            configuration: string("SERVING_CONFIGURATION"),
            revision: string("SERVING_REVISION"),
            pod: string("SERVING_POD"),
            pod_ip: string("SERVING_POD_IP"),
            container_concurrency,
            serving_port,
            tls_port,
            user_port,
            admin_port,
            metrics_port,
            user_metrics_port,
            user_metrics_host: env.get("METRICS_PROMETHEUS_HOST").filter(|h| !h.is_empty()),
            bind,
            revision_timeout,
            response_start_timeout,
            idle_timeout,
            drain_quiet,
            readiness,
            http2_auto_detection,
            certs_dir: env
                .get("KNOXY_CERTS_DIR")
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| DEFAULT_CERTS_DIR.to_owned())
                .into(),
            tls_min,
            tls_max,
            tls_cipher_suites,
            tls_curves,
            tls_unsupported,
            log,
            metrics_protocol: observability.0,
            tracing_protocol: observability.1,
            request_log: observability.2,
        })
    }
}

struct Parser<'e, E> {
    env: &'e E,
    errors: Vec<ConfigError>,
}

impl<E: Env> Parser<'_, E> {
    fn invalid(&mut self, name: &'static str, value: &str, expected: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            name,
            value: value.to_owned(),
            expected: expected.into(),
        });
    }

    /// An integer in Go's base-0 syntax (`0x10`, `0o17`, `0b1`, `017`); absent gives `None`.
    fn int(&mut self, name: &'static str) -> Option<i64> {
        let value = self.env.get(name)?;
        match parse_go_int(&value) {
            Some(v) => Some(v),
            None => {
                self.invalid(name, &value, "expected an integer");
                None
            }
        }
    }

    /// [`Parser::int`] no greater than `max` (a larger value would overflow a size or a
    /// deadline); `expected` says so in the error.
    fn int_at_most(&mut self, name: &'static str, max: i64, expected: String) -> Option<i64> {
        let value = self.int(name)?;
        if value > max {
            let shown = self.env.get(name).unwrap_or_default();
            self.invalid(name, &shown, expected);
            return None;
        }
        Some(value)
    }

    /// Whole seconds of a revision timeout, at most [`MAX_TIMEOUT_SECONDS`] (100 years).
    fn timeout(&mut self, name: &'static str, at_zero: &str) -> Option<i64> {
        self.int_at_most(
            name,
            MAX_TIMEOUT_SECONDS,
            format!("expected whole seconds no greater than {MAX_TIMEOUT_SECONDS} (100 years); 0 or less: {at_zero}"),
        )
    }

    fn port(&mut self, name: &'static str, default: u16) -> u16 {
        let Some(value) = self.env.get(name) else {
            return default;
        };
        match value.trim().parse::<u16>() {
            Ok(port) => port,
            Err(_) => {
                self.invalid(name, &value, "expected a port number 0-65535");
                default
            }
        }
    }

    /// Go's `strconv.ParseBool`; absent is false, present but empty is an error (as envconfig).
    fn boolean(&mut self, name: &'static str) -> bool {
        let Some(value) = self.env.get(name) else {
            return false;
        };
        match value.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => {
                self.invalid(name, &value, "expected a boolean (true or false)");
                false
            }
        }
    }

    fn ip(&mut self, name: &'static str) -> IpAddr {
        let any = IpAddr::from([0u16; 8]);
        let Some(value) = self.env.get(name).filter(|v| !v.is_empty()) else {
            return any;
        };
        value.parse().unwrap_or_else(|_| {
            self.invalid(name, &value, "expected an IP address");
            any
        })
    }

    fn duration(&mut self, name: &'static str) -> Option<Duration> {
        let value = self.env.get(name).filter(|v| !v.is_empty())?;
        let parsed =
            parse_duration(&value).filter(|d| d.as_secs() <= MAX_TIMEOUT_SECONDS.unsigned_abs());
        if parsed.is_none() {
            self.invalid(
                name,
                &value,
                "expected a duration such as 30s or 500ms, at most 100 years",
            );
        }
        parsed
    }

    /// A comma-separated list of Go TLS names; unknown names are errors, known but
    /// unimplemented ones are set aside.
    fn tls_list<T>(
        &mut self,
        name: &'static str,
        lookup: fn(&str) -> Result<tls::Named<T>, String>,
        unsupported: &mut Vec<String>,
    ) -> Option<Vec<T>> {
        let value = self.env.get(name).filter(|v| !v.trim().is_empty())?;
        let (mut out, errors) = (Vec::new(), self.errors.len());
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match lookup(item) {
                Ok(tls::Named::Supported(v)) => out.push(v),
                Ok(tls::Named::Unsupported) => unsupported.push(item.to_owned()),
                Err(e) => self.invalid(name, &value, e),
            }
        }
        if out.is_empty() && self.errors.len() == errors {
            self.invalid(name, &value, "none of these is supported by knoxy-queue");
            return None;
        }
        Some(out)
    }

    fn tls_version(&mut self, name: &'static str, default: TlsVersion) -> TlsVersion {
        match self.env.get(name).as_deref() {
            None | Some("") => default,
            Some("1.2") => TlsVersion::Tls12,
            Some("1.3") => TlsVersion::Tls13,
            Some(other) => {
                self.invalid(
                    name,
                    other,
                    format!("unsupported TLS version {other:?}: must be \"1.2\" or \"1.3\""),
                );
                default
            }
        }
    }

    fn readiness(&mut self, multi: bool, user_port: u16) -> Vec<ProbeSpec> {
        let Some(value) = self
            .env
            .get("SERVING_READINESS_PROBE")
            .filter(|v| !v.is_empty())
        else {
            return Vec::new();
        };
        match spec::decode(&value, multi, user_port) {
            Ok(probes) => probes,
            Err(e) => {
                self.invalid(
                    "SERVING_READINESS_PROBE",
                    &value,
                    format!("Queue container failed to parse readiness probe: {e}"),
                );
                Vec::new()
            }
        }
    }

    fn observability(&mut self) -> (MetricsProtocol, String, Option<RequestLogConfig>) {
        let defaults = (MetricsProtocol::None, "none".to_owned(), None);
        let Some(value) = self
            .env
            .get("OBSERVABILITY_CONFIG")
            .filter(|v| !v.is_empty())
        else {
            return defaults;
        };
        let parsed: Observability = match serde_json::from_str(&value) {
            Ok(o) => o,
            Err(e) => {
                self.invalid(
                    "OBSERVABILITY_CONFIG",
                    &value,
                    format!("failed to parse OBSERVABILITY_CONFIG: {e}"),
                );
                return defaults;
            }
        };
        let metrics = match parsed.request_metrics.protocol.as_str() {
            "" | "none" => MetricsProtocol::None,
            "prometheus" => MetricsProtocol::Prometheus,
            p @ ("grpc" | "http/protobuf") => MetricsProtocol::Otlp(p.to_owned()),
            other => {
                self.invalid(
                    "OBSERVABILITY_CONFIG",
                    &value,
                    format!("unsupported requestMetrics.protocol {other:?}"),
                );
                MetricsProtocol::None
            }
        };
        let tracing = match parsed.tracing.protocol.as_str() {
            "" => "none".to_owned(),
            p @ ("none" | "grpc" | "http/protobuf" | "stdout") => p.to_owned(),
            other => {
                self.invalid(
                    "OBSERVABILITY_CONFIG",
                    &value,
                    format!("unsupported tracing.protocol {other:?}"),
                );
                "none".to_owned()
            }
        };
        // Logged only when enabled and the template is non-empty (`main.go`).
        let template = parsed
            .request_log_template
            .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
        let request_log = match Template::parse(&template) {
            _ if !parsed.enable_request_log || template.is_empty() => None,
            Ok(template) => Some(RequestLogConfig {
                template,
                probes: parsed.enable_probe_request_log,
            }),
            Err(e) => {
                self.invalid(
                    "OBSERVABILITY_CONFIG",
                    &value,
                    format!("requestLogTemplate: {e}"),
                );
                None
            }
        };
        (metrics, tracing, request_log)
    }
}

/// The parts of `OBSERVABILITY_CONFIG` the queue reads (contract §1.5); other keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Observability {
    tracing: Protocol,
    request_metrics: Protocol,
    enable_request_log: bool,
    request_log_template: Option<String>,
    enable_probe_request_log: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Protocol {
    protocol: String,
}

// === Helpers ===

fn seconds(s: i64) -> Duration {
    Duration::from_secs(s.max(0).unsigned_abs())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, base prefix, underscores between digits.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_owned(), true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_owned(), true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_owned(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned(), true)
    } else {
        (10, lower, false)
    };
    if digits.is_empty()
        || digits.starts_with('_') && !prefixed
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let magnitude = i128::from_str_radix(&digits.replace('_', ""), radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// A duration as `30s`, `500ms`, `2m` or bare seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests;
