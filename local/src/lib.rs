//! `knoxy local` (contract `autoscaler-local.md`): Knative Services on one machine. The
//! [`input`] (Services, DomainMappings, Knative's ConfigMaps, the image map) is reconciled by
//! the [`controller`] as Knative's reconcilers would (revisions, traffic, rollouts, GC,
//! status); each revision's instances are local processes behind their own `knoxy-queue`
//! ([`supervisor`]), scaled by the KPA from what [`scrape`] reads and the gateway's activator
//! reports; the [`snapshot`] of Kubernetes-shaped objects is what the gateway serves; [`run`]
//! is the loop on its own thread and [`view`] what the operator sees.

#![forbid(unsafe_code)]

pub mod controller;
pub mod input;
pub mod run;
pub mod scrape;
pub mod snapshot;
pub mod supervisor;
pub mod view;
