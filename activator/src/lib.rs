//! The gateway's activator role (contract `ingress-activator.md` §4), one piece at a time.
//!
//! So far the [`Throttler`]: per revision, at most `containerConcurrency` requests in flight
//! on each pod, the pod chosen by Knative's policy for that concurrency, and the requests
//! beyond capacity (or while the revision has no pod) held in FIFO order, up to a bound, for
//! at most the revision's timeout. Each throttler counts its revision's demand (waiting
//! requests included) and [`stats`] reports it to Knative's autoscaler over its websocket.

pub mod budget;
mod policy;
pub mod probe;
pub mod share;
pub mod stats;
mod throttler;

pub use budget::Budget;
pub use share::Share;
pub use stats::StatSink;
pub use throttler::{Lease, Load, Refused, Reporting, Throttler, DEFAULT_QUEUE_DEPTH};
