//! What knoxy-queue and the gateway's activator role both need to know about a revision's
//! concurrency, one copy each:
//!
//! - [`Breaker`]: at most N requests in flight, a bounded FIFO queue behind them, and an
//!   immediate overflow past it (Knative's `queue.Breaker`);
//! - [`Window`]: time-weighted average concurrency and request counts over a reporting
//!   window, split by whether the activator proxied the request (Knative's `RequestStats`);
//! - [`Stat`], [`WireStatMessage`], [`WireStatMessages`]: the autoscaler's protobuf messages
//!   (`S/pkg/autoscaler/metrics/stat.proto`), derived with prost, no protoc.

mod breaker;
mod stat;
mod window;

pub use breaker::{Breaker, Overflow, Ticket};
pub use stat::{Stat, WireStatMessage, WireStatMessages};
pub use window::{Averages, Window};
