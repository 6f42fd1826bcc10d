//! `derive`: a snapshot of Kubernetes-shaped objects in, the route table and a status for
//! each KIngress out. Pure: no IO, env, clock or spawning; the output does not depend on the
//! order objects arrived in (the snapshot's maps are sorted by `namespace/name`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::k8s::{EndpointSlice, Secret, Service, APP_PROTOCOL_H2C, SERVICE_NAME_LABEL};
use crate::kingress::{IngressBackendSplit, IntOrString, KIngress, KNOXY_INGRESS_CLASS};
use crate::probe_hash::probe_hash;
use crate::route::{Backend, Cert, Route, RouteTable, Split, Target, VirtualHost};
use crate::validate::{self, FieldError, CLUSTER_LOCAL};

// === Types ===

/// The objects every source (Kubernetes watch, files, local mode) produces, keyed `ns/name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Shared, so that sources can keep objects and hand out snapshots without copying them.
    pub ingresses: BTreeMap<String, Arc<KIngress>>,
    pub services: BTreeMap<String, Arc<Service>>,
    pub endpoint_slices: BTreeMap<String, Arc<EndpointSlice>>,
    pub secrets: BTreeMap<String, Arc<Secret>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeriveConfig {
    /// The ingress class served; KIngresses of any other class are left alone.
    pub class: String,
}

impl Default for DeriveConfig {
    fn default() -> Self {
        DeriveConfig {
            class: KNOXY_INGRESS_CLASS.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Derived {
    pub table: RouteTable,
    /// One entry per KIngress of our class; others get none (they are not ours to touch).
    pub status: BTreeMap<String, IngressStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressStatus {
    /// Served; `hash` is what probes with `K-Network-Hash: override` come back with.
    Ready {
        hash: String,
    },
    Invalid(Vec<FieldError>),
    /// A backend or secret is missing; the whole KIngress waits (as Kourier does).
    NotReady {
        reason: &'static str,
        message: String,
    },
    /// An earlier KIngress (by `namespace/name`) already serves this host.
    Conflict {
        host: String,
    },
}

// === The flow ===

pub fn derive(snap: &Snapshot, cfg: &DeriveConfig) -> Derived {
    let mut out = Derived::default();
    for (key, ingress) in &snap.ingresses {
        if !ingress.has_class(&cfg.class) {
            continue;
        }
        let status = match translate(snap, key, ingress) {
            Ok(translated) => match conflict(&out.table, &translated) {
                Some(host) => IngressStatus::Conflict { host },
                None => {
                    let hash = translated.hash.to_string();
                    translated.install(&mut out.table);
                    IngressStatus::Ready { hash }
                }
            },
            Err(status) => status,
        };
        out.status.insert(key.clone(), status);
    }
    out
}

/// One KIngress turned into routes, before it is installed into the table.
struct Translated {
    hash: Arc<str>,
    /// (host or None for all hosts, cluster-local, routes) in rule order.
    rules: Vec<(Vec<String>, bool, Arc<VirtualHost>)>,
    certs: Vec<Cert>,
}

fn translate(snap: &Snapshot, key: &str, ingress: &KIngress) -> Result<Translated, IngressStatus> {
    let mut ingress = ingress.clone();
    validate::set_defaults(&mut ingress.spec);
    validate::validate(&ingress).map_err(IngressStatus::Invalid)?;
    let hash: Arc<str> = probe_hash(&ingress).into();
    let name: Arc<str> = key.into();
    let redirect = ingress.spec.http_option == "Redirected";
    let ns = &ingress.metadata.namespace;

    let mut rules = Vec::new();
    for rule in &ingress.spec.rules {
        let local = rule.visibility == CLUSTER_LOCAL;
        let mut routes = Vec::new();
        for path in rule.http.iter().flat_map(|h| h.paths.iter().flatten()) {
            let splits = path
                .splits
                .iter()
                .flatten()
                .map(|s| split(snap, ns, s))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route {
                ingress: Arc::clone(&name),
                prefix: if path.path.is_empty() {
                    "/".to_owned()
                } else {
                    path.path.clone()
                },
                headers: path
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.exact.clone()))
                    .collect(),
                append_headers: pairs(&path.append_headers),
                rewrite_host: Some(path.rewrite_host.clone()).filter(|h| !h.is_empty()),
                splits,
                redirect_https: redirect && !local,
                probe_hash: Arc::clone(&hash),
            });
        }
        rules.push((rule.hosts.clone(), local, Arc::new(VirtualHost { routes })));
    }
    let certs = ingress
        .spec
        .tls
        .iter()
        .map(|tls| cert(snap, &tls.secret_namespace, &tls.secret_name, &tls.hosts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Translated { hash, rules, certs })
}

impl Translated {
    fn install(self, table: &mut RouteTable) {
        for (hosts, local, vhost) in &self.rules {
            let hosts: Vec<Option<&str>> = if hosts.is_empty() {
                vec![None]
            } else {
                hosts.iter().map(|h| Some(h.as_str())).collect()
            };
            for host in hosts {
                table.private.claim(host, vhost);
                if !local {
                    table.public.claim(host, vhost);
                }
            }
        }
        table.certs.extend(self.certs);
    }
}

/// The first host of `t` that an earlier KIngress already serves.
fn conflict(table: &RouteTable, t: &Translated) -> Option<String> {
    t.rules
        .iter()
        .flat_map(|(hosts, _, _)| hosts)
        .find(|h| table.private.has(h))
        .cloned()
}

// === Helpers ===

fn split(snap: &Snapshot, ns: &str, s: &IngressBackendSplit) -> Result<Split, IngressStatus> {
    Ok(Split {
        percent: u32::try_from(s.percent).unwrap_or(0),
        backend: backend(snap, ns, &s.service_name, &s.service_port)?,
        append_headers: pairs(&s.append_headers),
    })
}

/// Service + Service port → where to connect (contract §1.2, "Backend resolution").
fn backend(
    snap: &Snapshot,
    ns: &str,
    name: &str,
    port: &IntOrString,
) -> Result<Backend, IngressStatus> {
    let not_ready = |reason, message| IngressStatus::NotReady { reason, message };
    let service = snap.services.get(&format!("{ns}/{name}")).ok_or_else(|| {
        not_ready(
            "ServiceNotFound",
            format!("service {ns}/{name} does not exist"),
        )
    })?;
    let sp = service
        .spec
        .ports
        .iter()
        .find(|p| match port {
            IntOrString::Int(n) => i64::from(p.port) == *n,
            IntOrString::String(s) => &p.name == s,
        })
        .ok_or_else(|| {
            not_ready(
                "PortNotFound",
                format!("service {ns}/{name} has no port {}", port_text(port)),
            )
        })?;
    let h2c = sp.name == "http2" || sp.name == "h2c" || sp.app_protocol == APP_PROTOCOL_H2C;
    if service.spec.kind == "ExternalName" {
        let host = service.spec.external_name.trim_end_matches('.').to_owned();
        return Ok(Backend {
            target: Target::Dns {
                host,
                port: sp.port,
            },
            h2c,
        });
    }
    let mut addrs = Vec::new();
    let slices = snap.endpoint_slices.values().filter(|e| {
        e.metadata.namespace == ns
            && e.metadata
                .labels
                .get(SERVICE_NAME_LABEL)
                .map(String::as_str)
                == Some(name)
    });
    for slice in slices {
        // The slice carries the resolved target port under the Service port's name.
        let target = slice
            .ports
            .iter()
            .find(|p| p.name == sp.name)
            .and_then(|p| p.port)
            .or(match &sp.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                _ => Some(sp.port),
            });
        let Some(target) = target else { continue };
        for endpoint in slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.ready != Some(false))
        {
            addrs.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, target)),
            );
        }
    }
    if addrs.is_empty() {
        return Err(not_ready(
            "NoReadyEndpoints",
            format!("service {ns}/{name} has no ready endpoints"),
        ));
    }
    addrs.sort_unstable();
    addrs.dedup();
    Ok(Backend {
        target: Target::Endpoints(addrs),
        h2c,
    })
}

fn cert(snap: &Snapshot, ns: &str, name: &str, hosts: &[String]) -> Result<Cert, IngressStatus> {
    let missing = |what: &str| IngressStatus::NotReady {
        reason: "SecretNotReady",
        message: format!("secret {ns}/{name}: {what}"),
    };
    let secret = snap
        .secrets
        .get(&format!("{ns}/{name}"))
        .ok_or_else(|| missing("does not exist"))?;
    let field = |key: &str| -> Result<Vec<u8>, IngressStatus> {
        let b64 = secret
            .data
            .get(key)
            .ok_or_else(|| missing(&format!("no {key}")))?;
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64.trim())
            .map_err(|e| missing(&format!("{key} is not base64: {e}")))
    };
    Ok(Cert {
        hosts: hosts.to_vec(),
        cert_pem: field("tls.crt")?,
        key_pem: field("tls.key")?,
    })
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests;
