//! Knoxy's Kubernetes source (`knoxy --kubernetes`): kube-rs watches of the objects the
//! route table is derived from (KIngresses of Knoxy's class, Services, EndpointSlices, TLS
//! Secrets, Revisions), each trimmed to what the table reads, folded into the same
//! [`knoxy_control::derive::Snapshot`] the file source produces.

#![forbid(unsafe_code)]

pub mod connect;
pub mod explain;
pub mod kinds;
pub mod lease;
pub mod object;
pub mod source;
pub mod status;
pub mod store;
