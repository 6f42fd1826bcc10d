//! A KIngress's `status` as Knative's condition manager writes it (contract
//! `ingress-activator.md` §1.4): `NetworkConfigured` and `LoadBalancerReady`, with `Ready`
//! their conjunction, `observedGeneration`, and the gateway's Services as the public and
//! private load balancers. `LoadBalancerReady` turns True only once every gateway replica
//! serves this generation. Pure: the times come in, the patch goes out.

use serde::Serialize;
use serde_json::{json, Value};

use crate::derive::IngressStatus;
use crate::serving::status::{all, condition, Condition};
use crate::serving::traffic::Status;

/// `MarkLoadBalancerNotReady`'s words.
const WAITING: (&str, &str) = ("Uninitialized", "Waiting for load balancer to be ready");

/// The gateway's Services, as `status.{public,private}LoadBalancer` name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancers {
    pub public: String,
    pub private: String,
}

impl Balancers {
    /// `<name>.<namespace>.svc.<cluster domain>` of each Service, given as `(namespace, name)`.
    pub fn new(public: (&str, &str), private: (&str, &str), cluster_domain: &str) -> Balancers {
        let fqdn =
            |(namespace, name): (&str, &str)| format!("{name}.{namespace}.svc.{cluster_domain}");
        Balancers {
            public: fqdn(public),
            private: fqdn(private),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KIngressStatus {
    pub observed_generation: i64,
    pub conditions: Vec<Condition>,
    pub public_load_balancer: LoadBalancer,
    pub private_load_balancer: LoadBalancer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadBalancer {
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    pub domain_internal: String,
}

/// The status of a KIngress at `generation`, given what this gateway derived for it and
/// whether every gateway replica serves that generation.
pub fn ingress_status(
    derived: &IngressStatus,
    generation: i64,
    everywhere: bool,
    balancers: &Balancers,
) -> KIngressStatus {
    let configured = condition("NetworkConfigured", Status::True, "", "");
    let (network, balancer) = match derived {
        IngressStatus::Ready { .. } if everywhere => (
            configured,
            condition("LoadBalancerReady", Status::True, "", ""),
        ),
        IngressStatus::Ready { .. } => (
            configured,
            condition("LoadBalancerReady", Status::Unknown, WAITING.0, WAITING.1),
        ),
        IngressStatus::NotReady { reason, message } => (
            configured,
            condition("LoadBalancerReady", Status::Unknown, reason, message),
        ),
        IngressStatus::Conflict { host } => (
            configured,
            condition(
                "LoadBalancerReady",
                Status::False,
                "DomainConflict",
                &format!("host {host} is already served by another KIngress"),
            ),
        ),
        IngressStatus::Invalid { errors, .. } => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            (
                condition(
                    "NetworkConfigured",
                    Status::False,
                    "Invalid",
                    &errors.join("; "),
                ),
                condition("LoadBalancerReady", Status::Unknown, WAITING.0, WAITING.1),
            )
        }
    };
    let ready = all("Ready", &[&balancer, &network]);
    let lb = |domain: &str| LoadBalancer {
        ingress: vec![LoadBalancerIngress {
            domain_internal: domain.to_owned(),
        }],
    };
    KIngressStatus {
        observed_generation: generation,
        // Sorted by type, as Knative keeps them.
        conditions: vec![balancer, network, ready],
        public_load_balancer: lb(&balancers.public),
        private_load_balancer: lb(&balancers.private),
    }
}

/// The `status` to write, with each condition's `lastTransitionTime` kept from `observed`
/// while its status stays and `now` (RFC 3339) when it moves; None when `observed`
/// already says exactly that, so an unchanged KIngress is never written.
pub fn status_update(
    desired: &KIngressStatus,
    observed: Option<&Value>,
    now: &str,
) -> Option<Value> {
    let mut value = serde_json::to_value(desired).ok()?;
    let before = |kind: &str| {
        observed?["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind)
    };
    if let Some(conditions) = value["conditions"].as_array_mut() {
        for c in conditions {
            let kept = before(c["type"].as_str().unwrap_or_default())
                .filter(|old| old["status"] == c["status"])
                .map(|old| old["lastTransitionTime"].clone())
                .filter(Value::is_string);
            c["lastTransitionTime"] = kept.unwrap_or_else(|| json!(now));
        }
    }
    (observed != Some(&value)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::FieldError;

    fn lb() -> Balancers {
        Balancers::new(
            ("knoxy-system", "knoxy"),
            ("knoxy-system", "knoxy-internal"),
            "cluster.local",
        )
    }

    fn ready() -> IngressStatus {
        IngressStatus::Ready { hash: "h".into() }
    }

    /// `(type, status, reason)` of each condition, in order.
    fn summary(s: &KIngressStatus) -> Vec<(&str, Status, &str)> {
        s.conditions
            .iter()
            .map(|c| (c.kind, c.status, c.reason.as_str()))
            .collect()
    }

    #[test]
    fn conditions_as_knative_derives_them() {
        use Status::{False, True, Unknown};
        type Want = [(&'static str, Status, &'static str); 3];
        let cases: [(IngressStatus, bool, Want); 5] = [
            (
                ready(),
                true,
                [
                    ("LoadBalancerReady", True, ""),
                    ("NetworkConfigured", True, ""),
                    ("Ready", True, ""),
                ],
            ),
            (
                ready(),
                false,
                [
                    ("LoadBalancerReady", Unknown, "Uninitialized"),
                    ("NetworkConfigured", True, ""),
                    ("Ready", Unknown, "Uninitialized"),
                ],
            ),
            (
                IngressStatus::NotReady {
                    reason: "ServiceNotFound",
                    message: "no Service ns/a".into(),
                },
                true,
                [
                    ("LoadBalancerReady", Unknown, "ServiceNotFound"),
                    ("NetworkConfigured", True, ""),
                    ("Ready", Unknown, "ServiceNotFound"),
                ],
            ),
            (
                IngressStatus::Conflict {
                    host: "a.example.com".into(),
                },
                true,
                [
                    ("LoadBalancerReady", False, "DomainConflict"),
                    ("NetworkConfigured", True, ""),
                    ("Ready", False, "DomainConflict"),
                ],
            ),
            (
                IngressStatus::Invalid {
                    errors: vec![FieldError {
                        field: "spec.rules".into(),
                        problem: "must not be empty".into(),
                    }],
                    serving: None,
                },
                true,
                [
                    ("LoadBalancerReady", Unknown, "Uninitialized"),
                    ("NetworkConfigured", False, "Invalid"),
                    ("Ready", False, "Invalid"),
                ],
            ),
        ];
        for (derived, everywhere, want) in cases {
            let got = ingress_status(&derived, 4, everywhere, &lb());
            assert_eq!(summary(&got), want, "{derived:?} everywhere={everywhere}");
            assert_eq!(got.observed_generation, 4);
        }
    }

    #[test]
    fn the_load_balancers_name_the_gateway_services_as_kourier_does() {
        let v = serde_json::to_value(ingress_status(&ready(), 1, true, &lb())).expect("JSON");
        assert_eq!(
            v["publicLoadBalancer"],
            json!({"ingress": [{"domainInternal": "knoxy.knoxy-system.svc.cluster.local"}]})
        );
        assert_eq!(
            v["privateLoadBalancer"],
            json!({"ingress": [{"domainInternal": "knoxy-internal.knoxy-system.svc.cluster.local"}]})
        );
        assert_eq!(v["observedGeneration"], 1);
    }

    #[test]
    fn transition_times_move_only_with_the_status_and_a_written_status_is_not_written_again() {
        let t0 = "2026-12-01T10:00:00Z";
        let t1 = "2026-12-01T10:00:05Z";
        let waiting = ingress_status(&ready(), 2, false, &lb());
        let first = status_update(&waiting, None, t0).expect("nothing was written yet");
        assert!(first["conditions"]
            .as_array()
            .expect("list")
            .iter()
            .all(|c| c["lastTransitionTime"] == t0));
        assert_eq!(
            status_update(&waiting, Some(&first), t1),
            None,
            "the same status again"
        );
        let served = ingress_status(&ready(), 2, true, &lb());
        let second = status_update(&served, Some(&first), t1).expect("LoadBalancerReady moved");
        let time = |v: &Value, kind: &str| {
            v["conditions"]
                .as_array()
                .expect("list")
                .iter()
                .find(|c| c["type"] == kind)
                .expect("present")["lastTransitionTime"]
                .clone()
        };
        assert_eq!(time(&second, "NetworkConfigured"), t0);
        assert_eq!(time(&second, "LoadBalancerReady"), t1);
        assert_eq!(time(&second, "Ready"), t1);
    }
}
