//! `networking.internal.knative.dev/v1alpha1` `Ingress` (KIngress), field for field as
//! `N/pkg/apis/networking/v1alpha1/ingress_types.go` declares it: the field order and the
//! `omitempty` rules matter, because the probe hash is taken over Go's JSON of the spec.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The annotation that says which ingress implementation owns a KIngress.
pub const INGRESS_CLASS_ANNOTATION: &str = "networking.knative.dev/ingress.class";
/// Knoxy's ingress class (`config-network: ingress-class`).
pub const KNOXY_INGRESS_CLASS: &str = "knoxy.ingress.networking.knative.dev";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KIngress {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: IngressSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    /// RFC 3339, as the API server sets it (`2024-05-01T12:00:00Z`); absent in most files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// The API server's version of the object; the Kubernetes source takes it off what it keeps.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

impl ObjectMeta {
    /// `namespace/name`, the key objects are stored and referred to by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// When the object was created, in nanoseconds since 1970; None when the timestamp is
    /// absent or not RFC 3339.
    pub fn created(&self) -> Option<i128> {
        self.creation_timestamp.as_deref().and_then(rfc3339_nanos)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` in nanoseconds since 1970-01-01T00:00:00Z.
pub fn rfc3339_nanos(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // 60 is a leap second.
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if at(i, b".") {
        let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Digits past the ninth are below a nanosecond.
        let kept = digits.min(9);
        nanos = num(i + 1..i + 1 + kept)? * 10i64.pow(9 - kept as u32);
        i += 1 + digits;
    }
    let offset = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset * 60;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (eras of 400 years).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<IngressTls>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<IngressRule>,
    /// `Enabled`, `Redirected`, or empty.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "httpOption"
    )]
    pub http_option: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// Empty matches every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `ExternalIP` (the default) or `ClusterLocal`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub visibility: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngressRuleValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpIngressRuleValue {
    /// Always emitted by Go, as `null` when absent.
    #[serde(default)]
    pub paths: Option<Vec<HttpIngressPath>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpIngressPath {
    /// A literal prefix; empty is a catch-all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rewrite_host: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderMatch>,
    #[serde(default)]
    pub splits: Option<Vec<IngressBackendSplit>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub append_headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    #[serde(default)]
    pub exact: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressBackendSplit {
    #[serde(default)]
    pub service_namespace: String,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub service_port: IntOrString,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub percent: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub append_headers: BTreeMap<String, String>,
}

/// Kubernetes' `intstr.IntOrString`: a port number or a port name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl KIngress {
    /// Whether Knoxy owns this KIngress: the class annotation is exactly Knoxy's.
    pub fn is_knoxy(&self) -> bool {
        self.has_class(KNOXY_INGRESS_CLASS)
    }

    /// Whether the class annotation is exactly `class` (absent or different: not ours).
    pub fn has_class(&self, class: &str) -> bool {
        self.metadata
            .annotations
            .get(INGRESS_CLASS_ANNOTATION)
            .map(String::as_str)
            == Some(class)
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_become_instants_that_compare_across_offsets() {
        let cases: &[(&str, Option<i128>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:01.5Z", Some(1_500_000_000)),
            ("2024-05-01T12:00:00Z", Some(1_714_564_800_000_000_000)),
            ("2024-05-01T14:00:00+02:00", Some(1_714_564_800_000_000_000)),
            ("2024-05-01t11:30:00-00:30", Some(1_714_564_800_000_000_000)),
            (
                "2000-02-29T00:00:00.123456789123Z",
                Some(951_782_400_123_456_789),
            ),
            ("1969-12-31T23:59:59Z", Some(-1_000_000_000)),
            ("2024-05-01", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-05-01T24:00:00Z", None),
            ("2024-05-01T12:00:00", None),
            ("2024-05-01T12:00:00.Z", None),
            ("2024-05-01T12:00:00+2:00", None),
            ("2024-05-01T12:00:00Zjunk", None),
            ("２０２４-05-01T12:00:00Z", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(rfc3339_nanos(text), *want, "{text}");
        }
    }
}
