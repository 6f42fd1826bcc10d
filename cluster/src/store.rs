//! Folding a watch's events into the snapshot, as kube-rs's watcher delivers them: applies
//! and deletes one at a time, and after each (re)list the listed objects replace the kind's
//! whole map at once (an object the list no longer has was deleted while unwatched).

use std::collections::BTreeMap;
use std::sync::Arc;

use knoxy_control::derive::Snapshot;
use kube::runtime::watcher::Event;

use crate::kinds::Kind;
use crate::object::Watched;

/// A kind's watch state beside the snapshot: a relist in progress, and the objects that do
/// not decode (each keeps its last good version served, if it had one).
#[derive(Debug)]
pub struct Kept<T> {
    /// What a relist has listed so far, and the statuses it saw.
    listing: Option<(BTreeMap<String, Arc<T>>, Statuses)>,
    /// `namespace/name` → why it does not decode.
    pub problems: BTreeMap<String, String>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            listing: None,
            problems: BTreeMap::new(),
        }
    }
}

/// The `status` of each kept object of a kind whose status Knoxy writes.
pub type Statuses = BTreeMap<String, Arc<str>>;

/// What an event did to the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing the route table reads moved.
    None,
    Changed,
    /// A list finished: the kind is in step with the API server again.
    Listed,
}

/// Folds one event in; `statuses` follows the kept objects' status (for kinds with
/// [`Object::STATUS`](crate::object::Object::STATUS); it stays empty for the others).
pub fn apply<T: Kind>(
    snap: &mut Snapshot,
    statuses: &mut Statuses,
    kept: &mut Kept<T>,
    event: Event<Watched<T>>,
) -> Change {
    match event {
        Event::Init => {
            kept.listing = Some((BTreeMap::new(), Statuses::new()));
            // The list names again each object that does not decode.
            kept.problems.clear();
            Change::None
        }
        Event::InitApply(w) => {
            let key = w.key();
            let status = w.status;
            let object = match w.object {
                Ok(object) => {
                    kept.problems.remove(&key);
                    object.keep().map(Arc::new)
                }
                Err(e) => {
                    kept.problems.insert(key.clone(), e);
                    T::slot(snap).get(&key).cloned()
                }
            };
            if let (Some((listing, seen)), Some(object)) = (kept.listing.as_mut(), object) {
                if let Some(status) = status {
                    seen.insert(key.clone(), status);
                }
                listing.insert(key, object);
            }
            Change::None
        }
        Event::InitDone => {
            let (listed, seen) = kept.listing.take().unwrap_or_default();
            *statuses = seen;
            let live = T::slot(snap);
            // Unchanged objects keep their Arc, so the derive's cache still knows them.
            let merged = listed
                .into_iter()
                .map(|(k, v)| match live.get(&k) {
                    Some(old) if **old == *v => (k, Arc::clone(old)),
                    _ => (k, v),
                })
                .collect();
            *live = merged;
            Change::Listed
        }
        Event::Apply(w) => {
            let key = w.key();
            let live = T::slot(snap);
            // An undecodable version keeps the last good one's status, as it keeps its object.
            if w.object.is_ok() {
                match w.status {
                    Some(status) => statuses.insert(key.clone(), status),
                    None => statuses.remove(&key),
                };
            }
            match w.object {
                Err(e) => {
                    kept.problems.insert(key, e);
                    Change::None
                }
                Ok(object) => {
                    kept.problems.remove(&key);
                    match object.keep() {
                        Some(new) if live.get(&key).is_some_and(|old| **old == new) => Change::None,
                        Some(new) => {
                            live.insert(key, Arc::new(new));
                            Change::Changed
                        }
                        // It no longer concerns us (another class, say): as if deleted.
                        None => {
                            statuses.remove(&key);
                            remove(live, &key)
                        }
                    }
                }
            }
        }
        Event::Delete(w) => {
            let key = w.key();
            kept.problems.remove(&key);
            statuses.remove(&key);
            remove(T::slot(snap), &key)
        }
    }
}

fn remove<T>(live: &mut BTreeMap<String, Arc<T>>, key: &str) -> Change {
    if live.remove(key).is_some() {
        Change::Changed
    } else {
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knoxy_control::k8s::Service;
    use knoxy_control::kingress::{KIngress, INGRESS_CLASS_ANNOTATION, KNOXY_INGRESS_CLASS};

    /// `apply` for kinds whose status is not read.
    fn step<T: Kind>(snap: &mut Snapshot, kept: &mut Kept<T>, event: Event<Watched<T>>) -> Change {
        apply(snap, &mut Statuses::new(), kept, event)
    }

    fn watched<T: Kind>(json: serde_json::Value) -> Watched<T> {
        serde_json::from_value(json).expect("decodes")
    }

    fn service(name: &str, rv: &str, port: u16) -> Watched<Service> {
        watched(
            serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "spec": {"ports": [{"port": port}]}}),
        )
    }

    fn ingress(name: &str, class: &str) -> Watched<KIngress> {
        watched(
            serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1",
            "annotations": {INGRESS_CLASS_ANNOTATION: class}}, "spec": {}}),
        )
    }

    #[test]
    fn a_relist_replaces_the_kind_whole() {
        let mut snap = Snapshot::default();
        let mut kept = Kept::default();
        assert_eq!(
            step(&mut snap, &mut kept, Event::Apply(service("gone", "1", 80))),
            Change::Changed
        );
        assert_eq!(
            step(&mut snap, &mut kept, Event::Apply(service("kept", "2", 80))),
            Change::Changed
        );
        let before = Arc::clone(&snap.services["ns/kept"]);
        assert_eq!(step(&mut snap, &mut kept, Event::Init), Change::None);
        step(
            &mut snap,
            &mut kept,
            Event::InitApply(service("kept", "3", 80)),
        );
        step(
            &mut snap,
            &mut kept,
            Event::InitApply(service("new", "4", 81)),
        );
        // Until the list is done, the old objects are what is served.
        assert!(snap.services.contains_key("ns/gone"));
        assert_eq!(step(&mut snap, &mut kept, Event::InitDone), Change::Listed);
        assert_eq!(
            snap.services.keys().collect::<Vec<_>>(),
            ["ns/kept", "ns/new"]
        );
        assert!(
            Arc::ptr_eq(&before, &snap.services["ns/kept"]),
            "an unchanged object keeps its Arc"
        );
    }

    #[test]
    fn a_new_resource_version_alone_is_no_change() {
        let mut snap = Snapshot::default();
        let mut kept = Kept::default();
        step(&mut snap, &mut kept, Event::Apply(service("a", "1", 80)));
        assert_eq!(
            step(&mut snap, &mut kept, Event::Apply(service("a", "2", 80))),
            Change::None
        );
        assert_eq!(
            step(&mut snap, &mut kept, Event::Apply(service("a", "3", 81))),
            Change::Changed
        );
        assert_eq!(
            step(&mut snap, &mut kept, Event::Delete(service("a", "4", 81))),
            Change::Changed
        );
        assert_eq!(
            step(&mut snap, &mut kept, Event::Delete(service("a", "4", 81))),
            Change::None
        );
        assert!(snap.services.is_empty());
    }

    #[test]
    fn a_malformed_object_keeps_its_last_good_version() {
        let bad = || {
            watched::<Service>(
                serde_json::json!({"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "9"},
            "spec": {"ports": [{"port": "eighty"}]}}),
            )
        };
        let mut snap = Snapshot::default();
        let mut kept = Kept::default();
        step(&mut snap, &mut kept, Event::Apply(service("a", "1", 80)));
        assert_eq!(
            step(&mut snap, &mut kept, Event::Apply(bad())),
            Change::None
        );
        assert_eq!(snap.services["ns/a"].spec.ports[0].port, 80);
        assert!(
            kept.problems["ns/a"].starts_with("spec.ports[0].port: "),
            "{:?}",
            kept.problems
        );
        // A relist keeps it too, and a good version clears the problem.
        step(&mut snap, &mut kept, Event::Init);
        step(&mut snap, &mut kept, Event::InitApply(bad()));
        step(&mut snap, &mut kept, Event::InitDone);
        assert_eq!(snap.services["ns/a"].spec.ports[0].port, 80);
        step(&mut snap, &mut kept, Event::Apply(service("a", "10", 81)));
        assert!(kept.problems.is_empty());
        assert_eq!(snap.services["ns/a"].spec.ports[0].port, 81);
    }

    #[test]
    fn statuses_follow_the_kingresses_kept() {
        let with_status = |name: &str, rv: &str, generation: i64| {
            watched::<KIngress>(
                serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                "annotations": {INGRESS_CLASS_ANNOTATION: KNOXY_INGRESS_CLASS}}, "spec": {},
                "status": {"observedGeneration": generation}}),
            )
        };
        let mut snap = Snapshot::default();
        let mut statuses = Statuses::new();
        let mut kept = Kept::default();
        apply(
            &mut snap,
            &mut statuses,
            &mut kept,
            Event::Apply(with_status("a", "1", 1)),
        );
        // A status write alone moves no route, but the status is seen.
        let change = apply(
            &mut snap,
            &mut statuses,
            &mut kept,
            Event::Apply(with_status("a", "2", 2)),
        );
        assert_eq!(change, Change::None);
        assert_eq!(&*statuses["ns/a"], r#"{"observedGeneration":2}"#);
        apply(&mut snap, &mut statuses, &mut kept, Event::Init);
        apply(
            &mut snap,
            &mut statuses,
            &mut kept,
            Event::InitApply(with_status("b", "3", 5)),
        );
        apply(&mut snap, &mut statuses, &mut kept, Event::InitDone);
        assert_eq!(statuses.keys().collect::<Vec<_>>(), ["ns/b"]);
        apply(
            &mut snap,
            &mut statuses,
            &mut kept,
            Event::Apply(ingress("b", "istio.ingress.networking.knative.dev")),
        );
        assert!(statuses.is_empty());
    }

    #[test]
    fn a_kingress_that_changes_class_leaves() {
        let mut snap = Snapshot::default();
        let mut kept = Kept::default();
        assert_eq!(
            step(
                &mut snap,
                &mut kept,
                Event::Apply(ingress("a", KNOXY_INGRESS_CLASS))
            ),
            Change::Changed
        );
        assert_eq!(
            step(
                &mut snap,
                &mut kept,
                Event::Apply(ingress("a", "istio.ingress.networking.knative.dev"))
            ),
            Change::Changed
        );
        assert!(snap.ingresses.is_empty());
        assert_eq!(
            step(
                &mut snap,
                &mut kept,
                Event::Apply(ingress("b", "istio.ingress.networking.knative.dev"))
            ),
            Change::None
        );
    }
}
