//! `serving.knative.dev/v1beta1` DomainMapping (contract `autoscaler-local.md` §4.6, §5 item
//! 41; `ingress-activator.md` §2.4): a host of one's own for a Service. Validated as the
//! webhook does; claimed through a `ClusterDomainClaim` (or `autocreate-cluster-domain-claims`);
//! its reference resolved to a Service's cluster-local address in the same namespace; and its
//! KIngress, one rule sending the host, rewritten, back through the gateway's private
//! listener to the Service's Route, with `K-Original-Host` so the app sees the mapped host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::status::{all, condition, Address, Condition};
use super::traffic::{dns1123, Status};
use crate::kingress::{
    HttpIngressPath, HttpIngressRuleValue, IngressBackendSplit, IngressRule, IngressSpec,
    IntOrString, KIngress, ObjectMeta, INGRESS_CLASS_ANNOTATION,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainMapping {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DomainMappingSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainMappingSpec {
    #[serde(rename = "ref", default)]
    pub reference: Reference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
}

/// `spec.ref`: what the host maps to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reference {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// `networking.internal.knative.dev/v1alpha1` ClusterDomainClaim: a host given to a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClusterDomainClaim {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ClaimSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ClaimSpec {
    #[serde(default)]
    pub namespace: String,
}

/// A DomainMapping's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainMappingStatus {
    pub url: String,
    pub address: Address,
    pub conditions: Vec<Condition>,
}

/// What the reconciler found for one DomainMapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The namespace whose claim holds the host (None: no claim).
    pub claimed_by: Option<String>,
    /// `autocreate-cluster-domain-claims`.
    pub autocreate: bool,
    /// The reference's resolved address, or why it did not resolve.
    pub resolved: Result<String, String>,
    /// `default-external-scheme`.
    pub scheme: String,
}

impl DomainMapping {
    /// The webhook's checks, every failure, in Knative's words.
    pub fn validate(&self, cluster_domain: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let name = &self.metadata.name;
        if !fqdn(name) {
            errors.push(format!(
                "invalid value: {name}: metadata.name\nmust be a valid fully qualified domain name"
            ));
        }
        let internal = format!(".svc.{cluster_domain}");
        if name.ends_with(&internal) {
            errors.push(format!(
                "invalid value: {name}: metadata.name\nmust not be a subdomain of cluster local domain \"{}\"",
                &internal[1..]
            ));
        }
        let r = &self.spec.reference;
        if r.name.is_empty() {
            errors.push("missing field(s): spec.ref.name".to_owned());
        }
        if r.kind.is_empty() {
            errors.push("missing field(s): spec.ref.kind".to_owned());
        }
        if r.api_version.is_empty() {
            errors.push("missing field(s): spec.ref.apiVersion".to_owned());
        }
        if !r.namespace.is_empty() && r.namespace != self.metadata.namespace {
            errors.push(format!(
                "mismatched namespaces: {}: spec.ref.namespace\nref namespace must match DomainMapping namespace",
                r.namespace
            ));
        }
        errors
    }
}

/// The claim, the reference and the KIngress make the conditions; Ready is their conjunction.
pub fn status(dm: &DomainMapping, facts: &Facts) -> DomainMappingStatus {
    let ns = &dm.metadata.namespace;
    let claimed = match &facts.claimed_by {
        Some(owner) if owner == ns => condition("DomainClaimed", Status::True, "", ""),
        None if facts.autocreate => condition("DomainClaimed", Status::True, "", ""),
        _ => condition(
            "DomainClaimed",
            Status::False,
            "DomainAlreadyClaimed",
            "The domain name is already in use by another DomainMapping",
        ),
    };
    let resolved = match &facts.resolved {
        Ok(_) => condition("ReferenceResolved", Status::True, "", ""),
        Err(why) => condition("ReferenceResolved", Status::False, "ResolveFailed", why),
    };
    let ingress = if claimed.status == Status::True && resolved.status == Status::True {
        condition("IngressReady", Status::True, "", "")
    } else {
        condition(
            "IngressReady",
            Status::Unknown,
            "IngressNotConfigured",
            "Ingress has not yet been reconciled.",
        )
    };
    let cert = condition(
        "CertificateProvisioned",
        Status::True,
        "TLSNotEnabled",
        "external-domain-tls is not enabled",
    );
    let ready = all("Ready", &[&claimed, &resolved, &ingress, &cert]);
    let url = format!("{}://{}", facts.scheme, dm.metadata.name);
    let mut conditions = vec![cert, claimed, ingress, ready, resolved];
    conditions.sort_by_key(|c| c.kind);
    DomainMappingStatus {
        address: Address { url: url.clone() },
        url,
        conditions,
    }
}

/// Why a claim is missing, as the reconciler's error says it.
pub fn unclaimed(host: &str) -> String {
    format!(
        "no ClusterDomainClaim found for domain {host:?} (and autocreate-cluster-domain-claims property is not true)"
    )
}

/// The KIngress of a claimed DomainMapping whose reference resolved to `address`
/// (`http://<service>.<ns>.svc.<cluster-domain>`): its host, rewritten to that address's
/// host, to the Service's placeholder (which leads back into the private listener).
pub fn ingress(dm: &DomainMapping, address: &str, class: &str) -> KIngress {
    let host = dm.metadata.name.clone();
    let ns = dm.metadata.namespace.clone();
    let target = address
        .split_once("://")
        .map_or(address, |(_, h)| h)
        .to_owned();
    KIngress {
        metadata: ObjectMeta {
            name: host.clone(),
            namespace: ns.clone(),
            labels: BTreeMap::from([(
                "serving.knative.dev/domainMappingNamespace".to_owned(),
                ns.clone(),
            )]),
            annotations: BTreeMap::from([(INGRESS_CLASS_ANNOTATION.to_owned(), class.to_owned())]),
            ..ObjectMeta::default()
        },
        spec: IngressSpec {
            tls: Vec::new(),
            rules: vec![IngressRule {
                hosts: vec![host.clone()],
                visibility: "ExternalIP".to_owned(),
                http: Some(HttpIngressRuleValue {
                    paths: Some(vec![HttpIngressPath {
                        rewrite_host: target,
                        splits: Some(vec![IngressBackendSplit {
                            service_namespace: ns,
                            service_name: dm.spec.reference.name.clone(),
                            service_port: IntOrString::Int(80),
                            percent: 100,
                            append_headers: BTreeMap::from([("K-Original-Host".to_owned(), host)]),
                        }]),
                        ..HttpIngressPath::default()
                    }]),
                }),
            }],
            http_option: String::new(),
        },
    }
}

/// A fully qualified domain name: at least two DNS-1123 labels, at most 253 characters.
fn fqdn(name: &str) -> bool {
    name.len() <= 253 && name.contains('.') && name.split('.').all(dns1123)
}

#[cfg(test)]
mod tests;
