//! Knative Serving's reconcilers as pure functions, for `knoxy local` (contract
//! `autoscaler-local.md` §4, `ingress-activator.md` §2): so far a Service (validated, its template's revisions named),
//! a Route's traffic (validated, flattened to revisions), its KIngress, and the status each writes.

pub mod defaults;
pub mod domainmapping;
pub mod gc;
pub mod ingress;
pub mod rollout;
pub mod service;
pub mod status;
pub mod traffic;
