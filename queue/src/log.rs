//! Process logs as Knative's zap JSON lines on stdout: `severity`, `timestamp`, `logger`,
//! `caller`, `message`, plus the revision key and pod.

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

struct Logger {
    min: Level,
    key: String,
    pod: String,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Sets the level and the fields every line carries; lines before this use info and no fields.
pub fn init(level: &str, key: String, pod: String) {
    let min = match level {
        "debug" => Level::Debug,
        "warn" => Level::Warn,
        "error" | "dpanic" | "panic" | "fatal" => Level::Error,
        _ => Level::Info,
    };
    let _ = LOGGER.set(Logger { min, key, pod });
}

pub fn log(level: Level, caller: &str, message: &str) {
    let logger = LOGGER.get();
    if level < logger.map_or(Level::Info, |l| l.min) {
        return;
    }
    let severity = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    let mut line = format!(
        "{{\"severity\":\"{severity}\",\"timestamp\":\"{}\",\"logger\":\"queueproxy\",\"caller\":{},\"message\":{}",
        rfc3339_now(),
        json(caller),
        json(message)
    );
    if let Some(l) = logger {
        line.push_str(&format!(
            ",\"knative.dev/key\":{},\"knative.dev/pod\":{}",
            json(&l.key),
            json(&l.pod)
        ));
    }
    line.push_str("}\n");
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
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

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// UTC now as `2006-01-02T15:04:05.000Z`.
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
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

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_780), (2026, 11, 23));
    }
}
