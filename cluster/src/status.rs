//! The leader's status writer: each KIngress of Knoxy's class gets the status Knative
//! expects (`knoxy_control::ingress_status`), `LoadBalancerReady` only once every gateway
//! replica serves its generation. Replicas are the ready endpoints of the peers Service
//! (port `admin`); each tells what it serves at its admin port's `/served`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::{Timestamp, Unit};
use knoxy_control::derive::{IngressStatus, Snapshot};
use knoxy_control::ingress_status::{ingress_status, status_update, Balancers};
use knoxy_control::k8s::SERVICE_NAME_LABEL;
use knoxy_control::kingress::KIngress;
use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::connect::chain;
use crate::kinds::Kind as _;
use crate::source::Shared;

/// How often the leader looks again while some replica has not caught up.
const TICK: Duration = Duration::from_millis(200);
/// How long one replica may take to say what it serves.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// A status written but not yet seen back from the watch is written again after this.
const REWRITE: Duration = Duration::from_secs(10);
/// Status writes in flight at once.
const WRITES: usize = 16;

/// Where the status points and who the replicas are.
#[derive(Debug, Clone)]
pub struct Writing {
    pub balancers: Balancers,
    /// `(namespace, name)` of the Service whose endpoints are the gateway replicas.
    pub peers: (String, String),
}

/// What the last installed table serves: each KIngress's derived status and the generation
/// it was derived from.
#[derive(Debug, Default)]
pub struct Installed {
    /// Counts the tables installed (1 for the first).
    pub table: u64,
    pub statuses: BTreeMap<String, (i64, IngressStatus)>,
}

impl Installed {
    pub fn new(
        table: u64,
        snapshot: &Snapshot,
        statuses: &BTreeMap<String, IngressStatus>,
    ) -> Installed {
        // Both maps are sorted by key: walked side by side rather than looked up.
        let mut ingresses = snapshot.ingresses.iter().peekable();
        let mut kept = BTreeMap::new();
        for (key, status) in statuses {
            while ingresses.next_if(|(k, _)| *k < key).is_some() {}
            if let Some((_, ingress)) = ingresses.next_if(|(k, _)| *k == key) {
                kept.insert(key.clone(), (ingress.metadata.generation, status.clone()));
            }
        }
        Installed {
            table,
            statuses: kept,
        }
    }

    /// `namespace/name` → generation, of each KIngress served as it is now (`/served`).
    pub fn served(&self) -> BTreeMap<String, i64> {
        self.statuses
            .iter()
            .filter(|(_, (_, s))| matches!(s, IngressStatus::Ready { .. }))
            .map(|(k, (g, _))| (k.clone(), *g))
            .collect()
    }
}

/// One replica's `/served`, as last fetched.
struct Peer {
    etag: String,
    served: Arc<BTreeMap<String, i64>>,
}

/// What a KIngress's status was last decided from: while none of it moves, it is not
/// looked at again.
struct Decided {
    generation: i64,
    derived: IngressStatus,
    everywhere: bool,
    observed: Option<Arc<str>>,
    /// When a status was written that the watch has not shown back yet.
    wrote: Option<Instant>,
}

pub(crate) async fn write_statuses(client: Client, shared: Arc<Shared>, writing: Writing) {
    let ar = KIngress::api_resource();
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut decided: HashMap<String, Decided> = HashMap::new();
    // What the last look saw: only what moved since is looked at again.
    let mut seen_installed: Arc<Installed> = Arc::default();
    let mut seen_views: Vec<(SocketAddr, String)> = Vec::new();
    let mut alone_logged = false;
    loop {
        tokio::select! {
            () = shared.installed_changed.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
        if !shared.leading.load(Ordering::Acquire) {
            decided.clear();
            seen_installed = Arc::default();
            continue;
        }
        let (installed, replicas) = {
            let state = shared.state.lock();
            (
                Arc::clone(&state.installed),
                replicas(&state.snapshot, &writing.peers),
            )
        };
        // What each replica serves; one that does not answer serves nothing yet.
        let answers = futures_util::future::join_all(replicas.iter().map(|addr| {
            let etag = peers.get(addr).map(|p| p.etag.clone());
            async move { (*addr, fetch(*addr, etag).await) }
        }))
        .await;
        let mut views: Vec<Arc<BTreeMap<String, i64>>> = Vec::new();
        for (addr, answer) in answers {
            match answer {
                Ok(Some(fresh)) => {
                    views.push(Arc::clone(&fresh.served));
                    peers.insert(addr, fresh);
                }
                Ok(None) => views.extend(peers.get(&addr).map(|p| Arc::clone(&p.served))),
                Err(_) => views.push(Arc::default()),
            }
        }
        peers.retain(|addr, _| replicas.contains(addr));
        if replicas.is_empty() && !alone_logged {
            eprintln!(
                "knoxy: no ready endpoint of {}/{} (port admin): KIngress status reflects this replica alone",
                writing.peers.0, writing.peers.1
            );
            alone_logged = true;
        }
        let now = Timestamp::now()
            .round(Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let views_tags: Vec<(SocketAddr, String)> = replicas
            .iter()
            .map(|a| (*a, peers.get(a).map(|p| p.etag.clone()).unwrap_or_default()))
            .collect();
        let mut updates = Vec::new();
        {
            let mut observed = shared.observed.lock();
            // Everything when the replicas' views or a relist moved; else what the table or
            // the watch moved, and writes not yet seen back.
            let everything = views_tags != seen_views || observed.all_moved;
            let mut looks: std::collections::BTreeSet<&String> =
                std::mem::take(&mut observed.moved)
                    .iter()
                    .filter_map(|k| installed.statuses.get_key_value(k).map(|(k, _)| k))
                    .collect();
            let (moved, gone) = moved_between(&seen_installed, &installed);
            looks.extend(moved);
            gone.into_iter().for_each(|k| drop(decided.remove(k)));
            looks.extend(
                decided
                    .iter()
                    .filter(|(_, d)| d.wrote.is_some_and(|at| at.elapsed() >= REWRITE))
                    .filter_map(|(k, _)| installed.statuses.get_key_value(k).map(|(k, _)| k)),
            );
            observed.all_moved = false;
            let keys: Box<dyn Iterator<Item = &String>> = if everything {
                Box::new(installed.statuses.keys())
            } else {
                Box::new(looks.into_iter())
            };
            for key in keys {
                let Some((generation, derived)) = installed.statuses.get(key) else {
                    continue;
                };
                let everywhere = matches!(derived, IngressStatus::Ready { .. })
                    && views.iter().all(|v| v.get(key) == Some(generation));
                let observed = observed.statuses.get(key);
                let unmoved = decided.get(key).is_some_and(|d| {
                    d.generation == *generation
                        && d.everywhere == everywhere
                        && d.derived == *derived
                        && d.observed.as_ref().map(Arc::as_ptr) == observed.map(Arc::as_ptr)
                        && d.wrote.is_none_or(|at| at.elapsed() < REWRITE)
                });
                if unmoved {
                    continue;
                }
                let desired = ingress_status(derived, *generation, everywhere, &writing.balancers);
                let before: Option<Value> = observed.and_then(|s| serde_json::from_str(s).ok());
                let update = status_update(&desired, before.as_ref(), &now);
                decided.insert(
                    key.clone(),
                    Decided {
                        generation: *generation,
                        derived: derived.clone(),
                        everywhere,
                        observed: observed.cloned(),
                        wrote: update.is_some().then(Instant::now),
                    },
                );
                // As text: a KIngress's status is a few hundred bytes, its `Value` several KB.
                let patch = update.and_then(|status| {
                    RawValue::from_string(json!({ "status": status }).to_string()).ok()
                });
                if let Some(patch) = patch {
                    updates.push((key.clone(), patch));
                }
            }
        }
        seen_installed = Arc::clone(&installed);
        seen_views = views_tags;
        let results = futures_util::stream::iter(updates.into_iter().map(|(key, patch)| {
            let client = client.clone();
            let ar = ar.clone();
            async move {
                let (ns, name) = key.split_once('/').unwrap_or_default();
                let api: Api<DynamicObject> = Api::namespaced_with(client, ns, &ar);
                let patch = Patch::Merge(&patch);
                // The object written back is not needed: only whether the write took.
                let result = api
                    .patch_status(name, &PatchParams::default(), &patch)
                    .await
                    .map(drop);
                (key, result)
            }
        }))
        .buffer_unordered(WRITES)
        .collect::<Vec<_>>()
        .await;
        for (key, result) in results {
            match result {
                Ok(_) => {}
                // Deleted since: nothing to say of it.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    // Decided again on the next look.
                    decided.remove(&key);
                    eprintln!(
                        "knoxy: cannot write the status of KIngress {key}: {}",
                        chain(&e)
                    );
                }
            }
        }
    }
}

/// The keys whose generation or derived status differ between two installed tables (both
/// sorted: walked side by side).
fn moved_between<'a>(
    before: &'a Installed,
    now: &'a Installed,
) -> (Vec<&'a String>, Vec<&'a String>) {
    let mut old = before.statuses.iter().peekable();
    let (mut moved, mut gone) = (Vec::new(), Vec::new());
    for (key, entry) in &now.statuses {
        while let Some((k, _)) = old.next_if(|(k, _)| *k < key) {
            gone.push(k);
        }
        match old.next_if(|(k, _)| *k == key) {
            Some((_, was)) if was == entry => {}
            _ => moved.push(key),
        }
    }
    gone.extend(old.map(|(k, _)| k));
    (moved, gone)
}

/// The ready endpoints of the peers Service, on its port named `admin`.
fn replicas(snapshot: &Snapshot, (namespace, service): &(String, String)) -> Vec<SocketAddr> {
    // Keys are `namespace/name`: the namespace's slices are one range of them.
    let from = format!("{namespace}/");
    let mut found: Vec<SocketAddr> = snapshot
        .endpoint_slices
        .range::<str, _>((Bound::Excluded(from.as_str()), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(&from))
        .map(|(_, s)| s)
        .filter(|s| s.metadata.labels.get(SERVICE_NAME_LABEL) == Some(service))
        .flat_map(|s| {
            let port = s
                .ports
                .iter()
                .find(|p| p.name == "admin")
                .and_then(|p| p.port);
            s.endpoints
                .iter()
                .filter(|e| e.conditions.ready != Some(false))
                .flat_map(|e| e.addresses.iter())
                .filter_map(move |a| Some(SocketAddr::new(a.parse().ok()?, port?)))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// GET `/served` from one replica; Ok(None) when it is unchanged since `etag`.
async fn fetch(addr: SocketAddr, etag: Option<String>) -> Result<Option<Peer>, String> {
    let get = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get("/served").header(http::header::HOST, addr.to_string());
        if let Some(etag) = &etag {
            req = req.header(http::header::IF_NONE_MATCH, etag.as_str());
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() == http::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if resp.status() != http::StatusCode::OK {
            return Err(format!("{addr}/served answered {}", resp.status()));
        }
        let etag = resp
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let parsed: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let served = parsed["served"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, g)| Some((k.clone(), g.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Peer {
            etag,
            served: Arc::new(served),
        }))
    };
    tokio::time::timeout(PEER_TIMEOUT, get)
        .await
        .map_err(|_| format!("{addr}/served did not answer within {PEER_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use knoxy_control::k8s::EndpointSlice;

    #[test]
    fn replicas_are_the_ready_endpoints_of_the_peers_service_on_port_admin() {
        let slice = |name: &str, service: &str, port: u16, ready: bool| -> Arc<EndpointSlice> {
            Arc::new(serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "knoxy-system", "labels": {SERVICE_NAME_LABEL: service}},
                "ports": [{"name": "http2", "port": 8080}, {"name": "admin", "port": port}],
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}}]
            })).expect("a slice"))
        };
        let mut snap = Snapshot::default();
        for (name, service, port, ready) in [
            ("a", "knoxy-peers", 9090, true),
            ("b", "knoxy-peers", 9091, false),
            ("c", "other", 9092, true),
        ] {
            snap.endpoint_slices.insert(
                format!("knoxy-system/{name}"),
                slice(name, service, port, ready),
            );
        }
        // Same Service name, other namespaces (sorting just before and after this one).
        for ns in ["knoxy-system-a", "knoxy-systemz"] {
            let mut other = (*slice("a", "knoxy-peers", 9093, true)).clone();
            other.metadata.namespace = ns.to_owned();
            snap.endpoint_slices
                .insert(format!("{ns}/a"), Arc::new(other));
        }
        let peers = ("knoxy-system".to_owned(), "knoxy-peers".to_owned());
        assert_eq!(
            replicas(&snap, &peers),
            [SocketAddr::from(([10, 0, 0, 1], 9090))]
        );
    }

    #[test]
    fn moved_between_names_what_changed_came_and_went() {
        let ready = |hash: &str| IngressStatus::Ready { hash: hash.into() };
        let installed = |entries: &[(&str, i64, &str)]| Installed {
            table: 0,
            statuses: entries
                .iter()
                .map(|(k, g, h)| ((*k).to_owned(), (*g, ready(h))))
                .collect(),
        };
        let before = installed(&[
            ("a/gone", 1, "x"),
            ("b/same", 1, "x"),
            ("c/new-gen", 1, "x"),
            ("e/last", 1, "x"),
        ]);
        let now = installed(&[
            ("b/same", 1, "x"),
            ("c/new-gen", 2, "x"),
            ("d/came", 1, "x"),
        ]);
        let (moved, gone) = moved_between(&before, &now);
        assert_eq!(moved, ["c/new-gen", "d/came"]);
        assert_eq!(gone, ["a/gone", "e/last"]);
    }
}
