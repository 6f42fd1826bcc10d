//! The KPA, Knative's Pod Autoscaler (contract `autoscaler-local.md` §2-3), as pure types
//! on a clock the caller gives: the averaging windows and the decider. `knoxy local` feeds
//! them from its instances' queue stats and the gateway's activator stats.

pub mod buckets;
pub mod decider;

pub use buckets::{Algorithm, Buckets};
pub use decider::{Decider, Decision, Spec};
