//! Knative's ingress conformance suite (`networking/test/conformance/ingress`, contract §5),
//! one test per Knative test, named after its run name, asserting what Knative's test
//! asserts, against the real `knoxy` binary on loopback with test backends as the pods.
//! Modules follow Knative's files.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod fixture;

mod basic;
mod class;
mod grpc;
mod headers;
mod hosts;
mod httpoption;
mod path;
mod percentage;
mod retry;
mod rewrite;
mod rule;
mod timeout;
mod tls;
mod update;
mod visibility;
mod websocket;
