//! Knoxy's control plane as a library: the Kubernetes-shaped objects Knative writes
//! (`KIngress`, `Service`, `EndpointSlice`, `Secret`, `Revision`), and the pure derivation of the route
//! table the gateway serves from them (`shared/contracts/ingress-activator.md`).
//!
//! The KIngress types as Knative serializes them, the probe hash Knative's prober compares
//! (§3.2), the webhook's defaulting and validation (§1.3), and `derive`, which sends a split
//! naming a Revision to the revision's own pods (the activator role, §4); for `knoxy local`,
//! the KPA (`kpa`) and Knative Serving's reconcilers as pure functions (`serving`).

#![forbid(unsafe_code)]

pub mod derive;
pub mod files;
pub mod ingress_status;
pub mod k8s;
pub mod kingress;
pub mod kpa;
pub mod probe_hash;
pub mod revision;
pub mod route;
pub mod serving;
pub mod validate;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    /// A ConfigMap's `data` from pairs.
    pub fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}
