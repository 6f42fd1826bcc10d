//! Process logs as Knative's zap logger writes them, configured by the zap JSON Knative
//! passes in `SERVING_LOGGING_CONFIG` and the level in `SERVING_LOGGING_LEVEL` (contract §1.2,
//! `P/logging/config.go`).
//!
//! Read from the zap config: `level`, `encoding` (`json`, `console`), `outputPaths` (`stdout`,
//! `stderr`, files), `disableCaller`, `initialFields`, and of `encoderConfig`: the keys
//! (`timeKey`, `levelKey`, `nameKey`, `callerKey`, `messageKey`; empty leaves the field out),
//! `levelEncoder` (`lowercase`, `capital`), `timeEncoder` (`iso8601`, `rfc3339`,
//! `rfc3339nano`, `millis`, `nanos`, else epoch seconds), `callerEncoder` (`full`, else short),
//! `lineEnding`, `consoleSeparator`. Other keys (sampling, stack traces, colours, custom time
//! layouts) are accepted and ignored. Times are UTC.
//!
//! As Knative: the JSON is laid over its Stackdriver defaults (JSON on stderr, keys `severity`,
//! `timestamp`, `logger`, `caller`, `message`, ISO 8601 times, lowercase levels), so absent keys
//! keep those; an empty or broken config, or an output that cannot be opened, gives those
//! defaults under the logger name `fallback-logger` with a warning; a valid
//! `SERVING_LOGGING_LEVEL` overrides `level`, an invalid one is ignored.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

/// zap's levels; the queue writes the first four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    DPanic,
    Panic,
    Fatal,
}

impl Level {
    /// zap's `Level.UnmarshalText`: lower or upper case; empty is info.
    fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "debug" | "DEBUG" => Level::Debug,
            "info" | "INFO" | "" => Level::Info,
            "warn" | "WARN" => Level::Warn,
            "error" | "ERROR" => Level::Error,
            "dpanic" | "DPANIC" => Level::DPanic,
            "panic" | "PANIC" => Level::Panic,
            "fatal" | "FATAL" => Level::Fatal,
            _ => return None,
        })
    }

    fn lowercase(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::DPanic => "dpanic",
            Level::Panic => "panic",
            Level::Fatal => "fatal",
        }
    }
}

// === Settings: the zap config, parsed ===

/// The queue's logger name (`main.go`: `logger.Named("queueproxy")`).
const NAME: &str = "queueproxy";
/// Knative's name for the logger built from its defaults after a bad config.
const FALLBACK_NAME: &str = "fallback-logger.queueproxy";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub level: Level,
    pub format: Format,
    pub outputs: Vec<Output>,
    /// `initialFields`, before the revision key and pod on every line.
    pub fields: Vec<(String, Value)>,
    pub name: &'static str,
    /// Logged once the logger is up (why the defaults were used, say).
    pub warnings: Vec<Warning>,
}

/// A warning with zap's `error` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// How a line is encoded (zap's encoding plus `encoderConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub console: bool,
    /// Keys; an empty one leaves its field out.
    pub time_key: String,
    pub level_key: String,
    pub name_key: String,
    pub caller_key: String,
    pub message_key: String,
    pub capital_levels: bool,
    pub time: TimeFormat,
    pub full_caller: bool,
    pub line_ending: String,
    pub console_separator: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// Seconds since the epoch as a float (zap's default for an unknown name).
    Epoch,
    EpochMillis,
    EpochNanos,
    /// `2006-01-02T15:04:05.000Z0700`.
    Iso8601,
    Rfc3339,
    Rfc3339Nano,
}

impl Settings {
    /// Knative's `logging.NewLogger(SERVING_LOGGING_CONFIG, SERVING_LOGGING_LEVEL)`.
    pub fn from_knative(config: &str, level_override: &str) -> Settings {
        let mut settings = match parse(config) {
            Ok(s) => s,
            Err(e) => Settings::fallback(e),
        };
        if !level_override.is_empty() {
            match Level::parse(level_override) {
                Some(level) => settings.level = level,
                None => settings.warnings.push(Warning {
                    message: "SERVING_LOGGING_LEVEL is not a zap level; ignored".to_owned(),
                    error: format!("invalid logging level: {level_override}"),
                }),
            }
        }
        settings
    }

    /// Knative's Stackdriver defaults under the fallback name, with the reason as a warning.
    fn fallback(error: String) -> Settings {
        let mut s = stackdriver();
        s.name = FALLBACK_NAME;
        s.warnings.push(Warning {
            message: "Failed to parse logging config - using default zap production config"
                .to_owned(),
            error,
        });
        s
    }
}

/// zap's production config with Knative's Stackdriver keys (`stackdriverConfig`).
fn stackdriver() -> Settings {
    Settings {
        level: Level::Info,
        format: Format {
            console: false,
            time_key: "timestamp".to_owned(),
            level_key: "severity".to_owned(),
            name_key: "logger".to_owned(),
            caller_key: "caller".to_owned(),
            message_key: "message".to_owned(),
            capital_levels: false,
            time: TimeFormat::Iso8601,
            full_caller: false,
            line_ending: "\n".to_owned(),
            console_separator: "\t".to_owned(),
        },
        outputs: vec![Output::Stderr],
        fields: Vec::new(),
        name: NAME,
        warnings: Vec::new(),
    }
}

/// The parts of zap's `Config` read here; every key is optional, unknown keys are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZapConfig {
    level: Option<String>,
    encoding: Option<String>,
    output_paths: Option<Vec<String>>,
    disable_caller: Option<bool>,
    initial_fields: Option<serde_json::Map<String, Value>>,
    encoder_config: Option<EncoderConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncoderConfig {
    time_key: Option<String>,
    level_key: Option<String>,
    name_key: Option<String>,
    caller_key: Option<String>,
    message_key: Option<String>,
    line_ending: Option<String>,
    level_encoder: Option<String>,
    /// A name, or zap's `{"layout": "..."}` (not supported: ISO 8601 instead).
    time_encoder: Option<Value>,
    caller_encoder: Option<String>,
    console_separator: Option<String>,
}

fn parse(config: &str) -> Result<Settings, String> {
    if config.is_empty() {
        return Err("empty logger configuration".to_owned());
    }
    let zap: ZapConfig = serde_json::from_str(config).map_err(|e| e.to_string())?;
    let mut s = stackdriver();
    if let Some(level) = zap.level {
        s.level = Level::parse(&level).ok_or_else(|| format!("unrecognized level: {level:?}"))?;
    }
    match zap.encoding.as_deref() {
        Some("json") => s.format.console = false,
        Some("console") => s.format.console = true,
        Some(other) => return Err(format!("no encoder registered for name {other:?}")),
        // zap requires an encoding; Knative's defaults give json.
        None => {}
    }
    if let Some(paths) = zap.output_paths {
        s.outputs = paths.iter().map(|p| output(p)).collect();
    }
    if zap.disable_caller == Some(true) {
        s.format.caller_key.clear();
    }
    if let Some(fields) = zap.initial_fields {
        s.fields = fields.into_iter().collect();
    }
    if let Some(e) = zap.encoder_config {
        let f = &mut s.format;
        for (key, value) in [
            (&mut f.time_key, e.time_key),
            (&mut f.level_key, e.level_key),
            (&mut f.name_key, e.name_key),
            (&mut f.caller_key, e.caller_key),
            (&mut f.message_key, e.message_key),
        ] {
            if let Some(value) = value {
                *key = value;
            }
        }
        if let Some(ending) = e.line_ending {
            // zap: empty means "\n".
            f.line_ending = if ending.is_empty() {
                "\n".to_owned()
            } else {
                ending
            };
        }
        if let Some(levels) = e.level_encoder {
            f.capital_levels = matches!(levels.as_str(), "capital" | "capitalColor");
        }
        if let Some(time) = e.time_encoder {
            f.time = match time.as_str() {
                Some("iso8601" | "ISO8601") | None => TimeFormat::Iso8601,
                Some("rfc3339" | "RFC3339") => TimeFormat::Rfc3339,
                Some("rfc3339nano" | "RFC3339Nano") => TimeFormat::Rfc3339Nano,
                Some("millis") => TimeFormat::EpochMillis,
                Some("nanos") => TimeFormat::EpochNanos,
                // zap: any other name, empty included, is epoch seconds.
                Some(_) => TimeFormat::Epoch,
            };
        }
        if let Some(caller) = e.caller_encoder {
            f.full_caller = caller == "full";
        }
        if let Some(separator) = e.console_separator {
            f.console_separator = separator;
        }
    }
    Ok(s)
}

/// zap's sink names: `stdout`, `stderr`, a `file://` URL or a path.
fn output(path: &str) -> Output {
    match path {
        "stdout" => Output::Stdout,
        "stderr" => Output::Stderr,
        _ => Output::File(path.strip_prefix("file://").unwrap_or(path).into()),
    }
}

// === Encoding ===

/// One log call.
pub struct Entry<'a> {
    pub level: Level,
    pub caller: &'a str,
    pub message: &'a str,
    /// Fields of this call only (zap's `Warnw` pairs), after the logger's own.
    pub fields: &'a [(&'a str, &'a str)],
}

impl Format {
    /// The logger's fields (`initialFields`, then the revision key and pod), encoded once.
    fn context(&self, fields: &[(String, Value)], key: &str, pod: &str) -> String {
        let mut out = String::new();
        for (name, value) in fields {
            self.field(&mut out, name, value);
        }
        self.field(&mut out, "knative.dev/key", &Value::from(key));
        self.field(&mut out, "knative.dev/pod", &Value::from(pod));
        out
    }

    /// `,"name":value` (JSON) or `, "name": value` (the console's spaced JSON); the first
    /// separator is dropped by [`Format::line`].
    fn field(&self, out: &mut String, name: &str, value: &Value) {
        let (comma, colon) = if self.console {
            (", ", ": ")
        } else {
            (",", ":")
        };
        let _ = write!(out, "{comma}{}{colon}{}", json(name), value);
    }

    /// The whole line, ending included.
    pub fn line(&self, name: &str, context: &str, entry: &Entry<'_>, now: SystemTime) -> String {
        let mut fields = context.to_owned();
        for (key, value) in entry.fields {
            self.field(&mut fields, key, &Value::from(*value));
        }
        let level = if self.capital_levels {
            entry.level.lowercase().to_ascii_uppercase()
        } else {
            entry.level.lowercase().to_owned()
        };
        let time = self.time(now);
        let caller = if self.full_caller {
            entry.caller
        } else {
            short_caller(entry.caller)
        };
        let mut line = String::with_capacity(128 + entry.message.len() + fields.len());
        if self.console {
            // zap's console order: time, level, name, caller, message, then the fields as JSON.
            let parts = [
                (&self.time_key, time.text),
                (&self.level_key, level),
                (&self.name_key, name.to_owned()),
                (&self.caller_key, caller.to_owned()),
                (&self.message_key, entry.message.to_owned()),
            ];
            let mut first = true;
            for (key, value) in parts {
                if key.is_empty() {
                    continue;
                }
                if !first {
                    line.push_str(&self.console_separator);
                }
                first = false;
                line.push_str(&value);
            }
            if let Some(fields) = fields.strip_prefix(", ") {
                if !first {
                    line.push_str(&self.console_separator);
                }
                let _ = write!(line, "{{{fields}}}");
            }
        } else {
            // zap's JSON order: level, time, name, caller, message, then the fields.
            let time = if time.quoted {
                json(&time.text)
            } else {
                time.text
            };
            let parts = [
                (&self.level_key, json(&level)),
                (&self.time_key, time),
                (&self.name_key, json(name)),
                (&self.caller_key, json(caller)),
                (&self.message_key, json(entry.message)),
            ];
            line.push('{');
            for (key, value) in parts {
                if !key.is_empty() {
                    let _ = write!(line, "{}:{value},", json(key));
                }
            }
            line.push_str(fields.strip_prefix(',').unwrap_or(&fields));
            if line.ends_with(',') {
                line.pop();
            }
            line.push('}');
        }
        line.push_str(&self.line_ending);
        line
    }

    fn time(&self, now: SystemTime) -> Time {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
        let number = |text: String| Time {
            text,
            quoted: false,
        };
        match self.time {
            // As zap: nanoseconds as a float, divided.
            TimeFormat::Epoch => number(format!("{}", since.as_nanos() as f64 / 1e9)),
            TimeFormat::EpochMillis => number(format!("{}", since.as_nanos() as f64 / 1e6)),
            TimeFormat::EpochNanos => number(since.as_nanos().to_string()),
            TimeFormat::Iso8601 => Time {
                text: format!("{}.{:03}Z", date_time(secs), nanos / 1_000_000),
                quoted: true,
            },
            TimeFormat::Rfc3339 => Time {
                text: format!("{}Z", date_time(secs)),
                quoted: true,
            },
            TimeFormat::Rfc3339Nano => {
                let fraction = format!("{nanos:09}");
                let fraction = fraction.trim_end_matches('0');
                let dot = if fraction.is_empty() { "" } else { "." };
                Time {
                    text: format!("{}{dot}{fraction}Z", date_time(secs)),
                    quoted: true,
                }
            }
        }
    }
}

struct Time {
    text: String,
    /// A string in JSON (a date), not a number.
    quoted: bool,
}

/// zap's short caller: the file's directory and name, and the line.
fn short_caller(caller: &str) -> &str {
    let mut slashes = caller.rmatch_indices('/');
    match (slashes.next(), slashes.next()) {
        (Some(_), Some((at, _))) => &caller[at + 1..],
        _ => caller,
    }
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// UTC seconds since the epoch as `2006-01-02T15:04:05`.
fn date_time(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

// === The process logger ===

struct Logger {
    level: Level,
    format: Format,
    name: &'static str,
    /// The logger's fields, encoded once.
    context: String,
    sinks: Vec<Sink>,
}

enum Sink {
    Stdout,
    Stderr,
    File(File),
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Opens the outputs and installs the logger, then logs the settings' warnings. An output that
/// cannot be opened makes it Knative's fallback logger, as zap's `Build` failing does (at the
/// level chosen, where Knative would keep only `SERVING_LOGGING_LEVEL`). Lines before this go
/// to stderr in Knative's default format.
pub fn init(settings: Settings, key: &str, pod: &str) {
    let (settings, sinks) = match open(&settings.outputs) {
        Ok(sinks) => (settings, sinks),
        Err(e) => {
            let mut fallback = Settings::fallback(e);
            fallback.level = settings.level;
            (fallback, vec![Sink::Stderr])
        }
    };
    let logger = Logger {
        level: settings.level,
        context: settings.format.context(&settings.fields, key, pod),
        format: settings.format,
        name: settings.name,
        sinks,
    };
    let _ = LOGGER.set(logger);
    for w in &settings.warnings {
        write(&Entry {
            level: Level::Warn,
            caller: concat!(file!(), ":", line!()),
            message: &w.message,
            fields: &[("error", &w.error)],
        });
    }
}

fn open(outputs: &[Output]) -> Result<Vec<Sink>, String> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Stdout => Ok(Sink::Stdout),
            Output::Stderr => Ok(Sink::Stderr),
            Output::File(path) => File::options()
                .append(true)
                .create(true)
                .open(path)
                .map(Sink::File)
                .map_err(|e| format!("couldn't open sink {:?}: {e}", path.display())),
        })
        .collect()
}

pub fn log(level: Level, caller: &str, message: &str) {
    write(&Entry {
        level,
        caller,
        message,
        fields: &[],
    });
}

fn write(entry: &Entry<'_>) {
    static DEFAULT: OnceLock<Logger> = OnceLock::new();
    let logger = LOGGER.get().unwrap_or_else(|| {
        DEFAULT.get_or_init(|| {
            let s = stackdriver();
            Logger {
                level: s.level,
                context: String::new(),
                format: s.format,
                name: s.name,
                sinks: vec![Sink::Stderr],
            }
        })
    });
    if entry.level < logger.level {
        return;
    }
    let line = logger
        .format
        .line(logger.name, &logger.context, entry, SystemTime::now());
    for sink in &logger.sinks {
        let _ = match sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            // One write per line: with O_APPEND, lines from threads do not interleave.
            Sink::File(f) => (&*f).write_all(line.as_bytes()),
        };
    }
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, concat!(file!(), ":", line!()), &format!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, concat!(file!(), ":", line!()), &format!($($arg)*)) };
}
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, concat!(file!(), ":", line!()), &format!($($arg)*)) };
}
pub(crate) use {error, info, warning};

#[cfg(test)]
mod tests;
