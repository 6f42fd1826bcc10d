//! The kinds the gateway watches: where each is served, what of it is kept, and where it
//! goes in the [`Snapshot`] the route table is derived from.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use knoxy_control::derive::{Moved, Snapshot};
use knoxy_control::k8s::{EndpointSlice, Secret, Service};
use knoxy_control::kingress::{KIngress, ObjectMeta};
use knoxy_control::revision::Revision;
use kube::core::ApiResource;

use crate::object::Object;

/// The keys of a TLS Secret the route table reads; the rest of a Secret is never kept.
const TLS_KEYS: [&str; 2] = ["tls.crt", "tls.key"];

pub trait Kind: Object {
    /// `(group, version, kind, plural)`.
    const RESOURCE: (&'static str, &'static str, &'static str, &'static str);

    /// What is kept of an object; None when the gateway has no use for it.
    fn keep(self) -> Option<Self>;

    /// Where objects of this kind live in a snapshot.
    fn slot(snap: &mut Snapshot) -> &mut BTreeMap<String, Arc<Self>>;

    /// Where the keys of this kind's moved objects are noted for the next derive.
    fn moved(moved: &mut Moved) -> &mut HashSet<String>;

    fn api_resource() -> ApiResource {
        let (group, version, kind, plural) = Self::RESOURCE;
        ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: if group.is_empty() {
                version.to_owned()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        }
    }
}

macro_rules! object {
    ($($t:ty),*) => {$(
        impl Object for $t {
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    )*};
}

object!(Service, EndpointSlice, Secret, Revision);

impl Object for KIngress {
    const STATUS: bool = true;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Kind for KIngress {
    const RESOURCE: (&'static str, &'static str, &'static str, &'static str) = (
        "networking.internal.knative.dev",
        "v1alpha1",
        "Ingress",
        "ingresses",
    );

    /// Only our class: another class's KIngress is not ours to read, serve or touch.
    fn keep(self) -> Option<Self> {
        self.is_knoxy().then_some(self)
    }

    fn slot(snap: &mut Snapshot) -> &mut BTreeMap<String, Arc<Self>> {
        &mut snap.ingresses
    }

    fn moved(moved: &mut Moved) -> &mut HashSet<String> {
        &mut moved.ingresses
    }
}

impl Kind for Service {
    const RESOURCE: (&'static str, &'static str, &'static str, &'static str) =
        ("", "v1", "Service", "services");

    fn keep(mut self) -> Option<Self> {
        self.metadata.annotations.clear();
        Some(self)
    }

    fn slot(snap: &mut Snapshot) -> &mut BTreeMap<String, Arc<Self>> {
        &mut snap.services
    }

    fn moved(moved: &mut Moved) -> &mut HashSet<String> {
        &mut moved.services
    }
}

impl Kind for EndpointSlice {
    const RESOURCE: (&'static str, &'static str, &'static str, &'static str) =
        ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices");

    fn keep(mut self) -> Option<Self> {
        self.metadata.annotations.clear();
        Some(self)
    }

    fn slot(snap: &mut Snapshot) -> &mut BTreeMap<String, Arc<Self>> {
        &mut snap.endpoint_slices
    }

    fn moved(moved: &mut Moved) -> &mut HashSet<String> {
        &mut moved.endpoint_slices
    }
}

impl Kind for Secret {
    const RESOURCE: (&'static str, &'static str, &'static str, &'static str) =
        ("", "v1", "Secret", "secrets");

    /// A certificate and its key, or nothing: other Secrets' data never stays in memory.
    fn keep(mut self) -> Option<Self> {
        self.data.retain(|k, _| TLS_KEYS.contains(&k.as_str()));
        if self.data.is_empty() {
            return None;
        }
        self.metadata.annotations.clear();
        self.metadata.labels.clear();
        Some(self)
    }

    fn slot(snap: &mut Snapshot) -> &mut BTreeMap<String, Arc<Self>> {
        &mut snap.secrets
    }

    fn moved(moved: &mut Moved) -> &mut HashSet<String> {
        &mut moved.secrets
    }
}

impl Kind for Revision {
    const RESOURCE: (&'static str, &'static str, &'static str, &'static str) =
        ("serving.knative.dev", "v1", "Revision", "revisions");

    /// The throttler reads the limits and the port's protocol, never how the app starts.
    fn keep(mut self) -> Option<Self> {
        for c in &mut self.spec.containers {
            c.image.clear();
            c.command.clear();
            c.args.clear();
            c.env.clear();
        }
        self.metadata.annotations.clear();
        Some(self)
    }

    fn slot(snap: &mut Snapshot) -> &mut BTreeMap<String, Arc<Self>> {
        &mut snap.revisions
    }

    fn moved(moved: &mut Moved) -> &mut HashSet<String> {
        &mut moved.revisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_data_is_kept_of_a_secret() {
        let mut s = Secret::default();
        s.data.insert("tls.crt".into(), "Y3J0".into());
        s.data.insert("password".into(), "aHVudGVyMg==".into());
        let kept = s.keep().expect("a certificate is kept");
        assert_eq!(kept.data.keys().collect::<Vec<_>>(), ["tls.crt"]);
        let mut other = Secret::default();
        other.data.insert("password".into(), "aHVudGVyMg==".into());
        assert_eq!(other.keep(), None);
    }

    #[test]
    fn another_class_is_not_kept() {
        let mut k = KIngress::default();
        k.metadata.annotations.insert(
            knoxy_control::kingress::INGRESS_CLASS_ANNOTATION.into(),
            "kourier.ingress.networking.knative.dev".into(),
        );
        assert_eq!(k.clone().keep(), None);
        k.metadata.annotations.insert(
            knoxy_control::kingress::INGRESS_CLASS_ANNOTATION.into(),
            knoxy_control::kingress::KNOXY_INGRESS_CLASS.into(),
        );
        assert!(k.keep().is_some());
    }

    #[test]
    fn api_paths_are_kubernetes_own() {
        assert_eq!(Service::api_resource().api_version, "v1");
        assert_eq!(
            KIngress::api_resource().api_version,
            "networking.internal.knative.dev/v1alpha1"
        );
    }
}
