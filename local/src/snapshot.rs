//! What `knoxy local` hands the gateway: the same Kubernetes-shaped objects a cluster
//! holds, so one derivation serves both. Each Route's KIngress, each Revision, and one
//! EndpointSlice of the revision's private Service (`<rev>-private`) per instance, its
//! queue's loopback port under the protocol's port name, ready or not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use knoxy_control::derive::Snapshot;
use knoxy_control::k8s::{
    Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Service, ServicePort, ServiceSpec,
};
use knoxy_control::kingress::{IntOrString, KIngress, ObjectMeta};
use knoxy_control::revision::{Revision, RevisionSpec, PRIVATE_SUFFIX};

/// A revision as it runs locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRevision {
    pub namespace: String,
    pub name: String,
    pub spec: RevisionSpec,
    /// Each instance's queue endpoint, and whether it is ready.
    pub instances: Vec<(SocketAddr, bool)>,
}

/// A Route's placeholder Service (`<route>` in its namespace), headless with one endpoint:
/// the gateway's private listener, as Knative points it at the load balancer. A
/// DomainMapping's KIngress goes through it back into the gateway (over HTTP/1.1, where
/// Knative names the port `http2`: upgrades pass either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub namespace: String,
    pub name: String,
    pub private: SocketAddr,
}

/// The objects the gateway derives its table from.
pub fn snapshot(
    ingresses: &[KIngress],
    revisions: &[LocalRevision],
    placeholders: &[Placeholder],
) -> Snapshot {
    let mut snap = Snapshot::default();
    for p in placeholders {
        let meta = |name: String| ObjectMeta {
            name,
            namespace: p.namespace.clone(),
            labels: BTreeMap::from([("kubernetes.io/service-name".to_owned(), p.name.clone())]),
            ..ObjectMeta::default()
        };
        let service = Service {
            metadata: meta(p.name.clone()),
            spec: ServiceSpec {
                kind: "ClusterIP".to_owned(),
                ports: vec![ServicePort {
                    name: "http".to_owned(),
                    port: 80,
                    target_port: Some(IntOrString::Int(i64::from(p.private.port()))),
                    app_protocol: String::new(),
                }],
                external_name: String::new(),
            },
        };
        let slice = EndpointSlice {
            metadata: meta(p.name.clone()),
            address_type: if p.private.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned(),
            endpoints: vec![Endpoint {
                addresses: vec![p.private.ip().to_string()],
                conditions: EndpointConditions { ready: Some(true) },
            }],
            ports: vec![EndpointPort {
                name: "http".to_owned(),
                port: Some(p.private.port()),
            }],
        };
        snap.services
            .insert(service.metadata.key(), Arc::new(service));
        snap.endpoint_slices
            .insert(slice.metadata.key(), Arc::new(slice));
    }
    for k in ingresses {
        snap.ingresses.insert(k.metadata.key(), Arc::new(k.clone()));
    }
    for r in revisions {
        let meta = ObjectMeta {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            ..ObjectMeta::default()
        };
        let h2c = r.spec.settings("spec").is_ok_and(|s| s.h2c);
        let port_name = if h2c { "http2" } else { "http" };
        for (i, (addr, ready)) in r.instances.iter().enumerate() {
            let slice = EndpointSlice {
                metadata: ObjectMeta {
                    name: format!("{}{PRIVATE_SUFFIX}-{i}", r.name),
                    namespace: r.namespace.clone(),
                    labels: BTreeMap::from([(
                        "kubernetes.io/service-name".to_owned(),
                        format!("{}{PRIVATE_SUFFIX}", r.name),
                    )]),
                    ..ObjectMeta::default()
                },
                address_type: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned(),
                endpoints: vec![Endpoint {
                    addresses: vec![addr.ip().to_string()],
                    conditions: EndpointConditions {
                        ready: Some(*ready),
                    },
                }],
                ports: vec![EndpointPort {
                    name: port_name.to_owned(),
                    port: Some(addr.port()),
                }],
            };
            snap.endpoint_slices
                .insert(slice.metadata.key(), Arc::new(slice));
        }
        let revision = Revision {
            metadata: meta,
            spec: r.spec.clone(),
        };
        snap.revisions
            .insert(revision.metadata.key(), Arc::new(revision));
    }
    snap
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use knoxy_control::derive::{derive, DeriveConfig, IngressStatus};
    use knoxy_control::route::Target as Backend;
    use knoxy_control::serving::ingress::{ingress, Network, Route, Target};

    use super::*;

    fn pod(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_services_route_and_instances_become_the_gateways_table() {
        let route = Route {
            name: "hello".into(),
            namespace: "default".into(),
            targets: vec![Target {
                tag: None,
                revision: "hello-00001".into(),
                percent: 100,
                configuration: Some("hello".into()),
                h2c: false,
            }],
            cluster_local_tags: BTreeSet::new(),
            ..Route::default()
        };
        let k = ingress(&route, &Network::default());
        let rev = LocalRevision {
            namespace: "default".into(),
            name: "hello-00001".into(),
            spec: RevisionSpec {
                container_concurrency: Some(10),
                ..RevisionSpec::default()
            },
            instances: vec![(pod(41001), true), (pod(41002), false)],
        };
        let derived = derive(&snapshot(&[k], &[rev], &[]), &DeriveConfig::default());
        assert!(
            matches!(derived.status["default/hello"], IngressStatus::Ready { .. }),
            "{:?}",
            derived.status
        );
        let target = &derived.table.revisions["default/hello-00001"];
        assert_eq!(target.ready, [pod(41001)]);
        assert_eq!(target.not_ready, [pod(41002)]);
        assert_eq!(target.settings.container_concurrency, 10);
        // The public host routes to that revision, through its throttler.
        let vhost = derived
            .table
            .public
            .find("hello.default.example.com")
            .expect("the public host");
        let split = &vhost.routes[0].splits[0];
        assert!(
            matches!(&split.backend.target, Backend::Revision(r) if r.key == "default/hello-00001")
        );
        assert!(derived
            .table
            .private
            .find("hello.default.svc.cluster.local")
            .is_some());
    }
}
