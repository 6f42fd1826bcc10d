//! `knoxy local`'s loop, on a thread of its own: it reads the inputs (again whenever a file
//! changes; a bad file is reported and what runs keeps running), steps the controller each
//! second and at once when the gateway's activator reports demand, and hands each new
//! snapshot to the gateway. It hears the activator as Knative's autoscaler does, over a
//! loopback websocket of `WireStatMessages`, so the gateway runs as it would in a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use knoxy_concurrency::WireStatMessages;
use knoxy_control::derive::Snapshot;
use knoxy_control::kpa::Sample;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::controller::Controller;
use crate::input;
use crate::view::View;

/// How often an instance that is starting is probed.
const STARTING_POLL: Duration = Duration::from_millis(10);

/// How many recent events the terminal shows.
const TERMINAL_EVENTS: usize = 8;

/// What `knoxy local` runs.
pub struct Options {
    /// Service YAML files or directories.
    pub paths: Vec<PathBuf>,
    /// The `knoxy-queue` binary.
    pub queue: PathBuf,
    /// Where bare command names are looked for first.
    pub search: Vec<PathBuf>,
    /// What starts instances so that they die with knoxy local (knoxy's own binary).
    pub launcher: Option<PathBuf>,
    /// Where the gateway answers, once its listeners are bound (for the curl lines).
    pub gateway: Arc<OnceLock<Gateway>>,
}

/// The gateway's bound listeners.
#[derive(Debug, Clone, Copy)]
pub struct Gateway {
    pub public: SocketAddr,
    /// Where cluster-local Services answer.
    pub private: Option<SocketAddr>,
}

/// The running loop.
pub struct Running {
    /// The websocket the gateway reports demand to (`--autoscaler-url`).
    pub autoscaler_url: String,
    /// The operator's view as JSON (the admin port's `/local`), refreshed each second.
    pub view: Arc<Mutex<String>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the loop; `on_snapshot` gets every snapshot that differs from the last.
pub fn start(
    options: Options,
    on_snapshot: impl FnMut(Snapshot) + Send + 'static,
) -> std::io::Result<Running> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let view = Arc::new(Mutex::new("{}".to_owned()));
    let shown = Arc::clone(&view);
    let thread = std::thread::Builder::new()
        .name("knoxy-local".into())
        .spawn(move || runtime.block_on(run(options, listener, stopped, on_snapshot, &shown)))?;
    Ok(Running {
        autoscaler_url: format!("ws://{addr}"),
        view,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Running {
    /// Stops every instance and the loop, and waits for them.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn run(
    options: Options,
    listener: std::net::TcpListener,
    mut stopped: oneshot::Receiver<()>,
    mut on_snapshot: impl FnMut(Snapshot),
    shown: &Mutex<String>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => {
            tokio::spawn(hear_activators(listener, tx));
        }
        Err(e) => eprintln!("knoxy local: the autoscaler socket: {e}"),
    }
    let mut controller = Controller::new(options.queue.clone(), options.search.clone());
    if let Some(launcher) = &options.launcher {
        controller.launch_with(launcher.clone());
    }
    let mut operator = Operator::new(std::io::stdout().is_terminal());
    if operator.terminal {
        // The view is redrawn in place: the instances' output goes to files.
        let dir = std::env::temp_dir().join(format!("knoxy-local-{}", std::process::id()));
        match crate::supervisor::log_to(dir.clone()) {
            Ok(()) => operator.header = format!("instance logs: {}\n", dir.display()),
            Err(e) => eprintln!("knoxy local: {}: {e}", dir.display()),
        }
    }
    let started = Instant::now();
    let mut stamps = BTreeMap::new();
    let mut last: Option<Snapshot> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = Vec::new();
    loop {
        // An instance on its way up is looked at every few milliseconds (as a kubelet's
        // probe would be), so its revision is routed the moment it is ready.
        let starting = controller.starting();
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {}
            Some(first) = rx.recv() => reported.push(first),
            _ = tokio::time::sleep(STARTING_POLL), if starting => {}
        }
        while let Ok(more) = rx.try_recv() {
            reported.push(more);
        }
        let now = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let current = stamps_of(&options.paths);
        if current != stamps {
            stamps = current;
            let read = input::read(&options.paths).held_over(controller.input());
            controller.load(read, now);
        }
        controller.step(now, &reported);
        reported.clear();
        let private = options.gateway.get().and_then(|g| g.private);
        let snapshot = controller.reconcile(private);
        if last.as_ref() != Some(&snapshot) {
            on_snapshot(snapshot.clone());
            last = Some(snapshot);
        }
        let view = controller.view();
        if let Ok(json) = serde_json::to_string_pretty(&view) {
            *shown.lock() = json;
        }
        operator.show(&view, controller.take_unlogged(), options.gateway.get());
    }
    controller.shutdown();
}

/// Shows the operator the view: redrawn in place on a terminal, else log lines (each
/// event, and each Service's curl and hey lines once it has a route).
struct Operator {
    terminal: bool,
    /// Lines drawn last time (to redraw over them).
    drawn: usize,
    last: String,
    announced: BTreeSet<String>,
    /// Shown above the view on a terminal.
    header: String,
}

impl Operator {
    fn new(terminal: bool) -> Operator {
        Operator {
            terminal,
            drawn: 0,
            last: String::new(),
            announced: BTreeSet::new(),
            header: String::new(),
        }
    }

    fn show(&mut self, view: &View, events: Vec<String>, gateway: Option<&Gateway>) {
        let mut out = std::io::stdout().lock();
        if !self.terminal {
            for e in events {
                let _ = writeln!(out, "knoxy local: {e}");
            }
        }
        let mut try_lines = self.header.clone();
        for s in &view.services {
            let key = format!("{}/{}", s.namespace, s.name);
            let (Some(gw), Some(_)) = (gateway, s.status.address.as_ref()) else {
                continue;
            };
            let host = s.status.url.split_once("://").map_or("", |(_, h)| h);
            let addr = if host.contains(".svc.") {
                gw.private.unwrap_or(gw.public)
            } else {
                gw.public
            };
            let lines = format!(
                "knoxy local: {key} answers at {}/\n  curl -H 'Host: {host}' http://{addr}/\n  hey -z 10s -c 20 -host {host} http://{addr}/\n",
                s.status.url
            );
            if self.terminal {
                try_lines.push_str(&lines);
            } else if self.announced.insert(key) {
                let _ = out.write_all(lines.as_bytes());
            }
        }
        if !self.terminal {
            let _ = out.flush();
            return;
        }
        let text = format!("{try_lines}{}", view.render(TERMINAL_EVENTS));
        if text == self.last {
            return;
        }
        // Up to the first line drawn last time, clear below, draw again.
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = text.lines().count();
        self.last = text;
    }
}

/// Accepts the gateway's stat websockets; each message becomes (revision key, sample).
async fn hear_activators(
    listener: tokio::net::TcpListener,
    tx: mpsc::UnboundedSender<(String, Sample)>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Binary(bytes) = frame else {
                    continue;
                };
                let Ok(batch) = WireStatMessages::decode(bytes) else {
                    continue;
                };
                for m in batch.messages {
                    let Some(stat) = m.stat else { continue };
                    let sample = Sample {
                        average_concurrent_requests: stat.average_concurrent_requests,
                        average_proxied_concurrent_requests: stat
                            .average_proxied_concurrent_requests,
                        request_count: stat.request_count,
                        proxied_request_count: stat.proxied_request_count,
                    };
                    let _ = tx.send((format!("{}/{}", m.namespace, m.name), sample));
                }
            }
        });
    }
}

/// Each input file's modification time: a change in any means reading again.
fn stamps_of(paths: &[PathBuf]) -> BTreeMap<PathBuf, Option<SystemTime>> {
    let mut out = BTreeMap::new();
    for path in paths {
        let files = std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_else(|_| vec![path.clone()]);
        for f in files {
            let stamp = std::fs::metadata(&f).and_then(|m| m.modified()).ok();
            out.insert(f, stamp);
        }
    }
    out
}

/// For tests: the socket address of a `ws://` URL.
pub fn socket_of(url: &str) -> Option<SocketAddr> {
    url.strip_prefix("ws://")?.parse().ok()
}
