//! What `knoxy local` reads (issue 14 items 1 and 3): Knative Services and DomainMappings
//! (with ClusterDomainClaims), Knative's own ConfigMaps (`config-autoscaler`,
//! `config-defaults`, `config-deployment`, `config-domain`, `config-gc`, `config-network`) as
//! a cluster holds them, and a `LocalConfig` mapping container images to local commands; from
//! files or directories, several documents per file. A bad document is an error naming its
//! file, document, object and field, and holds back only itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use knoxy_control::files::{documents, typed, FileError, Head};
use knoxy_control::kingress::ObjectMeta;
use knoxy_control::kpa::goparse::{self, GoDuration};
use knoxy_control::kpa::AutoscalerConfig;
use knoxy_control::serving::defaults::Defaults;
use knoxy_control::serving::domainmapping::{ClusterDomainClaim, DomainMapping};
use knoxy_control::serving::gc::GcConfig;
use knoxy_control::serving::ingress::Network;
use knoxy_control::serving::service::Service;
use serde::Deserialize;

/// Everything read, and what was wrong.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// By `namespace/name`.
    pub services: BTreeMap<String, Service>,
    pub autoscaler: AutoscalerConfig,
    /// `config-defaults`.
    pub defaults: Defaults,
    /// `config-gc`.
    pub gc: GcConfig,
    /// config-deployment's `progress-deadline` (None: Knative's 600 s).
    pub progress_deadline: Option<GoDuration>,
    pub domains: Domains,
    /// Templates and protocol; its `domain` is chosen per route by [`Domains`].
    pub network: Network,
    /// Image → the command that stands in for it.
    pub images: BTreeMap<String, Vec<String>>,
    /// DomainMappings by `namespace/name`.
    pub mappings: BTreeMap<String, DomainMapping>,
    /// ClusterDomainClaims: host → the namespace it is given to.
    pub claims: BTreeMap<String, String>,
    /// `config-network`'s `autocreate-cluster-domain-claims`.
    pub autocreate_claims: bool,
    /// `config-network`'s `rollout-duration`, in seconds.
    pub rollout_duration: i64,
    pub errors: Vec<FileError>,
    /// The file each object was read from.
    origins: BTreeMap<Object, PathBuf>,
}

/// An object read, as [`Input::held_over`] tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Object {
    Service(String),
    DomainMapping(String),
    Claim(String),
    ConfigMap(String),
    Image(String),
}

/// `config-domain`: domains with the label selectors that pick them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domains {
    /// (domain, selector); an empty selector is the default.
    entries: Vec<(String, BTreeMap<String, String>)>,
}

impl Default for Domains {
    /// Without `config-domain`, `example.com` (the default for local runs).
    fn default() -> Self {
        Domains {
            entries: vec![("example.com".to_owned(), BTreeMap::new())],
        }
    }
}

/// `knoxy.dev/v1alpha1` `LocalConfig`: how images run on this machine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalConfig {
    #[serde(default, rename = "apiVersion")]
    _api_version: String,
    #[serde(default, rename = "kind")]
    _kind: String,
    #[serde(default, rename = "metadata")]
    _metadata: Option<serde_norway::Value>,
    #[serde(default)]
    images: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ConfigMap {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// Reads every `*.yaml`/`*.yml` file of `paths` (files, or directories, not recursive):
/// the configuration first, then the Services it applies to.
pub fn read(paths: &[PathBuf]) -> Input {
    let mut input = Input::default();
    let mut docs = Vec::new();
    for path in paths {
        let files = match files_of(path) {
            Ok(f) => f,
            Err(e) => {
                input.errors.push(whole(path, e));
                continue;
            }
        };
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    for (number, doc) in documents(&text) {
                        match doc {
                            Ok(value) => docs.push((file.clone(), number, value)),
                            Err(e) => input.errors.push(FileError {
                                document: Some(number),
                                ..whole(&file, e)
                            }),
                        }
                    }
                }
                Err(e) => input.errors.push(whole(&file, e.to_string())),
            }
        }
    }
    // What the configuration applies to comes after it.
    let is_service = |v: &serde_norway::Value| {
        matches!(
            v.get("kind").and_then(|k| k.as_str()),
            Some("Service" | "DomainMapping")
        )
    };
    let (services, config): (Vec<_>, Vec<_>) =
        docs.into_iter().partition(|(_, _, v)| is_service(v));
    for (file, number, value) in config.into_iter().chain(services) {
        if let Err((object, message)) = add(value, &file, &mut input) {
            input.errors.push(FileError {
                file,
                document: Some(number),
                object,
                message,
            });
        }
    }
    input
}

impl Input {
    /// This reading, with what a file with errors held last time and no longer yields kept
    /// from `previous`: a bad edit leaves what runs running.
    pub fn held_over(mut self, previous: &Input) -> Input {
        let bad: Vec<&PathBuf> = self.errors.iter().map(|e| &e.file).collect();
        for (object, file) in &previous.origins {
            if !bad.contains(&file) || self.origins.contains_key(object) {
                continue;
            }
            match object {
                Object::Service(key) => {
                    if let Some(svc) = previous.services.get(key) {
                        self.services.insert(key.clone(), svc.clone());
                    }
                }
                Object::DomainMapping(key) => {
                    if let Some(dm) = previous.mappings.get(key) {
                        self.mappings.insert(key.clone(), dm.clone());
                    }
                }
                Object::Claim(host) => {
                    if let Some(ns) = previous.claims.get(host) {
                        self.claims.insert(host.clone(), ns.clone());
                    }
                }
                Object::ConfigMap(name) => match name.as_str() {
                    "config-autoscaler" => self.autoscaler = previous.autoscaler.clone(),
                    "config-defaults" => self.defaults = previous.defaults.clone(),
                    "config-deployment" => self.progress_deadline = previous.progress_deadline,
                    "config-gc" => self.gc = previous.gc.clone(),
                    "config-domain" => self.domains = previous.domains.clone(),
                    "config-network" => {
                        self.network = previous.network.clone();
                        self.autocreate_claims = previous.autocreate_claims;
                        self.rollout_duration = previous.rollout_duration;
                    }
                    _ => {}
                },
                Object::Image(image) => {
                    if let Some(argv) = previous.images.get(image) {
                        self.images.insert(image.clone(), argv.clone());
                    }
                }
            }
            self.origins.insert(object.clone(), file.clone());
        }
        self
    }
}

fn add(
    value: serde_norway::Value,
    file: &Path,
    input: &mut Input,
) -> Result<(), (Option<String>, String)> {
    let head: Head = typed(value.clone()).map_err(|e| (None, e))?;
    let named = Some(format!("{} {}", head.kind, head.metadata.name));
    let fail = |e: String| (named.clone(), e);
    match (head.api_version.as_str(), head.kind.as_str()) {
        ("serving.knative.dev/v1", "Service") => {
            let mut svc: Service = typed(value).map_err(fail)?;
            if svc.metadata.namespace.is_empty() {
                svc.metadata.namespace = "default".to_owned();
            }
            let errors = svc.validate(&input.autoscaler, &input.defaults);
            if !errors.is_empty() {
                return Err(fail(errors.join("\n")));
            }
            input
                .origins
                .insert(Object::Service(svc.metadata.key()), file.to_owned());
            input.services.insert(svc.metadata.key(), svc);
        }
        ("serving.knative.dev/v1beta1" | "serving.knative.dev/v1alpha1", "DomainMapping") => {
            let mut dm: DomainMapping = typed(value).map_err(fail)?;
            if dm.metadata.namespace.is_empty() {
                dm.metadata.namespace = "default".to_owned();
            }
            let errors = dm.validate(&input.network.cluster_domain);
            if !errors.is_empty() {
                return Err(fail(errors.join("\n")));
            }
            input
                .origins
                .insert(Object::DomainMapping(dm.metadata.key()), file.to_owned());
            input.mappings.insert(dm.metadata.key(), dm);
        }
        ("networking.internal.knative.dev/v1alpha1", "ClusterDomainClaim") => {
            let claim: ClusterDomainClaim = typed(value).map_err(fail)?;
            input
                .origins
                .insert(Object::Claim(claim.metadata.name.clone()), file.to_owned());
            input
                .claims
                .insert(claim.metadata.name, claim.spec.namespace);
        }
        ("v1", "ConfigMap") => {
            let cm: ConfigMap = typed(value).map_err(fail)?;
            match cm.metadata.name.as_str() {
                "config-autoscaler" => {
                    input.autoscaler = AutoscalerConfig::from_data(&cm.data).map_err(fail)?
                }
                "config-defaults" => {
                    input.defaults = Defaults::from_data(&cm.data).map_err(fail)?
                }
                "config-gc" => input.gc = GcConfig::from_data(&cm.data).map_err(fail)?,
                "config-deployment" => {
                    if let Some(v) = cm.data.get("progress-deadline") {
                        input.progress_deadline = match goparse::duration(v) {
                            Ok(d) if d > GoDuration::ZERO => Some(d),
                            Ok(d) => {
                                return Err(fail(format!(
                                    "progress-deadline cannot be a non-positive duration, was {d}"
                                )))
                            }
                            Err(e) => return Err(fail(format!("progress-deadline: {e}"))),
                        };
                    }
                }
                "config-domain" => input.domains = Domains::from_data(&cm.data).map_err(fail)?,
                "config-network" => {
                    input.network = network(&cm.data).map_err(fail)?;
                    if let Some(v) = cm.data.get("rollout-duration") {
                        input.rollout_duration = match v.trim().parse::<i64>() {
                            Ok(n) if n >= 0 => n,
                            Ok(n) => {
                                return Err(fail(format!(
                                    "rollout-duration must be a positive integer, but was {n}"
                                )))
                            }
                            Err(_) => {
                                return Err(fail(format!(
                                    "rollout-duration: {v:?} is not an integer"
                                )))
                            }
                        };
                    }
                    input.autocreate_claims = match cm
                        .data
                        .get("autocreate-cluster-domain-claims")
                        .map(String::as_str)
                    {
                        None => false,
                        Some(v) => goparse::boolean(v).map_err(|e| {
                            fail(format!("data.autocreate-cluster-domain-claims: {e}"))
                        })?,
                    };
                }
                // Knative's other ConfigMaps change nothing here.
                _ => {}
            }
            input
                .origins
                .insert(Object::ConfigMap(cm.metadata.name), file.to_owned());
        }
        ("knoxy.dev/v1alpha1", "LocalConfig") => {
            let local: LocalConfig = typed(value).map_err(fail)?;
            for (image, argv) in local.images {
                if argv.is_empty() {
                    return Err(fail(format!("images.{image}: an empty command")));
                }
                input
                    .origins
                    .insert(Object::Image(image.clone()), file.to_owned());
                input.images.insert(image, argv);
            }
        }
        ("", _) | (_, "") => return Err(fail("apiVersion and kind are required".to_owned())),
        (api, kind) => return Err(fail(format!("unsupported object {api} {kind}"))),
    }
    Ok(())
}

impl Domains {
    /// `config-domain`'s data: a domain with an empty value is the default; otherwise the
    /// value is `selector:` with labels a route must carry.
    fn from_data(data: &BTreeMap<String, String>) -> Result<Domains, String> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Selector {
            #[serde(default)]
            selector: BTreeMap<String, String>,
        }
        let mut entries = Vec::new();
        for (domain, value) in data.iter().filter(|(k, _)| *k != "_example") {
            let selector = if value.trim().is_empty() {
                BTreeMap::new()
            } else {
                serde_norway::from_str::<Selector>(value)
                    .map_err(|e| format!("data.{domain}: {e}"))?
                    .selector
            };
            entries.push((domain.clone(), selector));
        }
        Ok(Domains { entries })
    }

    /// The domain of a route with `labels`: the most specific selector that matches; None
    /// (cluster-local) when none does, or the match is `svc.cluster.local`.
    pub fn for_labels(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, sel)| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .max_by_key(|(domain, sel)| (sel.len(), std::cmp::Reverse(domain.clone())))
            .map(|(domain, _)| domain.clone())
            .filter(|d| !d.starts_with("svc."))
    }
}

/// `config-network`'s templates and HTTP protocol.
fn network(data: &BTreeMap<String, String>) -> Result<Network, String> {
    let mut net = Network::default();
    for (key, allowed, slot) in [
        (
            "domain-template",
            &["Name", "Namespace", "Domain"][..],
            &mut net.domain_template,
        ),
        ("tag-template", &["Name", "Tag"][..], &mut net.tag_template),
    ] {
        if let Some(t) = data.get(key) {
            check_template(key, t, allowed)?;
            *slot = t.clone();
        }
    }
    // The kebab-case key wins over the legacy camelCase one.
    let scheme = data
        .get("default-external-scheme")
        .or_else(|| data.get("defaultExternalScheme"));
    if let Some(scheme) = scheme {
        match scheme.to_ascii_lowercase().as_str() {
            s @ ("http" | "https") => net.external_scheme = s.to_owned(),
            other => {
                return Err(format!(
                    "default-external-scheme: {other:?} is not http or https"
                ))
            }
        }
    }
    if let Some(p) = data.get("http-protocol") {
        match p.as_str() {
            "enabled" | "redirected" | "disabled" => net.http_protocol = p.clone(),
            other => {
                return Err(format!(
                    "http-protocol: {other:?} is not enabled, redirected or disabled"
                ))
            }
        }
    }
    Ok(net)
}

/// A template may use only the fields Knative gives it, and must render a host name.
fn check_template(key: &str, template: &str, allowed: &[&str]) -> Result<(), String> {
    let mut rendered = template.to_owned();
    for field in allowed {
        rendered = rendered.replace(&format!("{{{{.{field}}}}}"), "x");
    }
    if rendered.contains("{{") {
        return Err(format!(
            "{key}: {template:?} uses a field other than {}",
            allowed.join(", ")
        ));
    }
    if rendered.contains('/') || rendered.contains(' ') {
        return Err(format!("{key}: {template:?} does not render a host name"));
    }
    Ok(())
}

fn files_of(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

fn whole(path: &Path, message: String) -> FileError {
    FileError {
        file: path.to_owned(),
        document: None,
        object: None,
        message,
    }
}

#[cfg(test)]
mod tests;
