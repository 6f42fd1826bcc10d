//! Knative's ConfigMaps and annotations hold Go-formatted values (contract
//! `autoscaler-local.md` §1.1): durations such as `1m30s`, Go's booleans, base-10 integers;
//! errors quote Go's parser messages, and durations print as Go prints them (`1h0m0s`).

use std::time::Duration;

/// Go's `time.ParseDuration`: a signed sequence of decimal numbers with units (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), or `0`. Negative values are returned as Err(Negative) so the
/// caller can report its range.
pub fn duration(text: &str) -> Result<GoDuration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(GoDuration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            other => return Err(format!("time: unknown unit {other:?} in duration {text:?}")),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut denominator = 1u128;
        for digit in fraction.bytes().take(30) {
            denominator *= 10;
            part += u128::from(digit - b'0') * scale / denominator;
        }
        nanos = nanos.checked_add(part).ok_or_else(invalid)?;
        rest = after;
    }
    if nanos > i64::MAX as u128 {
        return Err(invalid());
    }
    let nanos = nanos as i64;
    Ok(GoDuration(if negative { -nanos } else { nanos }))
}

/// A Go `time.Duration`: signed nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub i64);

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(0);

    pub const fn seconds(s: i64) -> GoDuration {
        GoDuration(s * 1_000_000_000)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Whole seconds only (Knative's "at most second precision").
    pub fn whole_seconds(self) -> bool {
        self.0 % 1_000_000_000 == 0
    }

    /// As a std Duration (negative: zero).
    pub fn std(self) -> Duration {
        Duration::from_nanos(self.0.max(0) as u64)
    }
}

impl std::fmt::Display for GoDuration {
    /// Go's `Duration.String`: `0s`, `1.5s`, `1m0s`, `1h0m0s`, `500ms`, `1µs`, `-42s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let n = self.0.unsigned_abs();
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 1_000_000_000 {
            let (value, unit, scale) = match n {
                n if n < 1_000 => return write!(f, "{sign}{n}ns"),
                n if n < 1_000_000 => (n, "µs", 1_000),
                n => (n, "ms", 1_000_000),
            };
            return write!(f, "{sign}{}{unit}", fraction(value, scale));
        }
        let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
        let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        let seconds = fraction(rest, 1_000_000_000);
        match (hours, minutes) {
            (0, 0) => write!(f, "{sign}{seconds}s"),
            (0, m) => write!(f, "{sign}{m}m{seconds}s"),
            (h, m) => write!(f, "{sign}{h}h{m}m{seconds}s"),
        }
    }
}

/// `value / scale` with the fraction's trailing zeros dropped, as Go prints it.
fn fraction(value: u64, scale: u64) -> String {
    let (whole, rest) = (value / scale, value % scale);
    if rest == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let text = format!("{whole}.{rest:0digits$}");
    text.trim_end_matches('0').to_owned()
}

/// Go's `strconv.ParseBool`.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing {text:?}: invalid syntax"
        )),
    }
}

/// Go's `strconv.ParseFloat(text, 64)`.
pub fn float(text: &str) -> Result<f64, String> {
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    match text.parse::<f64>() {
        Ok(v) if ok => Ok(v),
        _ => Err(format!(
            "strconv.ParseFloat: parsing {text:?}: invalid syntax"
        )),
    }
}

/// Go's `strconv.ParseInt(text, 10, 32)`.
pub fn int32(text: &str) -> Result<i32, String> {
    match text.parse::<i64>() {
        Ok(v) => i32::try_from(v)
            .map_err(|_| format!("strconv.ParseInt: parsing {text:?}: value out of range")),
        Err(_) => Err(format!(
            "strconv.ParseInt: parsing {text:?}: invalid syntax"
        )),
    }
}

/// Go's `%v` of a float64: the shortest form (`2`, `1.1`, `0.005`).
pub fn show(v: f64) -> String {
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_parses_them() {
        assert_eq!(duration("60s"), Ok(GoDuration::seconds(60)));
        assert_eq!(duration("1m30s"), Ok(GoDuration::seconds(90)));
        assert_eq!(duration("0"), Ok(GoDuration::ZERO));
        assert_eq!(duration("1.5s"), Ok(GoDuration(1_500_000_000)));
        assert_eq!(duration("-42s"), Ok(GoDuration::seconds(-42)));
        assert_eq!(duration("250ms"), Ok(GoDuration(250_000_000)));
        assert_eq!(
            duration("60"),
            Err("time: missing unit in duration \"60\"".to_owned())
        );
        assert!(duration("").is_err());
        assert!(duration("1x")
            .expect_err("an error")
            .contains("unknown unit"));
        assert!(duration("s").is_err());
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        for (d, text) in [
            (GoDuration::ZERO, "0s"),
            (GoDuration::seconds(6), "6s"),
            (GoDuration::seconds(60), "1m0s"),
            (GoDuration::seconds(3600), "1h0m0s"),
            (GoDuration::seconds(311 * 60), "5h11m0s"),
            (GoDuration(1_500_000_000), "1.5s"),
            (GoDuration(500_000_000), "500ms"),
            (GoDuration(1_000), "1µs"),
            (GoDuration::seconds(-42), "-42s"),
        ] {
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn booleans_floats_and_ints_as_go() {
        assert_eq!(boolean("True"), Ok(true));
        assert_eq!(boolean("f"), Ok(false));
        assert!(boolean("yes")
            .expect_err("an error")
            .contains("invalid syntax"));
        assert_eq!(float("70"), Ok(70.0));
        assert!(float("seventy").is_err());
        assert!(float("inf").is_err());
        assert_eq!(int32("-3"), Ok(-3));
        assert!(int32("3000000000")
            .expect_err("an error")
            .contains("out of range"));
        assert_eq!(show(2.0), "2");
        assert_eq!(show(1.1), "1.1");
    }
}
