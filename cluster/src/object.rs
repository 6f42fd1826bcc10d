//! What a watch yields: one of the control crate's trimmed objects, and beside it the few
//! metadata fields kube-rs's watcher reads (the resourceVersion it resumes from).

use std::borrow::Cow;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as KubeMeta;
use knoxy_control::kingress::ObjectMeta;
use kube::core::{ApiResource, DynamicResourceScope, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A control-crate object as the API serves it, or why it does not decode (one tenant's
/// malformed object must not fail the whole list it came in). The object's own metadata
/// goes without the resourceVersion, so versions differing only in status compare equal.
#[derive(Debug, Clone)]
pub struct Watched<T> {
    meta: KubeMeta,
    pub object: Result<T, String>,
    /// The object's `status` as compact JSON, for the kinds whose status Knoxy writes (text
    /// is several times smaller than a `Value`, and is parsed only when it must be).
    pub status: Option<std::sync::Arc<str>>,
}

/// A control-crate type a watch can decode.
pub trait Object: DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static {
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Whether Knoxy writes this kind's status, and so reads it.
    const STATUS: bool = false;
}

impl<T> Watched<T> {
    /// `namespace/name`, the key the snapshot keeps objects by.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.meta.namespace.as_deref().unwrap_or_default(),
            self.meta.name.as_deref().unwrap_or_default()
        )
    }
}

/// The parts of an object read before decoding it, borrowed from its text.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    metadata: MetaHead<'a>,
    #[serde(default, borrow)]
    status: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MetaHead<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    resource_version: Option<Cow<'a, str>>,
}

impl<'de, T: Object> Deserialize<'de> for Watched<T> {
    /// The object's text is kept whole while it is decoded (no `Value` tree: a watch of
    /// 10,000 objects would churn through far more memory than it keeps).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(d)?;
        let head: Head<'_> = serde_json::from_str(raw.get()).map_err(serde::de::Error::custom)?;
        let owned = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        let meta = KubeMeta {
            name: owned(head.metadata.name),
            namespace: owned(head.metadata.namespace),
            resource_version: owned(head.metadata.resource_version),
            ..KubeMeta::default()
        };
        let status = T::STATUS
            .then(|| head.status.map(|s| s.get().into()))
            .flatten();
        let object = serde_path_to_error::deserialize::<_, T>(
            &mut serde_json::Deserializer::from_str(raw.get()),
        )
        .map(|mut object| {
            object.metadata_mut().resource_version.clear();
            object
        })
        .map_err(|e| match e.path().to_string().as_str() {
            "." => e.inner().to_string(),
            path => format!("{path}: {}", e.inner()),
        });
        Ok(Watched {
            meta,
            object,
            status,
        })
    }
}

impl<T> Resource for Watched<T> {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &KubeMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut KubeMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knoxy_control::kingress::KIngress;
    use kube::core::ResourceExt as _;

    #[test]
    fn the_resource_version_moves_beside_the_object() {
        let json = r#"{"apiVersion":"networking.internal.knative.dev/v1alpha1","kind":"Ingress",
            "metadata":{"name":"a","namespace":"ns","resourceVersion":"42","generation":3},
            "spec":{},"status":{"conditions":[]}}"#;
        let w: Watched<KIngress> = serde_json::from_str(json).expect("decodes");
        assert_eq!(w.resource_version().as_deref(), Some("42"));
        assert_eq!(w.key(), "ns/a");
        let object = w.object.expect("a KIngress");
        assert_eq!(object.metadata.resource_version, "");
        assert_eq!(object.metadata.generation, 3);
    }

    #[test]
    fn a_watch_event_decodes_the_object_from_its_text() {
        let line = r#"{"type":"MODIFIED","object":{"metadata":{"name":"a","namespace":"ns","resourceVersion":"9"},"spec":{},"status":{"observedGeneration":1}}}"#;
        let event: kube::core::WatchEvent<Watched<KIngress>> =
            serde_json::from_str(line).expect("decodes");
        let kube::core::WatchEvent::Modified(w) = event else {
            panic!("not MODIFIED")
        };
        assert_eq!(w.resource_version().as_deref(), Some("9"));
        assert_eq!(w.status.as_deref(), Some(r#"{"observedGeneration":1}"#));
    }

    #[test]
    fn a_malformed_object_says_where_and_still_has_its_key() {
        let json = r#"{"metadata":{"name":"a","namespace":"ns","resourceVersion":"7"},
            "spec":{"rules":[{"hosts":["x"],"http":{"paths":[{"splits":[{"percent":"half"}]}]}}]}}"#;
        let w: Watched<KIngress> = serde_json::from_str(json).expect("still a watch item");
        assert_eq!(w.key(), "ns/a");
        let e = w.object.expect_err("percent is a number");
        assert!(
            e.starts_with("spec.rules[0].http.paths[0].splits[0].percent: "),
            "{e}"
        );
    }
}
