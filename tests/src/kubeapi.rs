//! A fake Kubernetes API server for black-box tests: an in-memory store of a few kinds behind the
//! real REST paths, with a global resourceVersion, watches (history replay, bookmarks, 410 Gone),
//! consistent paginated lists, selectors, optimistic concurrency, the status subresource, merge and
//! JSON patches, finalizers and RBAC refusals, each answered with the real server's status, reason
//! and message. `knoxy` reaches it through [`FakeApi::kubeconfig`]; tests also write to it directly
//! as another API client would.
//!
//! Left out on purpose: server-side apply, dry runs, admission, defaulting and schema validation,
//! managedFields, namespaces as objects, cluster-scoped kinds, pod graceful deletion, YAML and
//! protobuf bodies, and strategic merge's list semantics (it is a merge patch here).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::hash::BuildHasher as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Watch events the server remembers for resuming watches.
const HISTORY: usize = 100_000;
/// List snapshots kept for continue tokens.
const LIST_SNAPSHOTS: usize = 16;
/// The API server's default request body limit (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Whom RBAC refusals name: the service account `knoxy` runs as.
const USER: &str = "system:serviceaccount:knoxy-system:knoxy";
/// Why a write with a stale resourceVersion conflicts.
const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// A fake API server on 127.0.0.1 with its own thread and runtime; dropping it stops the server
/// and closes every connection and stream.
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A resource the fake serves (all namespaced); add a row to [`KINDS`] to serve one more.
#[derive(Debug)]
struct Kind {
    kind: &'static str,
    api_version: &'static str,
    plural: &'static str,
    /// `status` is written through `/status` only.
    status_subresource: bool,
    /// A custom resource: no strategic merge, list items keep apiVersion/kind, PUT needs a version.
    custom: bool,
    /// The server keeps `metadata.generation`, bumped by spec changes.
    generation: bool,
    /// A PUT without `metadata.resourceVersion` overwrites instead of failing.
    unconditional_update: bool,
    /// A PUT of an absent object creates it.
    create_on_update: bool,
    /// A DELETE answers with the object rather than a `Success` Status.
    delete_returns_object: bool,
}

/// Defaults of a built-in kind (the custom ones differ in every flag).
const fn builtin(kind: &'static str, api_version: &'static str, plural: &'static str) -> Kind {
    Kind {
        kind,
        api_version,
        plural,
        status_subresource: false,
        custom: false,
        generation: false,
        unconditional_update: true,
        create_on_update: false,
        delete_returns_object: false,
    }
}

const fn custom(kind: &'static str, api_version: &'static str, plural: &'static str) -> Kind {
    Kind {
        kind,
        api_version,
        plural,
        status_subresource: true,
        custom: true,
        generation: true,
        unconditional_update: false,
        create_on_update: false,
        delete_returns_object: false,
    }
}

/// The kinds served, each with its real server's update and delete policies.
const KINDS: &[Kind] = &[
    custom(
        "Ingress",
        "networking.internal.knative.dev/v1alpha1",
        "ingresses",
    ),
    custom("Revision", "serving.knative.dev/v1", "revisions"),
    Kind {
        status_subresource: true,
        delete_returns_object: true,
        ..builtin("Service", "v1", "services")
    },
    Kind {
        generation: true,
        ..builtin("EndpointSlice", "discovery.k8s.io/v1", "endpointslices")
    },
    builtin("Secret", "v1", "secrets"),
    builtin("ConfigMap", "v1", "configmaps"),
    Kind {
        unconditional_update: false,
        create_on_update: true,
        ..builtin("Lease", "coordination.k8s.io/v1", "leases")
    },
    Kind {
        status_subresource: true,
        generation: true,
        delete_returns_object: true,
        ..builtin("Pod", "v1", "pods")
    },
];

/// Everything the server knows, behind one lock so every write and its event are atomic.
struct Store {
    /// The last resourceVersion handed out.
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Arc<Event>>,
    /// Every event after this resourceVersion is still in `history`.
    oldest: u64,
    watchers: Vec<Watcher>,
    next_id: u64,
    lists: VecDeque<Snapshot>,
    /// (verb, resource) pairs RBAC refuses; resource is `plural` or `plural/status`.
    forbidden: HashSet<(String, String)>,
    /// Request lines, and whether each came with an `Authorization` header.
    requests: Vec<(String, bool)>,
    /// The request lines of those that asked for metadata alone.
    metadata_requests: Vec<String>,
    bookmark_interval: Duration,
}

/// (plural, namespace, name): sorts a kind's objects by namespace, then name.
type Key = (&'static str, String, String);

struct Event {
    rv: u64,
    plural: &'static str,
    change: Change,
    /// The object after the change; for a deletion, its last state at the deletion's version.
    object: Arc<Value>,
    /// The object before the change, so selector watches see objects leave and enter.
    prev: Option<Arc<Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// A new watch's initial event lines, its live feed, and its id.
type OpenedWatch = (Vec<Bytes>, mpsc::UnboundedReceiver<Arc<Event>>, u64);

/// An open watch stream's feed of live events.
struct Watcher {
    id: u64,
    plural: &'static str,
    events: mpsc::UnboundedSender<Arc<Event>>,
}

/// The items of one paginated list, as of its first page.
#[derive(Clone)]
struct Snapshot {
    id: u64,
    rv: u64,
    items: Arc<[Arc<Value>]>,
}

/// A request resolved to a resource and a verb.
struct Call {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    verb: Verb,
    query: Query,
    /// `Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`: objects are answered
    /// as their metadata alone, as a real server does.
    metadata_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
}

/// The query parameters the fake honours; the rest (fieldManager, pretty...) are ignored.
#[derive(Default)]
struct Query {
    watch: bool,
    resource_version: Option<String>,
    bookmarks: bool,
    timeout: Option<u64>,
    label_selector: String,
    field_selector: String,
    limit: Option<usize>,
    continue_token: Option<String>,
    dry_run: bool,
    send_initial_events: bool,
}

/// What a list or watch selects: scope, name (a watch of one object), labels and fields.
struct Filter {
    namespace: Option<String>,
    name: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<(FieldName, bool, String)>,
    /// The watch sends objects as PartialObjectMetadata.
    metadata_only: bool,
}

enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

#[derive(Clone, Copy)]
enum FieldName {
    Name,
    Namespace,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Main,
    Status,
}

#[derive(Clone, Copy)]
enum PatchType {
    Merge,
    Json,
}

/// A `metav1.Status` failure.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

/// A response body: one buffer, or a watch stream fed by its task.
enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

/// One watch stream's task: initial events, then live ones and bookmarks, until something ends it.
struct WatchTask {
    store: Arc<Mutex<Store>>,
    kind: &'static Kind,
    filter: Filter,
    initial: Vec<Bytes>,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
    out: mpsc::Sender<Bytes>,
    bookmarks: bool,
    timeout: Option<Duration>,
    _open: OpenWatch,
}

/// Counts a watch as open until its task ends.
struct OpenWatch {
    store: Arc<Mutex<Store>>,
    id: u64,
}

impl FakeApi {
    /// Binds 127.0.0.1 on an ephemeral port and serves from a thread of its own.
    pub fn start() -> FakeApi {
        FakeApi::start_on(0)
    }

    /// Binds 127.0.0.1:`port` (an API server coming back where a client was told to look).
    pub fn start_on(port: u16) -> FakeApi {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .expect("bind the fake API server on loopback");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener for tokio");
        let addr = listener
            .local_addr()
            .expect("the fake API server's address");
        let store = Arc::new(Mutex::new(Store::new()));
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fake-kubeapi".to_owned())
            .spawn({
                let store = store.clone();
                move || run_server(listener, store, stopped)
            })
            .expect("spawn the fake API server's thread");
        FakeApi {
            store,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes `dir/kubeconfig` (a cluster at [`FakeApi::url`], a user with a token, a context
    /// using both, made current) and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: knoxy\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: knoxy\n    namespace: default\ncurrent-context: fake\npreferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Creates `obj` as another client's POST would (its resourceVersion, if any, is dropped);
    /// panics if it exists or is refused.
    pub fn create(&self, mut obj: Value) -> Value {
        let (kind, namespace, _) = identify(&obj, "create");
        remove_meta(&mut obj, "resourceVersion");
        let result = self.store.lock().create(kind, &namespace, obj);
        served("create", result)
    }

    /// Creates `obj`, or replaces the stored one as a PUT would (the stored status stays for
    /// kinds with a status subresource); checks `metadata.resourceVersion` only when present.
    pub fn apply(&self, mut obj: Value) -> Value {
        let (kind, namespace, name) = identify(&obj, "apply");
        let mut store = self.store.lock();
        let result = if store.objects.contains_key(&key(kind, &namespace, &name)) {
            store.update(kind, &namespace, &name, obj, Part::Main, false)
        } else {
            remove_meta(&mut obj, "resourceVersion");
            store.create(kind, &namespace, obj)
        };
        drop(store);
        served("apply", result)
    }

    /// Replaces the status of a stored object as a PUT to `/status` would (only `status` is
    /// taken); checks `metadata.resourceVersion` only when present. Panics if the object is
    /// absent or its kind has no status subresource.
    pub fn apply_status(&self, obj: Value) -> Value {
        let (kind, namespace, name) = identify(&obj, "apply_status");
        assert!(
            kind.status_subresource,
            "FakeApi::apply_status: {} has no status subresource",
            kind.kind
        );
        let result = self
            .store
            .lock()
            .update(kind, &namespace, &name, obj, Part::Status, false);
        served("apply_status", result)
    }

    /// Deletes as a DELETE would (an object with finalizers only gets its deletionTimestamp);
    /// false if it was absent.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let kind = kind_or_panic(api_version, kind);
        let result = self
            .store
            .lock()
            .delete(kind, namespace, name, &Value::Null);
        match result {
            Ok(_) => true,
            Err(e) if e.code == 404 => false,
            Err(e) => panic!("FakeApi::delete: {}", e.message),
        }
    }

    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = kind_or_panic(api_version, kind);
        let store = self.store.lock();
        let object = store.objects.get(&key(kind, namespace, name))?;
        Some(Value::clone(object))
    }

    /// The stored object exactly as a GET would serve it (with the server's trailing newline).
    pub fn get_bytes(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Vec<u8>> {
        let kind = kind_or_panic(api_version, kind);
        let store = self.store.lock();
        let object = store.objects.get(&key(kind, namespace, name))?;
        Some(encode(object).to_vec())
    }

    /// Ends every open watch response now, as an API server restart or an idle cut would.
    pub fn drop_watches(&self) {
        self.store.lock().watchers.clear();
    }

    /// Forgets the event history and list snapshots, as an etcd compaction does: resuming a
    /// watch or a list from any earlier resourceVersion then gets 410.
    pub fn compact(&self) {
        let mut store = self.store.lock();
        store.history.clear();
        store.oldest = store.rv;
        store.lists.clear();
    }

    /// From now on `verb` (get, list, watch, create, update, patch, delete) on `resource` (a
    /// plural, or `plural/status`) gets 403, as RBAC answers.
    pub fn forbid(&self, verb: &str, resource: &str) {
        let mut store = self.store.lock();
        store
            .forbidden
            .insert((verb.to_owned(), resource.to_owned()));
    }

    /// Undoes [`FakeApi::forbid`].
    pub fn allow(&self, verb: &str, resource: &str) {
        let mut store = self.store.lock();
        store
            .forbidden
            .remove(&(verb.to_owned(), resource.to_owned()));
    }

    /// How many watch streams on `plural` are open now.
    pub fn open_watches(&self, plural: &str) -> usize {
        let store = self.store.lock();
        store.watchers.iter().filter(|w| w.plural == plural).count()
    }

    /// `METHOD /path?query` of every request so far, in order.
    pub fn requests(&self) -> Vec<String> {
        let store = self.store.lock();
        store
            .requests
            .iter()
            .map(|(line, _)| line.clone())
            .collect()
    }

    /// The request lines of those that came without an `Authorization` header.
    pub fn requests_without_token(&self) -> Vec<String> {
        let store = self.store.lock();
        let anonymous = store.requests.iter().filter(|(_, token)| !token);
        anonymous.map(|(line, _)| line.clone()).collect()
    }

    /// The request lines of those that asked for PartialObjectMetadata.
    pub fn metadata_requests(&self) -> Vec<String> {
        self.store.lock().metadata_requests.clone()
    }

    /// How often watches that asked for bookmarks get one (1 s unless set; zero sends none).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.store.lock().bookmark_interval = interval;
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.store.lock().watchers.clear();
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread was already reported there.
            let _ = thread.join();
        }
    }
}

fn run_server(
    listener: std::net::TcpListener,
    store: Arc<Mutex<Store>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the fake API server");
    runtime.block_on(serve(listener, store, stopped));
    // Dropping the runtime's tasks closes every connection and ends every stream.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

async fn serve(
    listener: std::net::TcpListener,
    store: Arc<Mutex<Store>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("register the listener with tokio");
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let store = store.clone();
        let service = hyper::service::service_fn(move |req| {
            let store = store.clone();
            async move { Ok::<_, Infallible>(handle(store, req).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn handle(store: Arc<Mutex<Store>>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let token = parts.headers.contains_key(header::AUTHORIZATION);
    store
        .lock()
        .requests
        .push((format!("{} {target}", parts.method), token));
    let mut call = match Call::parse(&parts.method, parts.uri.path(), parts.uri.query()) {
        Ok(call) => call,
        Err(e) => return error_response(e),
    };
    call.metadata_only = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=PartialObjectMetadata"));
    if call.metadata_only {
        let line = format!("{} {target}", parts.method);
        store.lock().metadata_requests.push(line);
    }
    if let Err(e) = store.lock().authorize(&call) {
        return error_response(e);
    }
    if call.verb == Verb::Watch {
        return start_watch(&store, &call).unwrap_or_else(error_response);
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error_response(too_large()),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let result = store.lock().serve(&call, content_type, &body);
    match result {
        Ok((status, object)) => json_response(status, encode(&object)),
        Err(e) => error_response(e),
    }
}

/// Opens a watch: the initial events and the live feed are taken under one lock, so none is
/// missed or sent twice.
fn start_watch(store: &Arc<Mutex<Store>>, call: &Call) -> Result<Response<Body>, ApiError> {
    if call.query.send_initial_events {
        return Err(ApiError::invalid_options(
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        ));
    }
    let filter = Filter::new(call)?;
    let since = match call.query.resource_version.as_deref() {
        None | Some("" | "0") => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    let (out, body) = mpsc::channel(64);
    let opened = store.lock().open_watch(call.kind, &filter, since);
    match opened {
        Err(expired) => {
            // Past authorization, a watch fails as one ERROR event on a 200 stream.
            let line = watch_line("ERROR", &expired.status());
            let _ = out.try_send(line);
        }
        Ok((initial, events, id)) => {
            let task = WatchTask {
                store: store.clone(),
                kind: call.kind,
                filter,
                initial,
                events,
                out,
                bookmarks: call.query.bookmarks,
                timeout: call.query.timeout.map(Duration::from_secs),
                _open: OpenWatch {
                    store: store.clone(),
                    id,
                },
            };
            tokio::spawn(run_watch(task));
        }
    }
    let mut response = Response::new(Body::Stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn run_watch(task: WatchTask) {
    let WatchTask {
        store,
        kind,
        filter,
        initial,
        mut events,
        out,
        bookmarks,
        timeout,
        _open,
    } = task;
    for line in initial {
        if out.send(line).await.is_err() {
            return;
        }
    }
    let deadline = timeout.filter(|t| !t.is_zero()).map(|t| Instant::now() + t);
    let mut next_bookmark = bookmarks.then(|| next_bookmark_at(&store)).flatten();
    loop {
        tokio::select! {
            event = events.recv() => {
                // None: drop_watches or the server stopping.
                let Some(event) = event else { return };
                if let Some(line) = filter.event_line(&event) {
                    if out.send(line).await.is_err() {
                        return;
                    }
                }
            }
            () = until(next_bookmark) => {
                // Everything up to the bookmark's version must be sent before it: drain the feed.
                let mut version = store.lock().rv;
                while let Ok(event) = events.try_recv() {
                    version = version.max(event.rv);
                    if let Some(line) = filter.event_line(&event) {
                        if out.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                let bookmark = json!({
                    "kind": kind.kind,
                    "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": version.to_string()},
                });
                if out.send(filter.line("BOOKMARK", &bookmark)).await.is_err() {
                    return;
                }
                next_bookmark = next_bookmark_at(&store);
            }
            () = until(deadline) => return,
            () = out.closed() => return,
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        let id = self.id;
        self.store.lock().watchers.retain(|w| w.id != id);
    }
}

impl Call {
    /// Resolves the REST path and method the way the real server routes them.
    fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Call, ApiError> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(ApiError::no_such_path()),
        };
        let (namespace, plural, name, subresource) = match rest {
            [plural] => (None, *plural, None, None),
            ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
            ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
            _ => return Err(ApiError::no_such_path()),
        };
        let kind = KINDS
            .iter()
            .find(|k| k.plural == plural && k.group() == group && k.version() == version)
            .ok_or_else(ApiError::no_such_path)?;
        let status = match subresource {
            None => false,
            Some("status") if kind.status_subresource => true,
            Some(_) => return Err(ApiError::no_such_path()),
        };
        if [namespace, name].iter().flatten().any(|s| s.is_empty()) {
            return Err(ApiError::no_such_path());
        }
        let query = Query::parse(query.unwrap_or(""))?;
        let named = name.is_some();
        let verb = match *method {
            Method::GET if query.watch && !status => Verb::Watch,
            Method::GET if named => Verb::Get,
            Method::GET => Verb::List,
            Method::POST if !named && namespace.is_some() => Verb::Create,
            Method::PUT if named => Verb::Update,
            Method::PATCH if named => Verb::Patch,
            Method::DELETE if named && !status => Verb::Delete,
            _ => return Err(ApiError::method_not_allowed()),
        };
        Ok(Call {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            status,
            verb,
            query,
            metadata_only: false,
        })
    }

    /// `plural` or `plural/status`, as RBAC rules name it.
    fn resource(&self) -> String {
        if self.status {
            format!("{}/status", self.kind.plural)
        } else {
            self.kind.plural.to_owned()
        }
    }
}

impl Verb {
    fn rbac(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

impl Query {
    fn parse(text: &str) -> Result<Query, ApiError> {
        let mut query = Query::default();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            let flag = value == "1" || value == "true";
            match percent_decode(key).as_str() {
                "watch" => query.watch = flag,
                "resourceVersion" => query.resource_version = Some(value),
                "allowWatchBookmarks" => query.bookmarks = flag,
                "timeoutSeconds" => query.timeout = Some(parse_number("timeoutSeconds", &value)?),
                "labelSelector" => query.label_selector = value,
                "fieldSelector" => query.field_selector = value,
                "limit" => query.limit = Some(parse_number("limit", &value)?),
                "continue" => query.continue_token = Some(value).filter(|v| !v.is_empty()),
                "dryRun" => query.dry_run = !value.is_empty(),
                "sendInitialEvents" => query.send_initial_events = flag,
                _ => {}
            }
        }
        Ok(query)
    }
}

impl Store {
    fn new() -> Store {
        Store {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            oldest: 0,
            watchers: Vec::new(),
            next_id: 1,
            lists: VecDeque::new(),
            forbidden: HashSet::new(),
            requests: Vec::new(),
            metadata_requests: Vec::new(),
            bookmark_interval: Duration::from_secs(1),
        }
    }

    fn authorize(&self, call: &Call) -> Result<(), ApiError> {
        let verb = call.verb.rbac();
        if self.forbidden.contains(&(verb.to_owned(), call.resource())) {
            return Err(ApiError::forbidden(call));
        }
        Ok(())
    }

    /// Serves every verb but watch: the status code and the object or list to answer with.
    fn serve(
        &mut self,
        call: &Call,
        content_type: &str,
        body: &[u8],
    ) -> Result<(StatusCode, Value), ApiError> {
        let kind = call.kind;
        let namespace = call.namespace.as_deref().unwrap_or("");
        let name = call.name.as_deref().unwrap_or("");
        let part = if call.status {
            Part::Status
        } else {
            Part::Main
        };
        let writes = !matches!(call.verb, Verb::Get | Verb::List | Verb::Watch);
        if writes && call.query.dry_run {
            return Err(ApiError::bad_request(
                "the fake API server does not do dry runs".to_owned(),
            ));
        }
        match call.verb {
            Verb::Get => {
                let object = self.objects.get(&key(kind, namespace, name));
                let object = object.ok_or_else(|| ApiError::not_found(kind, name))?;
                if call.metadata_only {
                    return Ok((StatusCode::OK, partial(object)));
                }
                Ok((StatusCode::OK, Value::clone(object)))
            }
            Verb::List => Ok((StatusCode::OK, self.list(call)?)),
            Verb::Create => {
                let object = self.create(kind, namespace, json_body(content_type, body)?)?;
                Ok((StatusCode::CREATED, Value::clone(&object)))
            }
            Verb::Update => {
                let body = json_body(content_type, body)?;
                let created = !self.objects.contains_key(&key(kind, namespace, name));
                let object = self.update(kind, namespace, name, body, part, true)?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok((status, Value::clone(&object)))
            }
            Verb::Patch => {
                let patch_type = patch_type(kind, content_type)?;
                let object = self.patch(kind, namespace, name, part, patch_type, body)?;
                Ok((StatusCode::OK, Value::clone(&object)))
            }
            Verb::Delete => {
                let options = if body.iter().all(u8::is_ascii_whitespace) {
                    Value::Null
                } else {
                    json_body(content_type, body)?
                };
                let existed = self.objects.get(&key(kind, namespace, name)).cloned();
                let object = self.delete(kind, namespace, name, &options)?;
                let gone = !self.objects.contains_key(&key(kind, namespace, name));
                if gone && !kind.delete_returns_object {
                    let uid = existed.as_deref().and_then(|o| meta_str(o, "uid"));
                    return Ok((StatusCode::OK, success(kind, name, uid)));
                }
                Ok((StatusCode::OK, Value::clone(&object)))
            }
            Verb::Watch => Err(ApiError::method_not_allowed()),
        }
    }

    /// A list page: the first page snapshots the selection, later pages read that snapshot.
    fn list(&mut self, call: &Call) -> Result<Value, ApiError> {
        let kind = call.kind;
        let filter = Filter::new(call)?;
        let (snapshot, start) = match call.query.continue_token.as_deref() {
            Some(token) => {
                let (id, start) = parse_continue(token)?;
                let snapshot = self.lists.iter().find(|s| s.id == id);
                (
                    snapshot.cloned().ok_or_else(ApiError::continue_expired)?,
                    start,
                )
            }
            None => {
                let items = self.objects_of(kind).filter(|o| filter.matches(o));
                let items: Arc<[Arc<Value>]> = items.cloned().collect();
                (
                    Snapshot {
                        id: 0,
                        rv: self.rv,
                        items,
                    },
                    0,
                )
            }
        };
        let len = snapshot.items.len();
        let start = start.min(len);
        let end = match call.query.limit.filter(|l| *l > 0) {
            Some(limit) => start.saturating_add(limit).min(len),
            None => len,
        };
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".to_owned(), json!(snapshot.rv.to_string()));
        if end < len {
            let id = if snapshot.id == 0 {
                self.keep_snapshot(snapshot.clone())
            } else {
                snapshot.id
            };
            metadata.insert("continue".to_owned(), json!(format!("{id}.{end}")));
            if filter.labels.is_empty() && filter.fields.is_empty() {
                metadata.insert("remainingItemCount".to_owned(), json!(len - end));
            }
        }
        if call.metadata_only {
            let items: Vec<Value> = snapshot.items[start..end]
                .iter()
                .map(|i| partial(i))
                .collect();
            return Ok(json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadataList",
                "metadata": metadata,
                "items": items,
            }));
        }
        let items: Vec<Value> = snapshot.items[start..end]
            .iter()
            .map(|item| list_item(kind, item))
            .collect();
        Ok(json!({
            "apiVersion": kind.api_version,
            "kind": format!("{}List", kind.kind),
            "metadata": metadata,
            "items": items,
        }))
    }

    fn keep_snapshot(&mut self, mut snapshot: Snapshot) -> u64 {
        snapshot.id = self.take_id();
        let id = snapshot.id;
        self.lists.push_back(snapshot);
        if self.lists.len() > LIST_SNAPSHOTS {
            self.lists.pop_front();
        }
        id
    }

    /// Registers a watcher; its initial events are ADDED for what exists now (`since` None) or
    /// the history after `since`.
    fn open_watch(
        &mut self,
        kind: &'static Kind,
        filter: &Filter,
        since: Option<u64>,
    ) -> Result<OpenedWatch, ApiError> {
        let initial = match since {
            None => self
                .objects_of(kind)
                .filter(|o| filter.matches(o))
                .map(|o| filter.line("ADDED", o))
                .collect(),
            Some(since) if since < self.oldest => {
                let message = format!("too old resource version: {since} ({})", self.oldest);
                return Err(ApiError::expired(message));
            }
            Some(since) => {
                let first = self.history.partition_point(|e| e.rv <= since);
                let replay = self.history.range(first..);
                let replay = replay.filter(|e| e.plural == kind.plural);
                replay.filter_map(|e| filter.event_line(e)).collect()
            }
        };
        let (events, receiver) = mpsc::unbounded_channel();
        let id = self.take_id();
        self.watchers.push(Watcher {
            id,
            plural: kind.plural,
            events,
        });
        Ok((initial, receiver, id))
    }

    /// POST: a new object with server-set metadata; status is dropped where it has its own
    /// subresource.
    fn create(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        body: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let mut obj = object_body(kind, namespace, body)?;
        let name = obj_meta_str(&obj, "name").unwrap_or("").to_owned();
        if name.is_empty() {
            return Err(ApiError::invalid(
                kind,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ));
        }
        if obj_meta_str(&obj, "resourceVersion").is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created".to_owned(),
            ));
        }
        let key = key(kind, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        if kind.status_subresource {
            obj.remove("status");
        }
        let meta = meta_mut(&mut obj);
        meta.insert("uid".to_owned(), json!(new_uid()));
        meta.insert("creationTimestamp".to_owned(), json!(now()));
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            meta.remove(field);
        }
        if kind.generation {
            meta.insert("generation".to_owned(), json!(1));
        }
        let rv = self.next_rv();
        set_rv(meta, rv);
        let object = Arc::new(Value::Object(obj));
        self.objects.insert(key, object.clone());
        self.emit(kind, Change::Added, object.clone(), None);
        Ok(object)
    }

    /// PUT (of the object or its status), also the last step of a PATCH: version checks, then
    /// the server-owned fields restored from the stored object.
    fn update(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        body: Value,
        part: Part,
        version_required: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let mut new = object_body(kind, namespace, body)?;
        let body_name = obj_meta_str(&new, "name").unwrap_or("");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = key(kind, namespace, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            if kind.create_on_update && part == Part::Main {
                if obj_meta_str(&new, "resourceVersion").is_some_and(|v| !v.is_empty()) {
                    return Err(ApiError::conflict(kind, name, MODIFIED));
                }
                return self.create(kind, namespace, Value::Object(new));
            }
            return Err(ApiError::not_found(kind, name));
        };
        check_versions(kind, name, &new, &old, version_required)?;
        let next = match part {
            Part::Main => {
                restore_server_fields(kind, &mut new, &old);
                new
            }
            Part::Status => {
                let mut next = as_map(&old);
                match new.remove("status") {
                    Some(status) => next.insert("status".to_owned(), status),
                    None => next.remove("status"),
                };
                next
            }
        };
        Ok(self.commit(kind, key, next, &old))
    }

    /// PATCH: the patch applied to the stored object, then written as an unconditional update
    /// (conditional when the patched object carries a resourceVersion).
    fn patch(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        part: Part,
        patch_type: PatchType,
        body: &[u8],
    ) -> Result<Arc<Value>, ApiError> {
        let old = self.objects.get(&key(kind, namespace, name));
        let mut patched = Value::clone(old.ok_or_else(|| ApiError::not_found(kind, name))?);
        let patch: Value = serde_json::from_slice(body).map_err(ApiError::undecodable)?;
        match patch_type {
            PatchType::Merge => merge_patch(&mut patched, &patch),
            PatchType::Json => json_patch(&mut patched, &patch)?,
        }
        self.update(kind, namespace, name, patched, part, false)
    }

    /// DELETE: removes the object, or with finalizers only marks it deleted; returns it as it
    /// was last stored.
    fn delete(
        &mut self,
        kind: &'static Kind,
        namespace: &str,
        name: &str,
        options: &Value,
    ) -> Result<Arc<Value>, ApiError> {
        let key = key(kind, namespace, name);
        let old = self.objects.get(&key).cloned();
        let old = old.ok_or_else(|| ApiError::not_found(kind, name))?;
        for (option, field, label) in [
            ("resourceVersion", "resourceVersion", "ResourceVersion"),
            ("uid", "uid", "UID"),
        ] {
            let wanted = options.pointer(&format!("/preconditions/{option}"));
            let Some(wanted) = wanted.and_then(Value::as_str) else {
                continue;
            };
            let actual = meta_str(&old, field).unwrap_or("");
            if wanted != actual {
                let why = format!("Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}");
                return Err(ApiError::conflict(kind, name, &why));
            }
        }
        if !has_finalizers(&old) {
            return Ok(self.remove(kind, key, &old));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(old);
        }
        let mut marked = as_map(&old);
        let meta = meta_mut(&mut marked);
        meta.insert("deletionTimestamp".to_owned(), json!(now()));
        meta.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        if kind.generation {
            let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
            meta.insert("generation".to_owned(), json!(generation + 1));
        }
        Ok(self.commit(kind, key, marked, &old))
    }

    /// Stores a changed object under a new resourceVersion; an unchanged one is not written
    /// (no new version, no event), as an etcd-backed server skips no-op updates.
    fn commit(
        &mut self,
        kind: &'static Kind,
        key: Key,
        mut next: Map<String, Value>,
        old: &Arc<Value>,
    ) -> Arc<Value> {
        let old_rv = meta_str(old, "resourceVersion").unwrap_or("").to_owned();
        meta_mut(&mut next).insert("resourceVersion".to_owned(), json!(old_rv));
        let mut next = Value::Object(next);
        if next == **old {
            return old.clone();
        }
        let rv = self.next_rv();
        if let Value::Object(obj) = &mut next {
            set_rv(meta_mut(obj), rv);
        }
        let object = Arc::new(next);
        self.objects.insert(key.clone(), object.clone());
        self.emit(kind, Change::Modified, object.clone(), Some(old.clone()));
        // The last finalizer removed from an object being deleted lets the deletion finish.
        if object.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&object) {
            self.remove(kind, key, &object);
        }
        object
    }

    /// Deletes now: the DELETED event carries the last state at the deletion's version.
    fn remove(&mut self, kind: &'static Kind, key: Key, current: &Arc<Value>) -> Arc<Value> {
        let rv = self.next_rv();
        let mut gone = as_map(current);
        set_rv(meta_mut(&mut gone), rv);
        let gone = Arc::new(Value::Object(gone));
        self.objects.remove(&key);
        self.emit(kind, Change::Deleted, gone.clone(), Some(current.clone()));
        gone
    }

    /// Records the event at the current resourceVersion and feeds it to the kind's watchers.
    fn emit(
        &mut self,
        kind: &'static Kind,
        change: Change,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            plural: kind.plural,
            change,
            object,
            prev,
        });
        self.watchers
            .retain(|w| w.plural != kind.plural || w.events.send(event.clone()).is_ok());
        self.history.push_back(event);
        if self.history.len() > HISTORY {
            if let Some(forgotten) = self.history.pop_front() {
                self.oldest = forgotten.rv;
            }
        }
    }

    fn objects_of(&self, kind: &'static Kind) -> impl Iterator<Item = &Arc<Value>> {
        self.objects
            .range((kind.plural, String::new(), String::new())..)
            .take_while(move |(k, _)| k.0 == kind.plural)
            .map(|(_, object)| object)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Filter {
    fn new(call: &Call) -> Result<Filter, ApiError> {
        let labels = split_outside_parens(&call.query.label_selector)
            .into_iter()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(LabelRequirement::parse)
            .collect::<Result<_, _>>()?;
        let fields = call
            .query
            .field_selector
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| parse_field(call.kind, t))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            namespace: call.namespace.clone(),
            name: call.name.clone(),
            labels,
            fields,
            metadata_only: call.metadata_only,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let name = meta_str(obj, "name").unwrap_or("");
        let namespace = meta_str(obj, "namespace").unwrap_or("");
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.fields.iter().all(|(field, equal, value)| {
                let actual = match field {
                    FieldName::Name => name,
                    FieldName::Namespace => namespace,
                };
                (actual == value) == *equal
            })
            && self.labels.iter().all(|req| req.matches(label))
    }

    /// The line a watch with this filter sends for `event`: a modified object that enters the
    /// selection is ADDED, one that leaves it is DELETED (its prior state, at the event's version).
    fn event_line(&self, event: &Event) -> Option<Bytes> {
        let now = self.matches(&event.object);
        let before = event.prev.as_deref().is_some_and(|p| self.matches(p));
        match (event.change, before, now) {
            (Change::Added, _, true) => Some(self.line("ADDED", &event.object)),
            (Change::Deleted, _, true) => Some(self.line("DELETED", &event.object)),
            (Change::Modified, true, true) => Some(self.line("MODIFIED", &event.object)),
            (Change::Modified, false, true) => Some(self.line("ADDED", &event.object)),
            (Change::Modified, true, false) => {
                let mut left = as_map(event.prev.as_deref()?);
                set_rv(meta_mut(&mut left), event.rv);
                Some(self.line("DELETED", &Value::Object(left)))
            }
            _ => None,
        }
    }

    /// A watch line for `obj`, in the shape the watch asked for.
    fn line(&self, event_type: &str, obj: &Value) -> Bytes {
        if self.metadata_only {
            watch_line(event_type, &partial(obj))
        } else {
            watch_line(event_type, obj)
        }
    }
}

impl LabelRequirement {
    /// One term of a label selector: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`.
    fn parse(term: &str) -> Result<LabelRequirement, ApiError> {
        let fail = || ApiError::bad_request(format!("unable to parse requirement: {term:?}"));
        let key = |k: &str| {
            let k = k.trim();
            let valid = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            valid.then(|| k.to_owned()).ok_or_else(fail)
        };
        let set = |values: &str| {
            let inner = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'));
            let inner = inner.ok_or_else(fail)?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        if let Some(k) = term.strip_prefix('!') {
            return Ok(LabelRequirement::Absent(key(k)?));
        }
        if let Some((k, values)) = term.split_once(" notin ") {
            return Ok(LabelRequirement::NotIn(key(k)?, set(values)?));
        }
        if let Some((k, values)) = term.split_once(" in ") {
            return Ok(LabelRequirement::In(key(k)?, set(values)?));
        }
        for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
            if let Some((k, v)) = term.split_once(op) {
                let (k, v) = (key(k)?, v.trim().to_owned());
                return Ok(if negated {
                    LabelRequirement::NotEquals(k, v)
                } else {
                    LabelRequirement::Equals(k, v)
                });
            }
        }
        Ok(LabelRequirement::Exists(key(term)?))
    }

    fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::Absent(k) => label(k).is_none(),
        }
    }
}

impl Kind {
    fn group(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    fn version(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version, |(_, version)| version)
    }

    /// `leases.coordination.k8s.io`, or `pods` in the core group: how errors name a resource.
    fn qualified_resource(&self) -> String {
        match self.group() {
            "" => self.plural.to_owned(),
            group => format!("{}.{group}", self.plural),
        }
    }

    /// `Lease.coordination.k8s.io`, or `Pod`: how validation errors name a kind.
    fn qualified_kind(&self) -> String {
        match self.group() {
            "" => self.kind.to_owned(),
            group => format!("{}.{group}", self.kind),
        }
    }
}

impl ApiError {
    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut status) {
            map.insert("details".to_owned(), details.clone());
        }
        status
    }

    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details,
        }
    }

    fn not_found(kind: &Kind, name: &str) -> ApiError {
        let message = format!("{} {name:?} not found", kind.qualified_resource());
        ApiError::new(404, "NotFound", message, Some(details(kind, Some(name))))
    }

    fn no_such_path() -> ApiError {
        let message = "the server could not find the requested resource".to_owned();
        ApiError::new(404, "NotFound", message, Some(json!({})))
    }

    fn already_exists(kind: &Kind, name: &str) -> ApiError {
        let message = format!("{} {name:?} already exists", kind.qualified_resource());
        ApiError::new(
            409,
            "AlreadyExists",
            message,
            Some(details(kind, Some(name))),
        )
    }

    fn conflict(kind: &Kind, name: &str, why: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            kind.qualified_resource()
        );
        ApiError::new(409, "Conflict", message, Some(details(kind, Some(name))))
    }

    fn forbidden(call: &Call) -> ApiError {
        let kind = call.kind;
        let scope = match &call.namespace {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_owned(),
        };
        let why = format!(
            "User {USER:?} cannot {} resource {:?} in API group {:?} {scope}",
            call.verb.rbac(),
            call.resource(),
            kind.group()
        );
        let message = match &call.name {
            Some(name) => format!("{} {name:?} is forbidden: {why}", kind.qualified_resource()),
            None => format!("{} is forbidden: {why}", kind.qualified_resource()),
        };
        let details = details(kind, call.name.as_deref());
        ApiError::new(403, "Forbidden", message, Some(details))
    }

    fn expired(message: String) -> ApiError {
        ApiError::new(410, "Expired", message, None)
    }

    fn continue_expired() -> ApiError {
        ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".to_owned())
    }

    fn invalid(kind: &Kind, name: &str, field: &str, cause: &str, detail: &str) -> ApiError {
        let message = format!(
            "{} {name:?} is invalid: {field}: {detail}",
            kind.qualified_kind()
        );
        let mut details = json!({
            "kind": kind.kind,
            "causes": [{"reason": cause, "message": detail, "field": field}],
        });
        if let Value::Object(map) = &mut details {
            if !name.is_empty() {
                map.insert("name".to_owned(), json!(name));
            }
            if !kind.group().is_empty() {
                map.insert("group".to_owned(), json!(kind.group()));
            }
        }
        ApiError::new(422, "Invalid", message, Some(details))
    }

    fn invalid_options(field: &str, detail: &str) -> ApiError {
        let message = format!("ListOptions.meta.k8s.io \"\" is invalid: {field}: {detail}");
        let details = json!({
            "group": "meta.k8s.io",
            "kind": "ListOptions",
            "causes": [{"reason": "FieldValueForbidden", "message": detail, "field": field}],
        });
        ApiError::new(422, "Invalid", message, Some(details))
    }

    /// A JSON patch that does not apply, answered as the real server does (422, cause inside).
    fn patch_failed(why: String) -> ApiError {
        let message = "the server rejected our request due to an error in our request".to_owned();
        let details = json!({"causes": [{"reason": "UnexpectedServerResponse", "message": why}]});
        ApiError::new(422, "Invalid", message, Some(details))
    }

    fn bad_request(message: String) -> ApiError {
        ApiError::new(400, "BadRequest", message, None)
    }

    fn undecodable(e: serde_json::Error) -> ApiError {
        ApiError::bad_request(format!("error decoding body: {e}"))
    }

    fn unsupported_media(accepted: &str) -> ApiError {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: {accepted}"
        );
        ApiError::new(415, "UnsupportedMediaType", message, Some(json!({})))
    }

    fn method_not_allowed() -> ApiError {
        let message = "the server does not allow this method on the requested resource".to_owned();
        ApiError::new(405, "MethodNotAllowed", message, Some(json!({})))
    }
}

fn too_large() -> ApiError {
    let message = format!("Request entity too large: limit is {MAX_BODY}");
    ApiError::new(413, "RequestEntityTooLarge", message, None)
}

/// `details` of a Status: the name (if any), the group (if not core) and the plural as `kind`.
fn details(kind: &Kind, name: Option<&str>) -> Value {
    let mut details = Map::new();
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        details.insert("name".to_owned(), json!(name));
    }
    if !kind.group().is_empty() {
        details.insert("group".to_owned(), json!(kind.group()));
    }
    details.insert("kind".to_owned(), json!(kind.plural));
    Value::Object(details)
}

/// The `Success` Status built-in kinds answer a completed DELETE with.
fn success(kind: &Kind, name: &str, uid: Option<&str>) -> Value {
    let mut details = details(kind, Some(name));
    if let (Value::Object(map), Some(uid)) = (&mut details, uid) {
        map.insert("uid".to_owned(), json!(uid));
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// Refuses a stale or missing resourceVersion and a different uid.
fn check_versions(
    kind: &Kind,
    name: &str,
    new: &Map<String, Value>,
    old: &Value,
    version_required: bool,
) -> Result<(), ApiError> {
    let stored = meta_str(old, "resourceVersion").unwrap_or("");
    match obj_meta_str(new, "resourceVersion").filter(|v| !v.is_empty()) {
        Some(given) if given != stored => return Err(ApiError::conflict(kind, name, MODIFIED)),
        None if version_required && !kind.unconditional_update => {
            return Err(ApiError::invalid(
                kind,
                name,
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            ))
        }
        _ => {}
    }
    let stored_uid = meta_str(old, "uid").unwrap_or("");
    match obj_meta_str(new, "uid").filter(|u| !u.is_empty()) {
        Some(uid) if uid != stored_uid => {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}"
            );
            Err(ApiError::conflict(kind, name, &why))
        }
        _ => Ok(()),
    }
}

/// Keeps what clients cannot change through the main resource: identity, deletion marks,
/// generation (bumped on a spec change) and, with a status subresource, the status.
fn restore_server_fields(kind: &Kind, new: &mut Map<String, Value>, old: &Value) {
    if kind.status_subresource {
        match old.get("status") {
            Some(status) => new.insert("status".to_owned(), status.clone()),
            None => new.remove("status"),
        };
    }
    let spec_changed = spec_of(kind, new) != spec_of(kind, &as_map(old));
    let meta = meta_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(value) => meta.insert(field.to_owned(), value.clone()),
            None => meta.remove(field),
        };
    }
    if kind.generation && spec_changed {
        let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
        meta.insert("generation".to_owned(), json!(generation + 1));
    }
}

/// What `generation` tracks: everything but metadata (and status with its own subresource).
fn spec_of<'a>(kind: &Kind, obj: &'a Map<String, Value>) -> BTreeMap<&'a str, &'a Value> {
    let tracked = |field: &str| match field {
        "metadata" | "apiVersion" | "kind" => false,
        "status" => !kind.status_subresource,
        _ => true,
    };
    let fields = obj.iter().filter(|(field, _)| tracked(field));
    fields
        .map(|(field, value)| (field.as_str(), value))
        .collect()
}

/// RFC 7386: objects merge key by key, null deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// RFC 6902: add, remove, replace, move, copy and test, applied in order.
fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch.as_array().ok_or_else(|| {
        ApiError::bad_request("a JSON patch must be an array of operations".to_owned())
    })?;
    for op in ops {
        let field = |name: &str| {
            op.get(name).ok_or_else(|| {
                ApiError::bad_request(format!("JSON patch operation {op} has no {name:?}"))
            })
        };
        let path = field("path")?.as_str().unwrap_or("");
        let from = || Ok::<_, ApiError>(field("from")?.as_str().unwrap_or(""));
        match field("op")?.as_str().unwrap_or("") {
            "add" => pointer_add(doc, path, field("value")?.clone())?,
            "remove" => {
                pointer_remove(doc, path)?;
            }
            "replace" => {
                pointer_remove(doc, path)?;
                pointer_add(doc, path, field("value")?.clone())?;
            }
            "move" => {
                let value = pointer_remove(doc, from()?)?;
                pointer_add(doc, path, value)?;
            }
            "copy" => {
                let source = from()?;
                let value = doc.pointer(source).cloned();
                pointer_add(doc, path, value.ok_or_else(|| missing(source))?)?;
            }
            "test" => {
                if doc.pointer(path) != Some(field("value")?) {
                    return Err(ApiError::patch_failed(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected JSON patch operation {other:?}"
                )))
            }
        }
    }
    Ok(())
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    let Some((parent, token)) = split_pointer(path) else {
        *doc = value;
        return Ok(());
    };
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(token, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let at = if token == "-" {
                Some(items.len())
            } else {
                token.parse().ok().filter(|i| *i <= items.len())
            };
            items.insert(at.ok_or_else(|| missing(path))?, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, token) = split_pointer(path).ok_or_else(|| missing(path))?;
    let removed = match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&token),
        Some(Value::Array(items)) => {
            let at = token.parse::<usize>().ok().filter(|i| *i < items.len());
            at.map(|i| items.remove(i))
        }
        _ => None,
    };
    removed.ok_or_else(|| missing(path))
}

/// `/a/b~1c` → (`/a`, `b/c`); None for the whole document.
fn split_pointer(path: &str) -> Option<(&str, String)> {
    let (parent, token) = path.rsplit_once('/')?;
    Some((parent, token.replace("~1", "/").replace("~0", "~")))
}

fn missing(path: &str) -> ApiError {
    ApiError::patch_failed(format!("doc is missing path: {path:?}: missing value"))
}

fn patch_type(kind: &Kind, content_type: &str) -> Result<PatchType, ApiError> {
    let accepted = if kind.custom {
        "application/json-patch+json, application/merge-patch+json"
    } else {
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
    };
    match media_type(content_type).as_str() {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        // Built-in kinds only, as for a real server; list merge keys are not emulated.
        "application/strategic-merge-patch+json" if !kind.custom => Ok(PatchType::Merge),
        // The fake doesn't do server-side apply (apply-patch+yaml), so it refuses it like any
        // other type it does not know.
        _ => Err(ApiError::unsupported_media(accepted)),
    }
}

/// A POST, PUT or DELETE body: JSON only (a real server also takes YAML and protobuf).
fn json_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = media_type(content_type);
    if !media.is_empty() && media != "application/json" && media != "*/*" {
        return Err(ApiError::unsupported_media("application/json"));
    }
    serde_json::from_slice(body).map_err(ApiError::undecodable)
}

fn media_type(content_type: &str) -> String {
    let media = content_type.split(';').next().unwrap_or("");
    media.trim().to_ascii_lowercase()
}

/// The body as an object of this kind in this namespace, apiVersion, kind and namespace filled.
fn object_body(kind: &Kind, namespace: &str, body: Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a JSON object of kind {}",
            kind.kind
        )));
    };
    if let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) {
        if api_version != kind.api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                kind.api_version
            )));
        }
    }
    if let Some(given) = obj.get("kind").and_then(Value::as_str) {
        if given != kind.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                kind.kind
            )));
        }
    }
    if obj.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request(
            "metadata must be a JSON object".to_owned(),
        ));
    }
    if obj_meta_str(&obj, "namespace").is_some_and(|ns| !ns.is_empty() && ns != namespace) {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_owned(),
        ));
    }
    obj.insert("apiVersion".to_owned(), json!(kind.api_version));
    obj.insert("kind".to_owned(), json!(kind.kind));
    meta_mut(&mut obj).insert("namespace".to_owned(), json!(namespace));
    Ok(obj)
}

/// An object as its metadata alone (`meta.k8s.io/v1` PartialObjectMetadata).
fn partial(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A list item: real servers drop apiVersion/kind from the items of built-in lists.
fn list_item(kind: &Kind, item: &Value) -> Value {
    let mut item = as_map(item);
    if !kind.custom {
        item.remove("apiVersion");
        item.remove("kind");
    }
    Value::Object(item)
}

fn parse_field(kind: &Kind, term: &str) -> Result<(FieldName, bool, String), ApiError> {
    let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
        (f, false, v)
    } else if let Some((f, v)) = term.split_once("==") {
        (f, true, v)
    } else if let Some((f, v)) = term.split_once('=') {
        (f, true, v)
    } else {
        return Err(ApiError::bad_request(format!(
            "invalid selector: '{term}'; can't understand '{term}'"
        )));
    };
    let name = match field.trim() {
        "metadata.name" => FieldName::Name,
        "metadata.namespace" => FieldName::Namespace,
        other if kind.custom => {
            return Err(ApiError::bad_request(format!(
                "{other:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            )))
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {other}"
            )))
        }
    };
    Ok((name, equal, value.trim().to_owned()))
}

/// Splits a label selector at the commas that are not inside `in (...)` sets.
fn split_outside_parens(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// `{id}.{offset}` of a kept snapshot.
fn parse_continue(token: &str) -> Result<(u64, usize), ApiError> {
    let parsed = token
        .split_once('.')
        .and_then(|(id, at)| Some((id.parse().ok()?, at.parse().ok()?)));
    parsed.ok_or_else(|| ApiError::bad_request(format!("invalid continue token: {token:?}")))
}

fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: {text:?}: must be a valid resourceVersion"
        ))
    })
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {text:?}")))
}

/// Decodes a query component (`%XX`, and `+` as a space).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[at]) {
            (Some(byte), _) => {
                out.push(byte);
                at += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                at += 1;
            }
            (None, byte) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kind, namespace (`default` if unset) and name of an object given to a direct operation.
fn identify(obj: &Value, operation: &str) -> (&'static Kind, String, String) {
    let field = |f: &str| obj.get(f).and_then(Value::as_str).unwrap_or("");
    let kind = kind_or_panic(field("apiVersion"), field("kind"));
    let namespace = meta_str(obj, "namespace").unwrap_or("default").to_owned();
    let name = meta_str(obj, "name").unwrap_or("").to_owned();
    assert!(
        !name.is_empty(),
        "FakeApi::{operation}: the object has no metadata.name: {obj}"
    );
    (kind, namespace, name)
}

fn kind_or_panic(api_version: &str, kind: &str) -> &'static Kind {
    let found = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind);
    found.unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
}

fn served(operation: &str, result: Result<Arc<Value>, ApiError>) -> Value {
    match result {
        Ok(object) => Value::clone(&object),
        Err(e) => panic!(
            "FakeApi::{operation}: {} {}: {}",
            e.code, e.reason, e.message
        ),
    }
}

fn key(kind: &'static Kind, namespace: &str, name: &str) -> Key {
    (kind.plural, namespace.to_owned(), name.to_owned())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn obj_meta_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The object's metadata, created if missing.
fn meta_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(map) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.remove(field);
    }
}

fn set_rv(meta: &mut Map<String, Value>, rv: u64) {
    meta.insert("resourceVersion".to_owned(), json!(rv.to_string()));
}

fn as_map(obj: &Value) -> Map<String, Value> {
    obj.as_object().cloned().unwrap_or_default()
}

fn has_finalizers(obj: &Value) -> bool {
    let finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array);
    finalizers.is_some_and(|f| !f.is_empty())
}

/// An object as the server writes it: compact JSON and a newline.
fn encode(obj: &Value) -> Bytes {
    let mut text = obj.to_string();
    text.push('\n');
    text.into()
}

fn watch_line(event_type: &str, obj: &Value) -> Bytes {
    format!("{{\"type\":\"{event_type}\",\"object\":{obj}}}\n").into()
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(e: ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, encode(&e.status()))
}

/// When the next bookmark is due; None while the interval is zero.
fn next_bookmark_at(store: &Mutex<Store>) -> Option<Instant> {
    let interval = store.lock().bookmark_interval;
    (!interval.is_zero()).then(|| Instant::now() + interval)
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A version 4 UUID: random bits, and a process-wide counter in the last group so none repeats.
fn new_uid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let random = std::hash::RandomState::new().hash_one(n);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        random >> 32,
        (random >> 16) & 0xffff,
        random & 0xfff,
        0x8000 | (random >> 20 & 0x3fff),
        n & 0xffff_ffff_ffff
    )
}

/// Now as Kubernetes writes a `metav1.Time`: RFC 3339 in UTC, whole seconds.
fn now() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(secs / 86_400);
    let (hour, minute, second) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// The Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01 so each leap day ends its 4-, 100- and 400-year cycle.
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    (era * 400 + year_of_era + u64::from(month <= 2), month, day)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(lines) => lines.poll_recv(cx).map(|l| l.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{empty, fetch, full, http1_client, json, request_with, send, within, TempDir};

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    const INGRESSES: &str =
        "/apis/networking.internal.knative.dev/v1alpha1/namespaces/default/ingresses";
    const MERGE: &str = "application/merge-patch+json";

    fn lease(name: &str, holder: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"holderIdentity": holder},
        })
    }

    fn kingress(name: &str, host: &str) -> Value {
        json!({
            "apiVersion": "networking.internal.knative.dev/v1alpha1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"rules": [{"hosts": [host]}]},
            "status": {"observedGeneration": 1},
        })
    }

    /// Sends a request with an optional body of the given content type: (status, JSON body).
    async fn call(
        api: &FakeApi,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", api.url());
        let req = match body {
            Some((content_type, body)) => request_with(
                method,
                &url,
                &[("content-type", content_type)],
                full(body.to_string()),
            ),
            None => request_with(method, &url, &[], empty()),
        };
        let (status, _, text) = fetch(&http1_client(), req).await;
        (status, json(&text))
    }

    async fn put(api: &FakeApi, path: &str, body: Value) -> (StatusCode, Value) {
        call(api, Method::PUT, path, Some(("application/json", body))).await
    }

    fn rv(obj: &Value) -> String {
        meta_str(obj, "resourceVersion")
            .expect("objects carry a resourceVersion")
            .to_owned()
    }

    fn names(list: &Value) -> Vec<String> {
        let items = list["items"].as_array().expect("a list has items");
        items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// A watch response read line by line.
    struct Watch(Incoming, Vec<u8>);

    async fn watch(api: &FakeApi, path_and_query: &str) -> Watch {
        let url = format!("{}{path_and_query}", api.url());
        let response = send(
            &http1_client(),
            request_with(Method::GET, &url, &[], empty()),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "watch {path_and_query}");
        Watch(response.into_body(), Vec::new())
    }

    impl Watch {
        /// The next event, or None once the server ended the stream.
        async fn next(&mut self) -> Option<Value> {
            within("the next watch event", async {
                loop {
                    if let Some(end) = self.1.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = self.1.drain(..=end).collect();
                        return Some(serde_json::from_slice(&line).expect("a watch line is JSON"));
                    }
                    let frame = self.0.frame().await?.expect("the watch body reads");
                    if let Ok(data) = frame.into_data() {
                        self.1.extend_from_slice(&data);
                    }
                }
            })
            .await
        }

        /// (type, name) of the next event.
        async fn next_named(&mut self) -> (String, String) {
            let event = self.next().await.expect("a watch event, not the end");
            let name = meta_str(&event["object"], "name").unwrap_or("").to_owned();
            (event["type"].as_str().unwrap_or("").to_owned(), name)
        }
    }

    async fn wait_for_watches(api: &FakeApi, plural: &str, count: usize) {
        within(&format!("{count} open watches on {plural}"), async {
            while api.open_watches(plural) != count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn metadata_requests_get_partial_object_metadata_and_no_data() {
        let api = FakeApi::start();
        api.create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "cert", "namespace": "default"},
            "data": {"tls.key": "c2VjcmV0"}}));
        let as_metadata = |path: &str| {
            let url = format!("{}{path}", api.url());
            let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
            request_with(Method::GET, &url, &[("accept", accept)], empty())
        };
        let (_, _, text) = fetch(&http1_client(), as_metadata("/api/v1/secrets")).await;
        let list = json(&text);
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(list["items"][0]["metadata"]["name"], "cert");
        let (_, _, text) = fetch(
            &http1_client(),
            as_metadata("/api/v1/namespaces/default/secrets/cert"),
        )
        .await;
        assert_eq!(json(&text)["kind"], "PartialObjectMetadata");
        let response = send(
            &http1_client(),
            as_metadata("/api/v1/secrets?watch=true&resourceVersion=0"),
        )
        .await;
        let mut watch = Watch(response.into_body(), Vec::new());
        let added = watch.next().await.expect("an ADDED event");
        assert_eq!(added["object"]["kind"], "PartialObjectMetadata");
        for text in [list.to_string(), added.to_string()] {
            assert!(!text.contains("c2VjcmV0"), "no data crosses: {text}");
        }
        // Without the Accept header, the whole object.
        let (_, secret) = call(
            &api,
            Method::GET,
            "/api/v1/namespaces/default/secrets/cert",
            None,
        )
        .await;
        assert_eq!(secret["data"]["tls.key"], "c2VjcmV0");
    }

    #[tokio::test]
    async fn create_then_list_shows_it_with_its_resource_version() {
        let api = FakeApi::start();
        let (status, created) = call(
            &api,
            Method::POST,
            LEASES,
            Some(("application/json", lease("a", "x"))),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(rv(&created), "1");
        assert_eq!(created["metadata"]["uid"].as_str().map(str::len), Some(36));
        assert!(
            created["metadata"].get("generation").is_none(),
            "leases have no generation"
        );
        let stamp = created["metadata"]["creationTimestamp"]
            .as_str()
            .expect("a creationTimestamp");
        assert!(stamp.len() == 20 && stamp.ends_with('Z'), "{stamp}");

        let (status, list) = call(&api, Method::GET, LEASES, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["kind"], "LeaseList");
        assert_eq!(list["metadata"]["resourceVersion"], "1");
        assert_eq!(names(&list), ["a"]);
        assert_eq!(list["items"][0]["metadata"]["resourceVersion"], "1");
        assert!(
            list["items"][0].get("kind").is_none(),
            "built-in list items carry no kind"
        );

        let (status, again) = call(
            &api,
            Method::POST,
            LEASES,
            Some(("application/json", lease("a", "y"))),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(again["reason"], "AlreadyExists");
        assert_eq!(
            again["message"],
            r#"leases.coordination.k8s.io "a" already exists"#
        );

        let (status, got) = call(&api, Method::GET, &format!("{LEASES}/a"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, created);
        let bytes = api.get_bytes("coordination.k8s.io/v1", "Lease", "default", "a");
        assert_eq!(bytes, Some(encode(&created).to_vec()));
        assert_eq!(api.requests()[0], format!("POST {LEASES}"));
        assert_eq!(api.requests_without_token().len(), 4);
    }

    #[tokio::test]
    async fn errors_are_statuses_in_the_real_servers_words() {
        let api = FakeApi::start();
        let (status, missing) = call(&api, Method::GET, &format!("{INGRESSES}/x"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            missing,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": r#"ingresses.networking.internal.knative.dev "x" not found"#,
                "reason": "NotFound", "code": 404,
                "details": {"name": "x", "group": "networking.internal.knative.dev", "kind": "ingresses"}})
        );
        let (status, _) = call(
            &api,
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(
            &api,
            Method::GET,
            "/api/v1/namespaces/default/configmaps/x/status",
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "configmaps have no status subresource"
        );
        let (status, refused) = call(
            &api,
            Method::PUT,
            LEASES,
            Some(("application/json", lease("a", "x"))),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused["reason"], "MethodNotAllowed");
        let (status, _) = call(
            &api,
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, bad) = call(
            &api,
            Method::GET,
            &format!("{LEASES}?labelSelector=a%20%3E%3E%20b"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    #[tokio::test]
    async fn a_watch_from_the_list_version_sees_later_changes_in_order() {
        let api = FakeApi::start();
        api.create(lease("before", "x"));
        let (_, list) = call(&api, Method::GET, LEASES, None).await;
        let from = list["metadata"]["resourceVersion"]
            .as_str()
            .expect("a list version")
            .to_owned();
        let mut events = watch(&api, &format!("{LEASES}?watch=1&resourceVersion={from}")).await;
        wait_for_watches(&api, "leases", 1).await;

        let created = api.create(lease("a", "x"));
        let mut changed = created.clone();
        changed["spec"]["holderIdentity"] = json!("y");
        let (status, updated) = put(&api, &format!("{LEASES}/a"), changed).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert!(api.delete("coordination.k8s.io/v1", "Lease", "default", "a"));
        assert!(!api.delete("coordination.k8s.io/v1", "Lease", "default", "a"));

        let added = events.next().await.expect("ADDED");
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"], created);
        let modified = events.next().await.expect("MODIFIED");
        assert_eq!(
            (modified["type"].as_str(), rv(&modified["object"])),
            (Some("MODIFIED"), rv(&updated))
        );
        let deleted = events.next().await.expect("DELETED");
        assert_eq!(deleted["type"], "DELETED");
        assert_eq!(deleted["object"]["spec"]["holderIdentity"], "y");
        assert_eq!(
            rv(&deleted["object"]),
            "4",
            "the deletion takes a version of its own"
        );

        // Resuming from the creation's version replays what came after it.
        let mut resumed = watch(
            &api,
            &format!("{LEASES}?watch=true&resourceVersion={}", rv(&created)),
        )
        .await;
        assert_eq!(
            resumed.next_named().await,
            ("MODIFIED".to_owned(), "a".to_owned())
        );
        assert_eq!(
            resumed.next_named().await,
            ("DELETED".to_owned(), "a".to_owned())
        );
        // Without a version, the watch starts with what exists now.
        let mut fresh = watch(&api, &format!("{LEASES}?watch=1")).await;
        assert_eq!(
            fresh.next_named().await,
            ("ADDED".to_owned(), "before".to_owned())
        );
    }

    #[tokio::test]
    async fn after_compaction_an_old_version_gets_a_410_error_event() {
        let api = FakeApi::start();
        let first = api.create(lease("a", "x"));
        api.apply(lease("a", "y"));
        api.compact();
        let mut events = watch(
            &api,
            &format!("{LEASES}?watch=1&resourceVersion={}", rv(&first)),
        )
        .await;
        let error = events.next().await.expect("an ERROR event");
        assert_eq!(error["type"], "ERROR");
        assert_eq!(
            error["object"],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version: 1 (2)", "reason": "Expired", "code": 410})
        );
        assert!(
            events.next().await.is_none(),
            "the stream ends after the error"
        );
        assert_eq!(api.open_watches("leases"), 0);
        // The current version still resumes.
        let mut current = watch(&api, &format!("{LEASES}?watch=1&resourceVersion=2")).await;
        api.apply(lease("a", "z"));
        assert_eq!(
            current.next_named().await,
            ("MODIFIED".to_owned(), "a".to_owned())
        );
    }

    #[tokio::test]
    async fn bookmarks_arrive_with_the_current_version() {
        let api = FakeApi::start();
        api.set_bookmark_interval(Duration::from_millis(50));
        api.create(lease("a", "x"));
        api.create(kingress("other", "other.example"));
        let mut events = watch(
            &api,
            &format!("{LEASES}?watch=1&resourceVersion=2&allowWatchBookmarks=true"),
        )
        .await;
        let bookmark = events.next().await.expect("a BOOKMARK");
        assert_eq!(
            bookmark,
            json!({"type": "BOOKMARK", "object": {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                "metadata": {"resourceVersion": "2"}}})
        );
        // Without asking, no bookmark: the stream stays silent until its timeout ends it.
        let mut quiet = watch(
            &api,
            &format!("{LEASES}?watch=1&resourceVersion=2&timeoutSeconds=1"),
        )
        .await;
        assert!(quiet.next().await.is_none());
    }

    #[tokio::test]
    async fn label_selectors_filter_lists_and_watches() {
        let api = FakeApi::start();
        for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
            let mut obj = lease(name, "x");
            obj["metadata"]["labels"] = json!({"tier": tier});
            api.create(obj);
        }
        let (_, web) = call(
            &api,
            Method::GET,
            &format!("{LEASES}?labelSelector=tier%3Dweb"),
            None,
        )
        .await;
        assert_eq!(names(&web), ["a", "c"]);
        let (_, not_web) = call(
            &api,
            Method::GET,
            &format!("{LEASES}?labelSelector=tier!%3Dweb"),
            None,
        )
        .await;
        assert_eq!(names(&not_web), ["b"]);
        let (_, set) = call(
            &api,
            Method::GET,
            &format!("{LEASES}?labelSelector=tier+in+(db,web),!gone"),
            None,
        )
        .await;
        assert_eq!(names(&set), ["a", "b", "c"]);
        let (_, by_name) = call(
            &api,
            Method::GET,
            &format!("{LEASES}?fieldSelector=metadata.name%3Db"),
            None,
        )
        .await;
        assert_eq!(names(&by_name), ["b"]);
        let (_, all_ns) = call(
            &api,
            Method::GET,
            "/apis/coordination.k8s.io/v1/leases?fieldSelector=metadata.namespace!%3Ddefault",
            None,
        )
        .await;
        assert_eq!(names(&all_ns), Vec::<String>::new());

        let mut events = watch(&api, &format!("{LEASES}?watch=1&labelSelector=tier%3Dweb")).await;
        assert_eq!(
            events.next_named().await,
            ("ADDED".to_owned(), "a".to_owned())
        );
        assert_eq!(
            events.next_named().await,
            ("ADDED".to_owned(), "c".to_owned())
        );
        let mut moved = api
            .get("coordination.k8s.io/v1", "Lease", "default", "b")
            .expect("b");
        moved["metadata"]["labels"]["tier"] = json!("web");
        api.apply(moved);
        let mut left = api
            .get("coordination.k8s.io/v1", "Lease", "default", "a")
            .expect("a");
        left["metadata"]["labels"]["tier"] = json!("db");
        let left = api.apply(left);
        assert_eq!(
            events.next_named().await,
            ("ADDED".to_owned(), "b".to_owned())
        );
        let gone = events.next().await.expect("a leaves the selection");
        assert_eq!(gone["type"], "DELETED");
        assert_eq!(
            gone["object"]["metadata"]["labels"]["tier"], "web",
            "its state before leaving"
        );
        assert_eq!(
            rv(&gone["object"]),
            rv(&left),
            "at the version that moved it"
        );
    }

    #[tokio::test]
    async fn list_pages_are_served_from_the_first_pages_state() {
        let api = FakeApi::start();
        for name in ["a", "b", "c", "d", "e"] {
            api.create(lease(name, "x"));
        }
        let (_, first) = call(&api, Method::GET, &format!("{LEASES}?limit=2"), None).await;
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first["metadata"]["remainingItemCount"], 3);
        let version = first["metadata"]["resourceVersion"].clone();
        // Writes between pages do not show in later pages.
        api.delete("coordination.k8s.io/v1", "Lease", "default", "c");
        api.apply(lease("d", "changed"));
        api.create(lease("bb", "new"));
        let mut token = first["metadata"]["continue"]
            .as_str()
            .expect("a continue token")
            .to_owned();
        let mut seen = names(&first);
        while !token.is_empty() {
            let (status, page) = call(
                &api,
                Method::GET,
                &format!("{LEASES}?limit=2&continue={token}"),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["metadata"]["resourceVersion"], version);
            for item in page["items"].as_array().expect("items") {
                assert_eq!(item["spec"]["holderIdentity"], "x", "as of the first page");
            }
            seen.extend(names(&page));
            token = page["metadata"]["continue"]
                .as_str()
                .unwrap_or("")
                .to_owned();
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        let (_, now) = call(&api, Method::GET, LEASES, None).await;
        assert_eq!(names(&now), ["a", "b", "bb", "d", "e"]);

        // A compaction expires the tokens of older lists.
        let (_, again) = call(&api, Method::GET, &format!("{LEASES}?limit=1"), None).await;
        let token = again["metadata"]["continue"]
            .as_str()
            .expect("a token")
            .to_owned();
        api.compact();
        let (status, expired) = call(
            &api,
            Method::GET,
            &format!("{LEASES}?limit=1&continue={token}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::GONE);
        assert_eq!(expired["reason"], "Expired");
        let message = expired["message"].as_str().expect("a message");
        assert!(
            message.starts_with(
                "The provided continue parameter is too old to display a consistent list result."
            ),
            "{message}"
        );
    }

    #[tokio::test]
    async fn updates_check_the_version_and_bump_generation_on_spec_changes_only() {
        let api = FakeApi::start();
        let created = api.create(kingress("hello", "hello.example"));
        assert_eq!(created["metadata"]["generation"], 1);
        let path = format!("{INGRESSES}/hello");

        let mut stale = created.clone();
        stale["metadata"]["resourceVersion"] = json!("0");
        let (status, conflict) = put(&api, &path, stale).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(conflict["reason"], "Conflict");
        assert_eq!(
            conflict["message"],
            r#"Operation cannot be fulfilled on ingresses.networking.internal.knative.dev "hello": the object has been modified; please apply your changes to the latest version and try again"#
        );

        let mut unversioned = created.clone();
        remove_meta(&mut unversioned, "resourceVersion");
        let (status, invalid) = put(&api, &path, unversioned).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            invalid["message"],
            r#"Ingress.networking.internal.knative.dev "hello" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#
        );

        let mut labelled = created.clone();
        labelled["metadata"]["labels"]["extra"] = json!("1");
        let (status, labelled) = put(&api, &path, labelled).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            labelled["metadata"]["generation"], 1,
            "metadata is not spec"
        );
        assert_ne!(rv(&labelled), rv(&created));

        let mut respecced = labelled.clone();
        respecced["spec"]["rules"][0]["hosts"] = json!(["other.example"]);
        let (status, respecced) = put(&api, &path, respecced).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(respecced["metadata"]["generation"], 2);
        assert_eq!(respecced["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(
            respecced["metadata"]["creationTimestamp"],
            created["metadata"]["creationTimestamp"]
        );

        // Writing the same object again is a no-op: same version, same bytes.
        let before = api.get_bytes(
            "networking.internal.knative.dev/v1alpha1",
            "Ingress",
            "default",
            "hello",
        );
        let (status, same) = put(&api, &path, respecced.clone()).await;
        assert_eq!((status, rv(&same)), (StatusCode::OK, rv(&respecced)));
        assert_eq!(
            api.get_bytes(
                "networking.internal.knative.dev/v1alpha1",
                "Ingress",
                "default",
                "hello"
            ),
            before
        );

        let mut renamed = respecced.clone();
        renamed["metadata"]["name"] = json!("other");
        let (status, _) = put(&api, &path, renamed).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn status_written_through_the_main_resource_is_ignored() {
        let api = FakeApi::start();
        let created = api.create(kingress("hello", "hello.example"));
        assert!(created.get("status").is_none(), "create drops the status");
        let mut with_status = created.clone();
        with_status["status"] = json!({"observedGeneration": 7});
        let (status, kept) = put(&api, &format!("{INGRESSES}/hello"), with_status).await;
        assert_eq!(status, StatusCode::OK);
        assert!(kept.get("status").is_none());
        assert_eq!(rv(&kept), rv(&created), "nothing changed, nothing written");
        let (status, patched) = call(
            &api,
            Method::PATCH,
            &format!("{INGRESSES}/hello"),
            Some((MERGE, json!({"status": {"x": 1}}))),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(patched.get("status").is_none());
    }

    #[tokio::test]
    async fn the_status_subresource_changes_only_the_status() {
        let api = FakeApi::start();
        let created = api.create(kingress("hello", "hello.example"));
        let path = format!("{INGRESSES}/hello/status");
        let mut body = created.clone();
        body["status"] =
            json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]});
        body["spec"] = json!({"rules": []});
        body["metadata"]["labels"] = json!({"changed": "yes"});
        let (status, written) = put(&api, &path, body).await;
        assert_eq!(status, StatusCode::OK, "{written}");
        assert_eq!(written["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(written["spec"], created["spec"]);
        assert_eq!(written["metadata"]["labels"], created["metadata"]["labels"]);
        assert_eq!(written["metadata"]["generation"], 1);

        let patch = json!({"status": {"observedGeneration": 2}, "spec": null});
        let (status, patched) = call(&api, Method::PATCH, &path, Some((MERGE, patch))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(patched["status"]["observedGeneration"], 2);
        assert_eq!(patched["status"]["conditions"][0]["status"], "True");
        assert_eq!(patched["spec"], created["spec"]);

        let json_patch = json!([{"op": "test", "path": "/status/observedGeneration", "value": 2},
            {"op": "replace", "path": "/status/observedGeneration", "value": 3}]);
        let (status, replaced) = call(
            &api,
            Method::PATCH,
            &path,
            Some(("application/json-patch+json", json_patch)),
        )
        .await;
        assert_eq!(
            (status, &replaced["status"]["observedGeneration"]),
            (StatusCode::OK, &json!(3))
        );
        let failing = json!([{"op": "test", "path": "/status/observedGeneration", "value": 9}]);
        let (status, failed) = call(
            &api,
            Method::PATCH,
            &path,
            Some(("application/json-patch+json", failing)),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{failed}");

        let stored = api.get(
            "networking.internal.knative.dev/v1alpha1",
            "Ingress",
            "default",
            "hello",
        );
        assert_eq!(stored.as_ref(), Some(&replaced));
        let lease_status = "/apis/coordination.k8s.io/v1/namespaces/default/leases/a/status";
        let (status, _) = put(&api, lease_status, lease("a", "x")).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "leases have no status subresource"
        );
    }

    #[tokio::test]
    async fn a_merge_patch_carrying_a_stale_version_conflicts() {
        let api = FakeApi::start();
        let created = api.create(lease("leader", "a"));
        let renewed = api.apply(lease("leader", "b"));
        let path = format!("{LEASES}/leader");
        let stale =
            json!({"metadata": {"resourceVersion": rv(&created)}, "spec": {"holderIdentity": "c"}});
        let (status, conflict) = call(&api, Method::PATCH, &path, Some((MERGE, stale))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            conflict["message"],
            r#"Operation cannot be fulfilled on leases.coordination.k8s.io "leader": the object has been modified; please apply your changes to the latest version and try again"#
        );
        let current =
            json!({"metadata": {"resourceVersion": rv(&renewed)}, "spec": {"holderIdentity": "c"}});
        let (status, taken) = call(&api, Method::PATCH, &path, Some((MERGE, current))).await;
        assert_eq!(
            (status, &taken["spec"]["holderIdentity"]),
            (StatusCode::OK, &json!("c"))
        );
        // A PUT of a missing Lease creates it, as the real lease strategy allows.
        let (status, _) = put(&api, &format!("{LEASES}/fresh"), lease("fresh", "a")).await;
        assert_eq!(status, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn strategic_merge_and_apply_patches_are_refused_where_a_real_server_refuses_them() {
        let api = FakeApi::start();
        api.create(kingress("hello", "hello.example"));
        let smp = Some((
            "application/strategic-merge-patch+json",
            json!({"metadata": {"labels": {"x": "y"}}}),
        ));
        let (status, refused) = call(
            &api,
            Method::PATCH,
            &format!("{INGRESSES}/hello"),
            smp.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(refused["reason"], "UnsupportedMediaType");
        let apply = Some(("application/apply-patch+yaml", json!({})));
        let (status, _) = call(&api, Method::PATCH, &format!("{INGRESSES}/hello"), apply).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        api.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}));
        let (status, patched) = call(
            &api,
            Method::PATCH,
            "/api/v1/namespaces/default/configmaps/c",
            smp,
        )
        .await;
        assert_eq!(
            (status, &patched["metadata"]["labels"]["x"]),
            (StatusCode::OK, &json!("y"))
        );
    }

    #[tokio::test]
    async fn forbidden_verbs_get_the_rbac_refusal() {
        let api = FakeApi::start();
        api.forbid("list", "ingresses");
        api.forbid("update", "ingresses/status");
        let (status, refused) = call(
            &api,
            Method::GET,
            "/apis/networking.internal.knative.dev/v1alpha1/ingresses",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": r#"ingresses.networking.internal.knative.dev is forbidden: User "system:serviceaccount:knoxy-system:knoxy" cannot list resource "ingresses" in API group "networking.internal.knative.dev" at the cluster scope"#,
                "reason": "Forbidden", "code": 403,
                "details": {"group": "networking.internal.knative.dev", "kind": "ingresses"}})
        );
        let (status, refused) =
            put(&api, &format!("{INGRESSES}/x/status"), kingress("x", "h")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            refused["message"],
            r#"ingresses.networking.internal.knative.dev "x" is forbidden: User "system:serviceaccount:knoxy-system:knoxy" cannot update resource "ingresses/status" in API group "networking.internal.knative.dev" in the namespace "default""#
        );
        api.forbid("get", "pods");
        let (_, core) = call(&api, Method::GET, "/api/v1/namespaces/default/pods/p", None).await;
        assert_eq!(
            core["message"],
            r#"pods "p" is forbidden: User "system:serviceaccount:knoxy-system:knoxy" cannot get resource "pods" in API group "" in the namespace "default""#
        );
        api.allow("list", "ingresses");
        let (status, _) = call(&api, Method::GET, INGRESSES, None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn drop_watches_ends_every_stream() {
        let api = FakeApi::start();
        let mut leases = watch(&api, &format!("{LEASES}?watch=1")).await;
        let mut ingresses = watch(
            &api,
            &format!("{INGRESSES}?watch=1&allowWatchBookmarks=true"),
        )
        .await;
        wait_for_watches(&api, "leases", 1).await;
        wait_for_watches(&api, "ingresses", 1).await;
        api.drop_watches();
        assert_eq!(
            api.open_watches("leases") + api.open_watches("ingresses"),
            0
        );
        assert!(leases.next().await.is_none());
        assert!(ingresses.next().await.is_none());
        // A client that goes away closes its watch too.
        let gone = watch(&api, &format!("{LEASES}?watch=1")).await;
        wait_for_watches(&api, "leases", 1).await;
        drop(gone);
        wait_for_watches(&api, "leases", 0).await;
    }

    #[tokio::test]
    async fn finalizers_hold_a_deletion_until_they_are_removed() {
        let api = FakeApi::start();
        let mut obj = kingress("hello", "hello.example");
        obj["metadata"]["finalizers"] = json!(["ingresses.networking.internal.knative.dev"]);
        api.create(obj);
        let mut events = watch(&api, &format!("{INGRESSES}?watch=1")).await;
        assert_eq!(
            events.next_named().await,
            ("ADDED".to_owned(), "hello".to_owned())
        );
        let (status, marked) =
            call(&api, Method::DELETE, &format!("{INGRESSES}/hello"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            marked["metadata"]["deletionTimestamp"].is_string(),
            "{marked}"
        );
        assert_eq!(
            events.next_named().await,
            ("MODIFIED".to_owned(), "hello".to_owned())
        );
        let patch = json!({"metadata": {"finalizers": null}});
        let (status, _) = call(
            &api,
            Method::PATCH,
            &format!("{INGRESSES}/hello"),
            Some((MERGE, patch)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            events.next_named().await,
            ("MODIFIED".to_owned(), "hello".to_owned())
        );
        assert_eq!(
            events.next_named().await,
            ("DELETED".to_owned(), "hello".to_owned())
        );
        assert_eq!(
            api.get(
                "networking.internal.knative.dev/v1alpha1",
                "Ingress",
                "default",
                "hello"
            ),
            None
        );
        // Without finalizers a deletion completes, answered with a Success status for most
        // kinds, with the object for a few (pods, services).
        let uid = api.create(kingress("bye", "bye.example"))["metadata"]["uid"].clone();
        let (_, done) = call(&api, Method::DELETE, &format!("{INGRESSES}/bye"), None).await;
        assert_eq!(
            done,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": "bye", "group": "networking.internal.knative.dev",
                    "kind": "ingresses", "uid": uid}})
        );
        assert_eq!(
            events.next_named().await,
            ("ADDED".to_owned(), "bye".to_owned())
        );
        assert_eq!(
            events.next_named().await,
            ("DELETED".to_owned(), "bye".to_owned())
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        api.create(pod);
        let (_, done) = call(
            &api,
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p",
            None,
        )
        .await;
        assert_eq!(
            (&done["kind"], &done["metadata"]["name"]),
            (&json!("Pod"), &json!("p"))
        );
    }

    #[tokio::test]
    async fn the_kubeconfig_points_at_the_server_and_drop_stops_it() {
        let dir = TempDir::new("kubeapi");
        let api = FakeApi::start();
        let path = api.kubeconfig(&dir.0);
        let text = std::fs::read_to_string(&path).expect("read the kubeconfig");
        assert!(text.contains(&format!("server: {}\n", api.url())), "{text}");
        assert!(text.contains("current-context: fake"), "{text}");
        let addr = api.addr;
        let _open = watch(&api, &format!("{LEASES}?watch=1")).await;
        drop(api);
        let refused = tokio::net::TcpStream::connect(addr).await;
        assert!(refused.is_err(), "nothing listens after drop");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(at(1_796_083_200), "2026-12-01T00:00:00Z");
    }
}
