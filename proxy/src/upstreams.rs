//! The gateway's upstream connections: one pool per endpoint (`knoxy-upstream`, as in
//! knoxy-queue), kept with the table that names the endpoint, so every listener and thread
//! reaches it without a lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use knoxy_activator::{probe, Budget, Reporting, Share, StatSink, Throttler, DEFAULT_QUEUE_DEPTH};
use knoxy_control::route::{RevisionTarget, RouteTable, Target, VirtualHost};
use knoxy_upstream::{Connect, Endpoint, Upstream};

/// Idle HTTP/1.1 connections kept per endpoint (Knative's `MaxIdleConnsPerHost`).
const MAX_IDLE: usize = 1000;

/// A fast hash: endpoints come from the table, not from clients.
type Fast = foldhash::fast::RandomState;

/// The table being served and the upstream pools of every endpoint it names, swapped in
/// together: a request finds its pool without a lock, and a pool lives as long as some
/// table names its endpoint.
pub struct Served {
    pub table: RouteTable,
    pools: HashMap<Endpoint, Arc<Upstream>, Fast>,
    /// Each revision's throttler, by `namespace/name`: it outlives tables, as its requests do.
    throttlers: HashMap<String, Arc<Throttler>, Fast>,
    /// How new throttlers are made.
    activator: Activator,
    /// How new pools open connections (None: TCP); the in-memory tests plug one in.
    connector: Option<Arc<dyn Connect>>,
    /// Tables since the pools were last built from scratch.
    since_rebuild: usize,
}

/// A table in this many builds its pools from scratch, dropping those no longer named.
const REBUILD_EVERY: usize = 256;

/// How the gateway plays the activator: the same for every revision and every table.
#[derive(Clone)]
pub struct Activator {
    /// How many requests a revision may hold (`--activator-queue-depth`).
    pub queue_depth: usize,
    /// This replica's share of each revision's pods (`--activator-index`/`-replicas`).
    pub share: Option<Share>,
    /// This gateway's pod IP (`--kubernetes`): among a revision's activators, its index
    /// there gives its share instead.
    pub pod_ip: Option<IpAddr>,
    /// What all held requests may keep (`--activator-held-bytes`).
    pub budget: Option<Arc<Budget>>,
    /// Where throttlers report their revision's demand (None: not reported).
    pub sink: Option<StatSink>,
    /// Where pods are probed before use (None: Kubernetes' ready is trusted).
    pub prober: Option<tokio::runtime::Handle>,
}

impl Activator {
    /// This replica's share of `rev`'s pods: its index among the revision's activators
    /// when it knows its own IP and is one of them (Proxy mode); all pods when it knows its
    /// IP and is not (Knative's index -1); else the flags' share.
    fn share_of(&self, rev: &RevisionTarget) -> Option<Share> {
        match self.pod_ip {
            Some(ip) if !rev.activators.is_empty() => rev
                .activators
                .iter()
                .position(|a| *a == ip)
                .and_then(|i| Share::new(i, rev.activators.len())),
            _ => self.share,
        }
    }
}

impl Default for Activator {
    fn default() -> Self {
        Activator {
            queue_depth: DEFAULT_QUEUE_DEPTH,
            share: None,
            pod_ip: None,
            budget: None,
            sink: None,
            prober: None,
        }
    }
}

impl Default for Served {
    fn default() -> Self {
        Served::holding(Activator::default())
    }
}

impl Served {
    /// `table` with pools for its endpoints: those `previous` has are kept (with their
    /// connections), the others are new; pools of endpoints no longer named are dropped
    /// (requests still running on them finish on their own connections).
    pub fn new(table: RouteTable, previous: &Served) -> Served {
        // A table that changed a few virtual hosts starts from the previous pools and adds
        // what those name (10,000 KIngresses with 50,000 endpoints swap in a few ms, not
        // tens); pools of endpoints no longer named go at the next full rebuild.
        let changed: Vec<&VirtualHost> = table
            .public
            .changed_since(&previous.table.public)
            .chain(table.private.changed_since(&previous.table.private))
            .collect();
        let hosts = table.public.len() + table.private.len();
        let incremental = previous.since_rebuild < REBUILD_EVERY && changed.len() * 8 < hosts;
        let mut pools = if incremental {
            previous.pools.clone()
        } else {
            HashMap::with_capacity_and_hasher(previous.pools.len(), Fast::default())
        };
        let mut throttlers = HashMap::default();
        // Every revision gets its throttler, and pools for its pods, ready or not yet (a pod
        // that passes its probe early is used before Kubernetes calls it ready).
        for (key, rev) in &table.revisions {
            let throttler = match previous.throttlers.get(key) {
                Some(kept) => {
                    // Replicas come and go: the share is taken again with the pods.
                    let kept = Arc::clone(kept).shared(previous.activator.share_of(rev));
                    kept.set_pods(
                        rev.settings.container_concurrency,
                        &rev.ready,
                        &rev.not_ready,
                    );
                    kept
                }
                None => previous.new_throttler(rev),
            };
            throttlers.insert(key.clone(), throttler);
            for &pod in rev.ready.iter().chain(&rev.not_ready) {
                let endpoint = Endpoint::Addr(pod);
                let pool = previous.pools.get(&endpoint).cloned().unwrap_or_else(|| {
                    Upstream::with_connector(endpoint.clone(), MAX_IDLE, previous.connector.clone())
                });
                pools.insert(endpoint, pool);
            }
        }
        let vhosts: Box<dyn Iterator<Item = &VirtualHost>> = if incremental {
            Box::new(changed.into_iter())
        } else {
            Box::new(table.public.vhosts().chain(table.private.vhosts()))
        };
        for split in vhosts.flat_map(|v| &v.routes).flat_map(|r| &r.splits) {
            let endpoints: Vec<Endpoint> = match &split.backend.target {
                Target::Endpoints(addrs) => addrs.iter().copied().map(Endpoint::Addr).collect(),
                // Pooled above, with the revision's throttler.
                Target::Revision(_) => Vec::new(),
                Target::Dns { host, port } => vec![Endpoint::Name {
                    host: host.clone(),
                    port: *port,
                }],
            };
            for endpoint in endpoints {
                if let std::collections::hash_map::Entry::Vacant(slot) = pools.entry(endpoint) {
                    let endpoint = slot.key();
                    let pool = previous.pools.get(endpoint).cloned().unwrap_or_else(|| {
                        Upstream::with_connector(
                            endpoint.clone(),
                            MAX_IDLE,
                            previous.connector.clone(),
                        )
                    });
                    slot.insert(pool);
                }
            }
        }
        Served {
            table,
            pools,
            throttlers,
            activator: previous.activator.clone(),
            connector: previous.connector.clone(),
            since_rebuild: if incremental {
                previous.since_rebuild + 1
            } else {
                0
            },
        }
    }

    /// An empty table whose revisions' throttlers will be made as `activator` says.
    pub fn holding(activator: Activator) -> Served {
        Served {
            table: RouteTable::default(),
            pools: HashMap::default(),
            throttlers: HashMap::default(),
            activator,
            connector: None,
            since_rebuild: 0,
        }
    }

    fn new_throttler(&self, rev: &RevisionTarget) -> Arc<Throttler> {
        let cc = rev.settings.container_concurrency;
        let role = &self.activator;
        let reporting = role.sink.as_ref().map(|sink| Reporting {
            namespace: rev.namespace().to_owned(),
            name: rev.name().to_owned(),
            sink: sink.clone(),
        });
        let mut throttler = Throttler::reporting(cc, role.queue_depth, reporting)
            .shared(role.share_of(rev))
            .budgeted(role.budget.clone());
        if let Some(prober) = &role.prober {
            throttler = throttler.probing();
            prober.spawn(probe::keep_probing(Arc::downgrade(&throttler)));
        }
        throttler.set_pods(cc, &rev.ready, &rev.not_ready);
        throttler
    }

    /// What held requests keep now, of the gateway's budget.
    pub fn held_bytes(&self) -> usize {
        self.activator.budget.as_ref().map_or(0, |b| b.used())
    }

    /// Every revision's throttler, by `namespace/name`.
    pub fn throttlers(&self) -> impl Iterator<Item = (&str, &Arc<Throttler>)> {
        self.throttlers.iter().map(|(k, t)| (k.as_str(), t))
    }

    /// The throttler of the revision `rev`: every revision of the table has one.
    pub fn throttler(&self, rev: &RevisionTarget) -> Option<Arc<Throttler>> {
        self.throttlers.get(&rev.key).cloned()
    }

    /// An empty table whose pools will open connections with `connector`.
    #[cfg(test)]
    pub fn connecting_with(connector: Arc<dyn Connect>) -> Served {
        Served {
            connector: Some(connector),
            ..Served::default()
        }
    }

    /// The pool of `endpoint`. One the table does not name (a request that outlived its
    /// table) gets a connection of its own.
    pub fn pool(&self, endpoint: Endpoint) -> Arc<Upstream> {
        match self.pools.get(&endpoint) {
            Some(pool) => Arc::clone(pool),
            None => Upstream::with_connector(endpoint, 0, self.connector.clone()),
        }
    }
}

/// The route table of some YAML objects, for tests.
#[cfg(test)]
pub fn table_of(yaml: &str) -> RouteTable {
    let mut snap = knoxy_control::derive::Snapshot::default();
    let mut errors = Vec::new();
    knoxy_control::files::add_documents(
        std::path::Path::new("t.yaml"),
        yaml,
        &mut snap,
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    knoxy_control::derive::derive(&snap, &knoxy_control::derive::DeriveConfig::default()).table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn a_gateway_among_a_revisions_activators_takes_its_index_share() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let rev = RevisionTarget {
            key: "d/r".into(),
            settings: knoxy_control::revision::RevisionSpec::default()
                .settings("spec")
                .expect("defaults"),
            ready: Vec::new(),
            not_ready: Vec::new(),
            activators: vec![ip("10.0.0.10"), ip("10.0.0.9")],
        };
        let flags = Share::new(1, 4);
        let role = |pod_ip: Option<&str>| Activator {
            share: flags,
            pod_ip: pod_ip.map(ip),
            ..Activator::default()
        };
        assert_eq!(role(Some("10.0.0.9")).share_of(&rev), Share::new(1, 2));
        // Not among them (Serve mode lists pods): Knative's index -1, every pod.
        assert_eq!(role(Some("10.0.0.5")).share_of(&rev), None);
        // Not knowing its own IP, the flags decide.
        assert_eq!(role(None).share_of(&rev), flags);
    }

    #[test]
    fn pools_of_endpoints_the_table_no_longer_names_are_dropped_and_others_kept() {
        let yaml = |ip: &str| {
            format!("apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata: {{name: a, namespace: d, annotations: {{networking.knative.dev/ingress.class: knoxy.ingress.networking.knative.dev}}}}\nspec: {{rules: [{{hosts: [a.example.com], http: {{paths: [{{splits: [{{serviceNamespace: d, serviceName: s, servicePort: 80}}]}}]}}}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: d}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s-1, namespace: d, labels: {{kubernetes.io/service-name: s}}}}\nendpoints: [{{addresses: [10.0.0.1, {ip}]}}]\nports: [{{port: 8012}}]\n")
        };
        let addr = |s: &str| Endpoint::Addr(s.parse::<SocketAddr>().expect("addr"));
        let first = Served::new(table_of(&yaml("10.0.0.2")), &Served::default());
        assert_eq!(first.pools.len(), 2);
        let kept = first.pool(addr("10.0.0.1:8012"));
        assert!(
            Arc::ptr_eq(&kept, &first.pool(addr("10.0.0.1:8012"))),
            "one pool per endpoint"
        );
        let second = Served::new(table_of(&yaml("10.0.0.3")), &first);
        assert_eq!(second.pools.len(), 2);
        assert!(
            Arc::ptr_eq(&kept, &second.pool(addr("10.0.0.1:8012"))),
            "kept across tables"
        );
        assert!(!second.pools.contains_key(&addr("10.0.0.2:8012")), "pruned");
        let stray = second.pool(addr("10.0.0.2:8012"));
        assert!(
            !Arc::ptr_eq(&stray, &second.pool(addr("10.0.0.2:8012"))),
            "not pooled"
        );
    }

    #[test]
    fn every_revision_keeps_one_throttler_across_tables_and_pools_for_all_its_pods() {
        let yaml = |pods: &str| {
            format!("apiVersion: serving.knative.dev/v1\nkind: Revision\nmetadata: {{name: r, namespace: d}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: r-private-1, namespace: d, labels: {{kubernetes.io/service-name: r-private}}}}\nendpoints: [{pods}]\nports: [{{name: http, port: 8012}}]\n")
        };
        let addr = |s: &str| Endpoint::Addr(s.parse::<SocketAddr>().expect("addr"));
        // No KIngress names the revision: the activator role serves it all the same.
        let first = Served::new(
            table_of(&yaml(
                "{addresses: [10.0.0.1]}, {addresses: [10.0.0.2], conditions: {ready: false}}",
            )),
            &Served::default(),
        );
        let throttler = Arc::clone(&first.throttlers["d/r"]);
        assert!(first.pools.contains_key(&addr("10.0.0.1:8012")));
        assert!(
            first.pools.contains_key(&addr("10.0.0.2:8012")),
            "not ready yet, pooled"
        );
        let second = Served::new(table_of(&yaml("{addresses: [10.0.0.3]}")), &first);
        assert!(Arc::ptr_eq(&throttler, &second.throttlers["d/r"]), "kept");
        assert_eq!(throttler.load().pods, 1);
        let gone = Served::new(table_of(""), &second);
        assert!(gone.throttlers.is_empty());
    }
}
