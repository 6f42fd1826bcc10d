//! `knoxy local` (contract `autoscaler-local.md`): Knative Services on one machine. So far
//! the [`supervisor`] (each instance of a revision is a local process, the container's
//! command, behind its own `knoxy-queue`, as a pod would be) and the [`snapshot`] of
//! Kubernetes-shaped objects the gateway derives its table from.

#![forbid(unsafe_code)]

pub mod controller;
pub mod input;
pub mod run;
pub mod scrape;
pub mod snapshot;
pub mod supervisor;
pub mod view;
