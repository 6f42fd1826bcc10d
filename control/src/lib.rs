//! Knoxy's control plane as a library: the Kubernetes-shaped objects Knative writes
//! (`KIngress`, `Service`, `EndpointSlice`, `Secret`, `Revision`), and the pure derivation of the route
//! table the gateway serves from them (`shared/contracts/ingress-activator.md`).
//!
//! So far: the KIngress types as Knative serializes them, the probe hash Knative's prober
//! compares (§3.2), the webhook's defaulting and validation (§1.3), and `derive`, which
//! sends a split naming a Revision to the revision's own pods (the activator role, §4).

#![forbid(unsafe_code)]

pub mod derive;
pub mod files;
pub mod k8s;
pub mod kingress;
pub mod kpa;
pub mod probe_hash;
pub mod revision;
pub mod route;
pub mod serving;
pub mod validate;
