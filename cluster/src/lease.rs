//! One leader among the gateway replicas, elected with a `coordination.k8s.io` Lease as
//! client-go's leader election does: the holder renews it every retry period; another
//! replica takes it once it has seen no renewal for the lease's duration (measured on its
//! own clock from when it saw the record change, so clock skew between nodes is harmless);
//! every write carries the resourceVersion read, so two candidates never both win.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::connect::chain;

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease (client-go: 15 s).
    pub duration: Duration,
    /// How long the holder goes on leading without a successful renewal (client-go: 10 s).
    pub renew_deadline: Duration,
    /// How often the lease is read and renewed (client-go: 2 s).
    pub retry: Duration,
}

impl Election {
    pub fn new(namespace: &str, name: &str, identity: &str, duration: Duration) -> Election {
        Election {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            renew_deadline: duration * 2 / 3,
            retry: (duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }
}

/// What to do with the lease as last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Renew,
    TakeOver,
    /// Another replica holds it, and renewed it within the duration.
    Follow,
}

/// `unchanged_for`: how long the record has been seen unchanged, on this replica's clock.
pub fn decide(holder: Option<&str>, me: &str, unchanged_for: Duration, duration: Duration) -> Step {
    match holder {
        Some(h) if h == me => Step::Renew,
        Some(h) if !h.is_empty() && unchanged_for < duration => Step::Follow,
        _ => Step::TakeOver,
    }
}

/// Campaigns for the lease for the life of the process; `leading` says whether this
/// replica holds it now.
pub async fn campaign(client: Client, election: Election, leading: Arc<AtomicBool>) {
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    // The record's resourceVersion as last seen, and when it was first seen so.
    let mut seen: Option<(String, Instant)> = None;
    let mut renewed: Option<Instant> = None;
    let mut last_error = String::new();
    loop {
        let result = step(&api, &election, &mut seen).await;
        match result {
            Ok(true) => renewed = Some(Instant::now()),
            Ok(false) => renewed = None,
            Err(e) => {
                if e != last_error {
                    eprintln!(
                        "knoxy: lease {}/{}: {e} (retrying)",
                        election.namespace, election.name
                    );
                    last_error = e;
                }
            }
        }
        let now_leading = renewed.is_some_and(|at| at.elapsed() < election.renew_deadline);
        if now_leading != leading.swap(now_leading, Ordering::AcqRel) {
            let what = if now_leading {
                "leads"
            } else {
                "no longer leads"
            };
            eprintln!(
                "knoxy: {} {what}: it writes KIngress status (lease {}/{})",
                election.identity, election.namespace, election.name
            );
        }
        tokio::time::sleep(election.retry).await;
    }
}

/// One read and, if due, one write of the lease: Ok(true) when this replica holds it now.
async fn step(
    api: &Api<Lease>,
    e: &Election,
    seen: &mut Option<(String, Instant)>,
) -> Result<bool, String> {
    let current = api.get_opt(&e.name).await.map_err(|err| chain(&err))?;
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(e.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(e.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return write(api.create(&PostParams::default(), &lease).await);
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let unchanged_for = match seen {
        Some((v, at)) if *v == version => at.elapsed(),
        _ => {
            *seen = Some((version, Instant::now()));
            Duration::ZERO
        }
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    // The holder's own duration decides when it is gone, as client-go reads it.
    let held_for = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(e.duration, Duration::from_secs);
    match decide(
        spec.holder_identity.as_deref(),
        &e.identity,
        unchanged_for,
        held_for,
    ) {
        Step::Follow => Ok(false),
        Step::Renew | Step::Create => {
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(seconds);
            write(api.replace(&e.name, &PostParams::default(), &lease).await)
        }
        Step::TakeOver => {
            spec.holder_identity = Some(e.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(seconds);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            write(api.replace(&e.name, &PostParams::default(), &lease).await)
        }
    }
}

/// A write that lost a race (409) means another replica moved first: not an error.
fn write(result: Result<Lease, kube::Error>) -> Result<bool, String> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(chain(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_only_once_its_holder_stopped_renewing() {
        let d = Duration::from_secs(15);
        let s = Duration::from_secs;
        assert_eq!(decide(Some("a"), "a", s(100), d), Step::Renew);
        assert_eq!(decide(Some("b"), "a", s(14), d), Step::Follow);
        assert_eq!(decide(Some("b"), "a", s(15), d), Step::TakeOver);
        // Released (empty holder) or never held: take it at once.
        assert_eq!(decide(Some(""), "a", s(0), d), Step::TakeOver);
        assert_eq!(decide(None, "a", s(0), d), Step::TakeOver);
    }

    #[test]
    fn client_go_timings_follow_the_duration() {
        let e = Election::new(
            "knoxy-system",
            "knoxy-status",
            "pod-a",
            Duration::from_secs(15),
        );
        assert_eq!(e.renew_deadline, Duration::from_secs(10));
        assert_eq!(e.retry, Duration::from_secs(2));
    }
}
