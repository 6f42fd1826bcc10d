//! A Route's KIngress, as Knative's route reconciler builds it (contract
//! `ingress-activator.md` §2.1-2.3, `S/pkg/reconciler/route/resources/ingress.go`): traffic
//! groups (all targets under `""`, each tag under its name), hosts from the domain and tag
//! templates, one cluster-local rule with the expanded `svc` names and one external rule per
//! domain, a split per revision with Knative's headers. A pure function, table-tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::kingress::{
    HttpIngressPath, HttpIngressRuleValue, IngressBackendSplit, IngressRule, IngressSpec,
    IntOrString, KIngress, ObjectMeta, INGRESS_CLASS_ANNOTATION,
};

/// One traffic target, resolved to a revision (after Knative's flattening).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tag: Option<String>,
    pub revision: String,
    pub percent: i64,
    /// The configuration, for a `latestRevision` target.
    pub configuration: Option<String>,
    /// The revision's port is h2c (`servicePort` 81).
    pub h2c: bool,
}

/// The Route the KIngress is built for.
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub targets: Vec<Target>,
    /// Labelled `networking.knative.dev/visibility: cluster-local` (or no public domain).
    pub cluster_local: bool,
    /// Tags whose placeholder Service is labelled cluster-local.
    pub cluster_local_tags: BTreeSet<String>,
}

/// What `config-network` and `config-domain` say about hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The public domain for this route (`config-domain`); None: cluster-local only.
    pub domain: Option<String>,
    /// `{{.Name}}.{{.Namespace}}.{{.Domain}}` by default.
    pub domain_template: String,
    /// `{{.Tag}}-{{.Name}}` by default.
    pub tag_template: String,
    pub cluster_domain: String,
    pub ingress_class: String,
    /// `enabled`, `redirected` or `disabled`.
    pub http_protocol: String,
    /// The scheme of public URLs (`default-external-scheme`): `http` or `https`.
    pub external_scheme: String,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            domain: Some("example.com".to_owned()),
            domain_template: "{{.Name}}.{{.Namespace}}.{{.Domain}}".to_owned(),
            tag_template: "{{.Tag}}-{{.Name}}".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            ingress_class: crate::kingress::KNOXY_INGRESS_CLASS.to_owned(),
            http_protocol: "enabled".to_owned(),
            external_scheme: "http".to_owned(),
        }
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLOUT: &str = "networking.internal.knative.dev/rollout";
const TAG_TO_HOST: &str = "networking.internal.knative.dev/tag-to-host";

/// The KIngress of `route`.
pub fn ingress(route: &Route, net: &Network) -> KIngress {
    let groups = groups(&route.targets);
    let mut rules = Vec::new();
    let mut tag_to_host = BTreeMap::new();
    for (name, targets) in &groups {
        let local =
            route.cluster_local || route.cluster_local_tags.contains(name) || net.domain.is_none();
        let hostname = host_name(&route.name, name, &net.tag_template);
        let internal = format!("{hostname}.{}.svc.{}", route.namespace, net.cluster_domain);
        let paths = Some(vec![HttpIngressPath {
            splits: Some(splits(&route.namespace, targets)),
            ..HttpIngressPath::default()
        }]);
        let mut expanded: Vec<String> = vec![
            format!("{hostname}.{}", route.namespace),
            format!("{hostname}.{}.svc", route.namespace),
            internal.clone(),
        ];
        expanded.sort();
        rules.push(IngressRule {
            hosts: expanded,
            visibility: "ClusterLocal".to_owned(),
            http: Some(HttpIngressRuleValue {
                paths: paths.clone(),
            }),
        });
        let mut primary = vec![internal];
        if let (false, Some(domain)) = (local, &net.domain) {
            let external = fill(
                &net.domain_template,
                &[
                    ("Name", &hostname),
                    ("Namespace", &route.namespace),
                    ("Domain", domain),
                ],
            );
            primary.push(external.clone());
            rules.push(IngressRule {
                hosts: vec![external],
                visibility: "ExternalIP".to_owned(),
                http: Some(HttpIngressRuleValue { paths }),
            });
        }
        if !name.is_empty() {
            tag_to_host.insert(name.clone(), primary);
        }
    }

    let mut labels = route.labels.clone();
    labels.insert("serving.knative.dev/route".into(), route.name.clone());
    labels.insert(
        "serving.knative.dev/routeNamespace".into(),
        route.namespace.clone(),
    );
    let mut annotations = route.annotations.clone();
    annotations.remove(LAST_APPLIED);
    annotations.insert(INGRESS_CLASS_ANNOTATION.into(), net.ingress_class.clone());
    annotations.insert(ROLLOUT.into(), rollout(&groups));
    if !tag_to_host.is_empty() {
        annotations.insert(TAG_TO_HOST.into(), json(&tag_to_host));
    }
    KIngress {
        metadata: ObjectMeta {
            name: route.name.clone(),
            namespace: route.namespace.clone(),
            labels,
            annotations,
            ..ObjectMeta::default()
        },
        spec: IngressSpec {
            tls: Vec::new(),
            rules,
            http_option: http_option(route, net),
        },
    }
}

/// Targets under `""` (all of them) and under each tag; duplicates of a revision merged,
/// their percents summed; a group of one entry takes 100%.
fn groups(targets: &[Target]) -> BTreeMap<String, Vec<Target>> {
    let mut groups: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for t in targets {
        let names = std::iter::once(String::new()).chain(t.tag.clone());
        for name in names {
            let group = groups.entry(name).or_default();
            match group.iter_mut().find(|g| g.revision == t.revision) {
                Some(same) => same.percent += t.percent,
                None => group.push(t.clone()),
            }
        }
    }
    for group in groups.values_mut() {
        if let [only] = group.as_mut_slice() {
            only.percent = 100;
        }
    }
    groups
}

/// A split per revision with traffic (0% targets are left out), with the headers Knative's
/// activator reads.
fn splits(namespace: &str, targets: &[Target]) -> Vec<IngressBackendSplit> {
    targets
        .iter()
        .filter(|t| t.percent > 0)
        .map(|t| IngressBackendSplit {
            service_namespace: namespace.to_owned(),
            service_name: t.revision.clone(),
            service_port: IntOrString::Int(if t.h2c { 81 } else { 80 }),
            percent: t.percent,
            append_headers: BTreeMap::from([
                ("Knative-Serving-Namespace".to_owned(), namespace.to_owned()),
                ("Knative-Serving-Revision".to_owned(), t.revision.clone()),
            ]),
        })
        .collect()
}

/// The URL Knative writes for `route`'s traffic under `tag` (`""`: the route's own): its
/// public host from the domain template, or its cluster-local one without a domain.
pub fn url(route: &str, namespace: &str, tag: &str, net: &Network) -> String {
    let hostname = host_name(route, tag, &net.tag_template);
    match &net.domain {
        Some(domain) => format!(
            "{}://{}",
            net.external_scheme,
            fill(
                &net.domain_template,
                &[
                    ("Name", &hostname),
                    ("Namespace", namespace),
                    ("Domain", domain)
                ],
            )
        ),
        None => format!("http://{hostname}.{namespace}.svc.{}", net.cluster_domain),
    }
}

/// Why one of the Route's hosts (its own, then each tag's) is not a name Kubernetes accepts,
/// in Knative's `ErrorConfig` words: `domain name error: invalid domain name "<host>": ...`.
pub fn invalid_host<'a>(
    route: &str,
    namespace: &str,
    tags: impl IntoIterator<Item = &'a str>,
    net: &Network,
) -> Option<String> {
    std::iter::once("").chain(tags).find_map(|tag| {
        let url = url(route, namespace, tag, net);
        let host = url.split_once("://").map_or(url.as_str(), |(_, h)| h);
        let why = if host.len() > 253 {
            Some("must be no more than 253 characters")
        } else if !host.contains('.') {
            Some("should be a domain with at least two segments separated by dots")
        } else if host.split('.').any(|l| l.len() > 63) {
            Some("must be no more than 63 characters")
        } else if !host.split('.').all(super::traffic::dns1123) {
            Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")
        } else {
            None
        };
        why.map(|why| format!("domain name error: invalid domain name {host:?}: {why}"))
    })
}

fn host_name(route: &str, tag: &str, template: &str) -> String {
    if tag.is_empty() {
        route.to_owned()
    } else {
        fill(template, &[("Tag", tag), ("Name", route)])
    }
}

/// The route's annotation (`networking.knative.dev/http-protocol`, or the older
/// `httpOption`), else `config-network`'s `http-protocol`.
fn http_option(route: &Route, net: &Network) -> String {
    let annotated = [
        "networking.knative.dev/http-protocol",
        "networking.knative.dev/httpOption",
    ]
    .iter()
    .find_map(|k| route.annotations.get(*k));
    let option = |v: &str| match v.to_ascii_lowercase().as_str() {
        "enabled" => Some("Enabled"),
        "redirected" => Some("Redirected"),
        _ => None,
    };
    annotated
        .and_then(|v| option(v))
        .or_else(|| option(&net.http_protocol))
        .unwrap_or_default()
        .to_owned()
}

/// Knative's rollout state: one entry per traffic group's `latestRevision` target, no
/// gradual rollout in progress.
fn rollout(groups: &BTreeMap<String, Vec<Target>>) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Configuration<'a> {
        configuration_name: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        tag: &'a str,
        percent: i64,
        revisions: [Revision<'a>; 1],
        step_params: BTreeMap<String, i64>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Revision<'a> {
        revision_name: &'a str,
        percent: i64,
    }
    #[derive(Serialize)]
    struct Rollout<'a> {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        configurations: Vec<Configuration<'a>>,
    }
    let mut configurations = Vec::new();
    for (name, group) in groups {
        for t in group {
            let Some(config) = &t.configuration else {
                continue;
            };
            if t.percent > 0 {
                configurations.push(Configuration {
                    configuration_name: config,
                    tag: name,
                    percent: t.percent,
                    revisions: [Revision {
                        revision_name: &t.revision,
                        percent: t.percent,
                    }],
                    step_params: BTreeMap::new(),
                });
            }
        }
    }
    json(&Rollout { configurations })
}

/// Replaces `{{.Key}}` in a Go template with its value (the fields Knative's templates use).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{.{key}}}}}"), value)
        })
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests;
