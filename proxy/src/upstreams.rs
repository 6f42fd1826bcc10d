//! The gateway's upstream connections: one pool per endpoint (`knoxy-upstream`, as in
//! knoxy-queue), shared by every listener, and pruned to the endpoints of the table being
//! served whenever a table is installed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use knoxy_control::route::{RouteTable, Target};
use knoxy_upstream::{Endpoint, Upstream};
use parking_lot::Mutex;

/// Idle HTTP/1.1 connections kept per endpoint (Knative's `MaxIdleConnsPerHost`).
const MAX_IDLE: usize = 1000;

#[derive(Default)]
pub struct Upstreams {
    /// A fast hash: endpoints come from the table, not from clients.
    pools: Mutex<HashMap<Endpoint, Arc<Upstream>, foldhash::fast::RandomState>>,
}

impl Upstreams {
    /// The pool of `endpoint`, created on first use.
    pub fn get(&self, endpoint: Endpoint) -> Arc<Upstream> {
        let mut pools = self.pools.lock();
        if let Some(pool) = pools.get(&endpoint) {
            return Arc::clone(pool);
        }
        let pool = Upstream::new(endpoint.clone(), MAX_IDLE);
        pools.insert(endpoint, Arc::clone(&pool));
        pool
    }

    /// Drops the pools (and their idle connections) of endpoints `table` no longer names;
    /// requests still running on them finish on their own connections.
    pub fn retain_for(&self, table: &RouteTable) {
        let mut live = HashSet::new();
        let vhosts = table.public.vhosts().chain(table.private.vhosts());
        for split in vhosts.flat_map(|v| &v.routes).flat_map(|r| &r.splits) {
            match &split.backend.target {
                Target::Endpoints(addrs) => live.extend(addrs.iter().copied().map(Endpoint::Addr)),
                Target::Dns { host, port } => {
                    live.insert(Endpoint::Name {
                        host: host.clone(),
                        port: *port,
                    });
                }
            }
        }
        self.pools
            .lock()
            .retain(|endpoint, _| live.contains(endpoint));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pools.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knoxy_control::derive::{derive, DeriveConfig, Snapshot};
    use std::net::SocketAddr;

    fn table(yaml: &str) -> RouteTable {
        let mut snap = Snapshot::default();
        let mut errors = Vec::new();
        knoxy_control::files::add_documents(
            std::path::Path::new("t.yaml"),
            yaml,
            &mut snap,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        derive(&snap, &DeriveConfig::default()).table
    }

    #[test]
    fn pools_of_endpoints_the_table_no_names_are_dropped() {
        let live = table(
            "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata: {name: a, namespace: d, annotations: {networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}\nspec: {rules: [{hosts: [a.example.com], http: {paths: [{splits: [{serviceNamespace: d, serviceName: s, servicePort: 80}]}]}}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: d}\nspec: {ports: [{port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, namespace: d, labels: {kubernetes.io/service-name: s}}\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 8012}]\n",
        );
        let upstreams = Upstreams::default();
        let kept: SocketAddr = "10.0.0.1:8012".parse().unwrap_or_else(|_| unreachable!());
        let gone: SocketAddr = "10.0.0.2:8012".parse().unwrap_or_else(|_| unreachable!());
        let first = upstreams.get(Endpoint::Addr(kept));
        upstreams.get(Endpoint::Addr(gone));
        assert!(
            Arc::ptr_eq(&first, &upstreams.get(Endpoint::Addr(kept))),
            "one pool per endpoint"
        );
        assert_eq!(upstreams.len(), 2);
        upstreams.retain_for(&live);
        assert_eq!(upstreams.len(), 1);
        assert!(Arc::ptr_eq(&first, &upstreams.get(Endpoint::Addr(kept))));
    }
}
