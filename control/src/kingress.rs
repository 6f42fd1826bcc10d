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
}

impl ObjectMeta {
    /// `namespace/name`, the key objects are stored and referred to by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
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
