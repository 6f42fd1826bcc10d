//! The KPA, Knative's Pod Autoscaler (contract `autoscaler-local.md` §2-3), as pure types
//! on a clock the caller gives: the averaging windows and the decider. `knoxy local` feeds
//! them from its instances' queue stats and the gateway's activator stats; `config-autoscaler`
//! and a revision's annotations, validated in Knative's words, make the decider's settings.

pub mod annotations;
pub mod autoscaler;
pub mod buckets;
pub mod collector;
pub mod config;
pub mod decider;
pub mod goparse;
pub mod scaler;

pub use annotations::{Bounds, Metric, Scaling};
pub use autoscaler::RevisionScaler;
pub use buckets::{Algorithm, Buckets};
pub use collector::{Collector, Sample};
pub use config::AutoscalerConfig;
pub use decider::{Decider, Decision, Spec};
pub use scaler::{Active, Observed, Outcome, Scaler};
