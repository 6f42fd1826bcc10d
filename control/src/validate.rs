//! The webhook's defaulting and validation of a KIngress (contract §1.3), so that objects
//! from files get what objects from the API server already had. Errors name the field.

use crate::kingress::{IngressSpec, IntOrString, KIngress};

pub const EXTERNAL_IP: &str = "ExternalIP";
pub const CLUSTER_LOCAL: &str = "ClusterLocal";

/// One problem, at a JSON path such as `spec.rules[0].http.paths[1].splits`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

/// Knative's defaults: visibility `ExternalIP`; a lone split with percent 0 carries 100.
pub fn set_defaults(spec: &mut IngressSpec) {
    for rule in &mut spec.rules {
        if rule.visibility.is_empty() {
            rule.visibility = EXTERNAL_IP.to_owned();
        }
        let paths = rule
            .http
            .iter_mut()
            .flat_map(|h| h.paths.iter_mut().flatten());
        for path in paths {
            if let Some([only]) = path.splits.as_deref_mut() {
                if only.percent == 0 {
                    only.percent = 100;
                }
            }
        }
    }
}

/// Every problem of the object, in field order.
pub fn validate(ingress: &KIngress) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |field: String, problem: &str| {
        errors.push(FieldError {
            field,
            problem: problem.to_owned(),
        })
    };
    let spec = &ingress.spec;
    if spec.rules.is_empty() {
        err("spec.rules".into(), "at least one rule is required");
    }
    for (i, tls) in spec.tls.iter().enumerate() {
        if tls.secret_name.is_empty() {
            err(format!("spec.tls[{i}].secretName"), "missing field(s)");
        }
        if tls.secret_namespace.is_empty() {
            err(format!("spec.tls[{i}].secretNamespace"), "missing field(s)");
        }
    }
    if !matches!(spec.http_option.as_str(), "" | "Enabled" | "Redirected") {
        err("spec.httpOption".into(), "must be Enabled or Redirected");
    }
    for (r, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{r}]");
        if !matches!(rule.visibility.as_str(), "" | EXTERNAL_IP | CLUSTER_LOCAL) {
            err(
                format!("{at}.visibility"),
                "must be ExternalIP or ClusterLocal",
            );
        }
        let Some(http) = &rule.http else {
            err(format!("{at}.http"), "missing field(s)");
            continue;
        };
        let paths = http.paths.as_deref().unwrap_or_default();
        if paths.is_empty() {
            err(format!("{at}.http.paths"), "at least one path is required");
        }
        for (p, path) in paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{p}]");
            if !path.path.is_empty() && !path.path.starts_with('/') {
                err(format!("{at}.path"), "must start with /");
            }
            // Beyond Knative's webhook: the gateway must be able to send what it is told to.
            for (name, value) in &path.append_headers {
                check_header(
                    &mut err,
                    &format!("{at}.appendHeaders[{name}]"),
                    name,
                    value,
                );
            }
            for (name, matcher) in &path.headers {
                check_header(
                    &mut err,
                    &format!("{at}.headers[{name}]"),
                    name,
                    &matcher.exact,
                );
            }
            if !path.rewrite_host.is_empty()
                && http::uri::Authority::try_from(path.rewrite_host.as_str()).is_err()
            {
                err(format!("{at}.rewriteHost"), "not a valid host name");
            }
            let splits = path.splits.as_deref().unwrap_or_default();
            if splits.is_empty() {
                err(format!("{at}.splits"), "at least one split is required");
            }
            // Checked: percents are input, and their sum may overflow.
            let total = splits
                .iter()
                .try_fold(0i64, |t, s| t.checked_add(s.percent));
            let balanced = total == Some(100) || splits.len() == 1 && total == Some(0);
            if !splits.is_empty() && !balanced {
                err(format!("{at}.splits"), "the percentages must add up to 100");
            }
            for (s, split) in splits.iter().enumerate() {
                let at = format!("{at}.splits[{s}]");
                if !(0..=100).contains(&split.percent) {
                    err(format!("{at}.percent"), "must be between 0 and 100");
                }
                if split.service_namespace != ingress.metadata.namespace {
                    err(
                        format!("{at}.serviceNamespace"),
                        "must be the KIngress's namespace",
                    );
                }
                if split.service_name.is_empty() {
                    err(format!("{at}.serviceName"), "missing field(s)");
                }
                for (name, value) in &split.append_headers {
                    check_header(
                        &mut err,
                        &format!("{at}.appendHeaders[{name}]"),
                        name,
                        value,
                    );
                }
                if matches!(&split.service_port, IntOrString::Int(0))
                    || split.service_port == IntOrString::String(String::new())
                {
                    err(format!("{at}.servicePort"), "missing field(s)");
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_header(err: &mut impl FnMut(String, &str), at: &str, name: &str, value: &str) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        err(at.to_owned(), "not a valid header name");
    } else if http::HeaderValue::from_str(value).is_err() {
        err(at.to_owned(), "not a valid header value");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(spec: &str) -> KIngress {
        let json =
            format!(r#"{{"metadata":{{"name":"hello","namespace":"default"}},"spec":{spec}}}"#);
        serde_json::from_str(&json).expect("valid JSON")
    }

    fn fields(spec: &str) -> Vec<String> {
        match validate(&ingress(spec)) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    const SPLIT: &str =
        r#"{"serviceNamespace":"default","serviceName":"hello-00001","servicePort":80}"#;

    #[test]
    fn a_lone_split_defaults_to_100_and_visibility_to_external_ip() {
        let mut ing = ingress(&format!(
            r#"{{"rules":[{{"http":{{"paths":[{{"splits":[{SPLIT}]}}]}}}}]}}"#
        ));
        set_defaults(&mut ing.spec);
        assert_eq!(ing.spec.rules[0].visibility, EXTERNAL_IP);
        assert_eq!(
            ing.spec.rules[0]
                .http
                .as_ref()
                .and_then(|h| h.paths.as_ref())
                .map(|p| p[0].splits.as_ref().map(|s| s[0].percent)),
            Some(Some(100))
        );
        assert_eq!(validate(&ing), Ok(()));
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        assert_eq!(fields("{}"), ["spec.rules"]);
        assert_eq!(fields(r#"{"rules":[{}]}"#), ["spec.rules[0].http"]);
        assert_eq!(
            fields(r#"{"rules":[{"http":{"paths":[]}}]}"#),
            ["spec.rules[0].http.paths"]
        );
        let two = r#"{"rules":[{"visibility":"Public","http":{"paths":[{"path":"x","splits":[{"serviceNamespace":"other","serviceName":"","servicePort":0,"percent":60},{"serviceNamespace":"default","serviceName":"b","servicePort":"http","percent":120}]}]}}],"httpOption":"Sometimes","tls":[{"hosts":["h"]}]}"#;
        assert_eq!(
            fields(two),
            [
                "spec.tls[0].secretName",
                "spec.tls[0].secretNamespace",
                "spec.httpOption",
                "spec.rules[0].visibility",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].splits",
                "spec.rules[0].http.paths[0].splits[0].serviceNamespace",
                "spec.rules[0].http.paths[0].splits[0].serviceName",
                "spec.rules[0].http.paths[0].splits[0].servicePort",
                "spec.rules[0].http.paths[0].splits[1].percent",
            ]
        );
    }

    #[test]
    fn headers_the_gateway_could_not_send_are_named() {
        let spec = r#"{"rules":[{"http":{"paths":[{"appendHeaders":{"Bad Name":"x","Ok":"line\nbreak"},"headers":{"K":{"exact":"v"}},"rewriteHost":"my host","splits":[{"serviceNamespace":"default","serviceName":"s","servicePort":80,"appendHeaders":{"(x)":"y"}}]}]}}]}"#;
        assert_eq!(
            fields(spec),
            [
                "spec.rules[0].http.paths[0].appendHeaders[Bad Name]",
                "spec.rules[0].http.paths[0].appendHeaders[Ok]",
                "spec.rules[0].http.paths[0].rewriteHost",
                "spec.rules[0].http.paths[0].splits[0].appendHeaders[(x)]",
            ]
        );
    }

    #[test]
    fn percentages_must_add_up_to_100() {
        let split = |p: i64| SPLIT.replace("80}", &format!("80,\"percent\":{p}}}"));
        let spec = |a: i64, b: i64| {
            format!(
                r#"{{"rules":[{{"http":{{"paths":[{{"splits":[{},{}]}}]}}}}]}}"#,
                split(a),
                split(b)
            )
        };
        assert_eq!(fields(&spec(90, 10)), Vec::<String>::new());
        assert_eq!(fields(&spec(100, 0)), Vec::<String>::new());
        assert_eq!(
            fields(&spec(50, 10)),
            ["spec.rules[0].http.paths[0].splits"]
        );
        assert_eq!(
            fields(&spec(i64::MAX, 1)),
            [
                "spec.rules[0].http.paths[0].splits",
                "spec.rules[0].http.paths[0].splits[0].percent"
            ],
            "a sum that overflows is no sum of 100"
        );
    }
}
