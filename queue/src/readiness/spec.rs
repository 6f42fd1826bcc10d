//! `SERVING_READINESS_PROBE`: the user container's readiness probe as Kubernetes JSON, after
//! the webhook's defaulting and the controller's rewrite (contract §1.4).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// One probe the queue runs against a container of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub handler: Handler,
    /// `timeoutSeconds`, used in standard mode only.
    pub timeout: Duration,
    /// `periodSeconds` 0 selects the aggressive mode (probe every 50 ms for up to 10 s).
    pub aggressive: bool,
    /// Consecutive successes needed in aggressive mode (at least 1).
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Tcp {
        host: String,
        port: u16,
    },
    Http {
        scheme: Scheme,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Grpc {
        port: u16,
        service: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("expected a JSON array of probes (ENABLE_MULTI_CONTAINER_PROBES is true)")]
    ExpectedArray,
    #[error("expected a JSON object (ENABLE_MULTI_CONTAINER_PROBES is not true)")]
    ExpectedObject,
    #[error("{field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("exec probe not supported")]
    Exec,
}

// === Decoding ===

/// Decodes the variable; `multi` is `ENABLE_MULTI_CONTAINER_PROBES`.
pub fn decode(json: &str, multi: bool, user_port: u16) -> Result<Vec<ProbeSpec>, SpecError> {
    let value: Value = serde_json::from_str(json).map_err(|e| SpecError::Json(e.to_string()))?;
    match (multi, value) {
        (true, Value::Array(items)) => items.into_iter().map(|v| one(v, user_port)).collect(),
        (true, _) => Err(SpecError::ExpectedArray),
        (false, v @ Value::Object(_)) => Ok(vec![one(v, user_port)?]),
        (false, _) => Err(SpecError::ExpectedObject),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawProbe {
    tcp_socket: Option<RawTcp>,
    http_get: Option<RawHttp>,
    grpc: Option<RawGrpc>,
    exec: Option<Value>,
    timeout_seconds: i32,
    period_seconds: i32,
    success_threshold: i32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTcp {
    host: String,
    port: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawHttp {
    host: String,
    port: Value,
    path: String,
    scheme: String,
    http_headers: Vec<RawHeader>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHeader {
    name: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawGrpc {
    port: Value,
    service: Option<String>,
}

fn one(value: Value, user_port: u16) -> Result<ProbeSpec, SpecError> {
    let raw: RawProbe =
        serde_json::from_value(value).map_err(|e| SpecError::Json(e.to_string()))?;
    let host = |h: String| {
        if h.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            h
        }
    };
    let handler = if let Some(tcp) = raw.tcp_socket {
        Handler::Tcp {
            host: host(tcp.host),
            port: port("tcpSocket.port", &tcp.port, user_port)?,
        }
    } else if let Some(http) = raw.http_get {
        let scheme = match http.scheme.to_ascii_uppercase().as_str() {
            "" | "HTTP" => Scheme::Http,
            "HTTPS" => Scheme::Https,
            other => {
                return Err(SpecError::Field {
                    field: "httpGet.scheme",
                    problem: format!("unknown scheme {other:?}"),
                })
            }
        };
        Handler::Http {
            scheme,
            host: host(http.host),
            port: port("httpGet.port", &http.port, user_port)?,
            path: http.path,
            headers: http
                .http_headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
        }
    } else if let Some(grpc) = raw.grpc {
        Handler::Grpc {
            port: port("grpc.port", &grpc.port, user_port)?,
            service: grpc.service.unwrap_or_default(),
        }
    } else if raw.exec.is_some() {
        return Err(SpecError::Exec);
    } else {
        // The webhook gives a probe without a handler `tcpSocket: {}`.
        Handler::Tcp {
            host: "127.0.0.1".to_owned(),
            port: user_port,
        }
    };
    let aggressive = raw.period_seconds == 0;
    let timeout_secs = if aggressive {
        raw.timeout_seconds
    } else {
        raw.timeout_seconds.max(1)
    };
    Ok(ProbeSpec {
        handler,
        timeout: Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0)),
        aggressive,
        success_threshold: u32::try_from(raw.success_threshold).unwrap_or(1).max(1),
    })
}

/// A numeric port, or the user port when it is 0, absent or named (an IntOrString).
fn port(field: &'static str, value: &Value, user_port: u16) -> Result<u16, SpecError> {
    match value {
        Value::Null | Value::String(_) => Ok(user_port),
        Value::Number(n) => match n.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(0) => Ok(user_port),
            Some(p) => Ok(p),
            None => Err(SpecError::Field {
                field,
                problem: format!("{n} is not a port number"),
            }),
        },
        other => Err(SpecError::Field {
            field,
            problem: format!("{other} is not a port"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16) -> Handler {
        Handler::Tcp {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn default_probe_is_an_aggressive_tcp_check() {
        let p = decode(
            r#"{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}"#,
            false,
            8080,
        )
        .expect("valid probe");
        assert_eq!(
            p,
            vec![ProbeSpec {
                handler: tcp(8080),
                timeout: Duration::ZERO,
                aggressive: true,
                success_threshold: 1
            }]
        );
    }

    #[test]
    fn http_probe_keeps_path_headers_and_standard_timing() {
        let json = r#"{"httpGet":{"path":"/healthz","port":8080,"host":"127.0.0.1","scheme":"HTTP","httpHeaders":[{"name":"X-Custom","value":"v"}]},"timeoutSeconds":1,"periodSeconds":5,"successThreshold":1,"failureThreshold":3}"#;
        let p = decode(json, false, 8080).expect("valid probe");
        assert_eq!(
            p[0].handler,
            Handler::Http {
                scheme: Scheme::Http,
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-Custom".into(), "v".into())]
            }
        );
        assert!(!p[0].aggressive);
        assert_eq!(p[0].timeout, Duration::from_secs(1));
    }

    #[test]
    fn grpc_probe_and_named_port_fall_back_to_user_port() {
        let p = decode(r#"{"grpc":{"port":"h2c"}}"#, false, 9000).expect("valid probe");
        assert_eq!(
            p[0].handler,
            Handler::Grpc {
                port: 9000,
                service: String::new()
            }
        );
    }

    #[test]
    fn probe_without_handler_is_tcp_on_user_port() {
        let p = decode("{}", false, 8081).expect("valid probe");
        assert_eq!(p[0].handler, tcp(8081));
    }

    #[test]
    fn multi_container_form_must_match_the_flag() {
        assert_eq!(
            decode(r#"{"tcpSocket":{}}"#, true, 1),
            Err(SpecError::ExpectedArray)
        );
        assert_eq!(
            decode(r#"[{"tcpSocket":{}}]"#, false, 1),
            Err(SpecError::ExpectedObject)
        );
        let two = decode(
            r#"[{"tcpSocket":{"port":1}},{"tcpSocket":{"port":2}}]"#,
            true,
            9,
        )
        .expect("valid array");
        assert_eq!(
            two.iter().map(|p| p.handler.clone()).collect::<Vec<_>>(),
            vec![tcp(1), tcp(2)]
        );
    }

    #[test]
    fn bad_json_and_bad_ports_are_errors() {
        assert!(matches!(decode("{bad", false, 1), Err(SpecError::Json(_))));
        assert!(matches!(
            decode(r#"{"tcpSocket":{"port":70000}}"#, false, 1),
            Err(SpecError::Field {
                field: "tcpSocket.port",
                ..
            })
        ));
        assert_eq!(
            decode(r#"{"exec":{"command":["true"]}}"#, false, 1),
            Err(SpecError::Exec)
        );
    }
}
