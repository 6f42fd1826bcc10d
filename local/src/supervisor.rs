//! A revision's instances as local processes (contract `autoscaler-local.md`, issue item
//! 2): the app (the container's command and args, `PORT` and the container's env) behind its
//! own `knoxy-queue`, started with the env Knative's revision controller gives the
//! queue-proxy container. Each process leads its own process group, so stopping an
//! instance stops whatever its app started; a dropped instance is killed, so no exit path
//! leaves one behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// What one instance of a revision runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub namespace: String,
    pub service: String,
    pub configuration: String,
    pub revision: String,
    /// The app's argv: the container's command and args.
    pub argv: Vec<String>,
    /// The container's env (PORT is added).
    pub env: Vec<(String, String)>,
    pub container_concurrency: u32,
    pub timeout_seconds: i64,
    /// The `knoxy-queue` binary.
    pub queue: PathBuf,
    /// A binary that runs [`exec_with_parent`] when given [`EXEC_WITH_PARENT`] (knoxy
    /// itself): the app and queue then die with knoxy local, even when it is killed.
    pub launcher: Option<PathBuf>,
}

/// The argument that makes the launcher run [`exec_with_parent`].
pub const EXEC_WITH_PARENT: &str = "__knoxy-exec-with-parent";

/// A running instance: its app and its queue.
pub struct Instance {
    pub name: String,
    /// The queue's serving port: the instance's endpoint, as a pod's 8012.
    pub endpoint: SocketAddr,
    /// The queue's autoscaler metrics port (a pod's 9090).
    pub metrics: SocketAddr,
    pub started: Instant,
    app: Child,
    queue: Child,
}

/// How long an instance's queue may take to print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl Instance {
    /// Starts the app on a free loopback port, then its queue in front of it; `name` tags
    /// their log lines (`[name app]`, `[name queue]`).
    pub fn start(spec: &InstanceSpec, name: &str) -> Result<Instance, String> {
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(format!("{name}: the container has no command to run"));
        };
        let app_port = free_port().map_err(|e| format!("{name}: a free port: {e}"))?;
        let mut app = launched(spec, program);
        app.args(args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PORT", app_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut app = app
            .spawn()
            .map_err(|e| format!("{name}: starting {program:?}: {e}"))?;
        forward_output(&mut app, format!("{name} app"), None);

        let mut queue = launched(spec, &spec.queue);
        queue
            .envs(queue_env(spec, app_port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut queue = match queue.spawn() {
            Ok(q) => q,
            Err(e) => {
                stop_group(&mut app, Duration::ZERO);
                return Err(format!("{name}: starting {}: {e}", spec.queue.display()));
            }
        };
        let (tx, rx) = mpsc::channel();
        forward_output(&mut queue, format!("{name} queue"), Some(tx));
        let mut instance = Instance {
            name: name.to_owned(),
            endpoint: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            started: Instant::now(),
            app,
            queue,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while instance.endpoint.port() == 0 || instance.metrics.port() == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((label, addr)) if label == "main" => instance.endpoint = addr,
                Ok((label, addr)) if label == "metrics" => instance.metrics = addr,
                Ok(_) => {}
                Err(_) => {
                    let why = instance
                        .exited()
                        .unwrap_or_else(|| "did not say where it listens".to_owned());
                    instance.stop(Duration::ZERO);
                    return Err(format!("{name}: its queue {why}"));
                }
            }
        }
        Ok(instance)
    }

    /// Which process has exited, and how (a crashed instance); None while both run.
    pub fn exited(&mut self) -> Option<String> {
        let describe = |what: &str, s: ExitStatus| format!("{what} exited ({s})");
        if let Ok(Some(s)) = self.app.try_wait() {
            return Some(describe("the app", s));
        }
        if let Ok(Some(s)) = self.queue.try_wait() {
            return Some(describe("the queue", s));
        }
        None
    }

    /// The app's and the queue's process ids (each its process group's leader).
    pub fn pids(&self) -> [u32; 2] {
        [self.app.id(), self.queue.id()]
    }

    /// The kubelet's readiness probe: the queue answers 200 once the app is ready.
    pub fn ready(&self) -> bool {
        let probe = || -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&self.endpoint, Duration::from_millis(200))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.31\r\nK-Network-Probe: queue\r\nConnection: close\r\n\r\n",
                self.endpoint
            )?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(&head[9..12] == b"200")
        };
        probe().unwrap_or(false)
    }

    /// Stops the queue (which drains) and the app: SIGTERM to each process group, SIGKILL
    /// after `grace`.
    pub fn stop(mut self, grace: Duration) {
        stop_group(&mut self.queue, grace);
        stop_group(&mut self.app, grace);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Every exit path: whatever is still running goes.
        for child in [&mut self.queue, &mut self.app] {
            if let Ok(None) = child.try_wait() {
                let _ = killpg(pid(child), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

/// The env Knative's revision controller gives the queue-proxy container, with every port
/// chosen by the queue on loopback.
fn queue_env(spec: &InstanceSpec, app_port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "CONTAINER_CONCURRENCY",
            spec.container_concurrency.to_string(),
        ),
        ("QUEUE_SERVING_PORT", "0".into()),
        ("QUEUE_SERVING_TLS_PORT", "0".into()),
        ("USER_PORT", app_port.to_string()),
        ("REVISION_TIMEOUT_SECONDS", spec.timeout_seconds.to_string()),
        ("SERVING_LOGGING_CONFIG", LOGGING_CONFIG.into()),
        ("SERVING_LOGGING_LEVEL", "info".into()),
        ("SERVING_NAMESPACE", spec.namespace.clone()),
        ("SERVING_SERVICE", spec.service.clone()),
        ("SERVING_CONFIGURATION", spec.configuration.clone()),
        ("SERVING_REVISION", spec.revision.clone()),
        ("SERVING_POD", format!("{}-local", spec.revision)),
        ("SERVING_POD_IP", "127.0.0.1".into()),
        (
            "SERVING_READINESS_PROBE",
            format!(
                r#"{{"tcpSocket":{{"port":{app_port},"host":"127.0.0.1"}},"successThreshold":1}}"#
            ),
        ),
        ("KNOXY_BIND_ADDRESS", "127.0.0.1".into()),
        ("KNOXY_ADMIN_PORT", "0".into()),
        ("KNOXY_METRICS_PORT", "0".into()),
        ("METRICS_PROMETHEUS_PORT", "0".into()),
        ("KNOXY_CERTS_DIR", "/nonexistent/knoxy-local-certs".into()),
        // knoxy local takes an instance out of its endpoints before stopping it, so the
        // queue need not wait the 30 s a cluster's endpoints take to follow.
        ("KNOXY_DRAIN_QUIET_PERIOD", "1s".into()),
    ]
}

/// `program`, through the spec's launcher if it has one.
fn launched(spec: &InstanceSpec, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match &spec.launcher {
        Some(launcher) => {
            let mut c = Command::new(launcher);
            c.arg(EXEC_WITH_PARENT)
                .arg(std::process::id().to_string())
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The launcher's side (`EXEC_WITH_PARENT PPID PROGRAM ARGS...`): asks the kernel to kill
/// this process when its parent goes (PR_SET_PDEATHSIG, which survives the exec), gives up
/// if the parent PPID is already gone, then becomes PROGRAM. Returns only on failure.
pub fn exec_with_parent(args: &[String]) -> String {
    let [ppid, program, rest @ ..] = args else {
        return format!("usage: knoxy {EXEC_WITH_PARENT} PPID PROGRAM [ARGS...]");
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return format!("PR_SET_PDEATHSIG: {e}");
    }
    if nix::unistd::getppid().to_string() != *ppid {
        return format!("the parent {ppid} is gone");
    }
    let e = Command::new(program).args(rest).exec();
    format!("{program}: {e}")
}

/// Knative's default `config-logging` `zap-logger-config`, as its revision controller passes it.
const LOGGING_CONFIG: &str = r#"{"level":"info","development":false,"outputPaths":["stdout"],"errorOutputPaths":["stderr"],"encoding":"json","encoderConfig":{"timeKey":"timestamp","levelKey":"severity","nameKey":"logger","callerKey":"caller","messageKey":"message","stacktraceKey":"stacktrace","lineEnding":"","levelEncoder":"","timeEncoder":"iso8601","durationEncoder":"","callerEncoder":""}}"#;

/// Where instances' output goes instead of our stderr (a terminal showing the operator's
/// view): a `<instance> <app|queue>.log` file each.
static LOG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sends every instance's output to files under `dir` from now on.
pub fn log_to(dir: PathBuf) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let _ = LOG_DIR.set(dir);
    Ok(())
}

/// Copies a child's output to ours, each line tagged; `listening on <label> <addr>` lines
/// are also sent to `listening`.
fn forward_output(
    child: &mut Child,
    tag: String,
    listening: Option<mpsc::Sender<(String, SocketAddr)>>,
) {
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let (tag, listening) = (tag.clone(), listening.clone());
        let _ = std::thread::Builder::new()
            .name(format!("knoxy-local-log {tag}"))
            .spawn(move || {
                let mut file = LOG_DIR.get().and_then(|dir| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join(format!("{tag}.log")))
                        .ok()
                });
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let (Some(tx), Some((label, addr))) = (&listening, listening_on(&line)) {
                        let _ = tx.send((label, addr));
                    }
                    match &mut file {
                        Some(f) => {
                            let _ = writeln!(f, "{line}");
                        }
                        None => eprintln!("[{tag}] {line}"),
                    }
                }
            });
    }
}

/// `listening on <label> <addr>`, as knoxy's binaries announce their ports.
fn listening_on(line: &str) -> Option<(String, SocketAddr)> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let (label, rest) = rest.split_once(' ')?;
    // The address ends where the word does, or the JSON string holding the log line.
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    let addr = rest[..end].trim_start_matches("http://").parse().ok()?;
    Some((label.to_owned(), addr))
}

/// SIGTERM to `child`'s process group, SIGKILL after `grace`, then reaped.
fn stop_group(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let group = pid(child);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let _ = killpg(group, Signal::SIGKILL); // what it left behind
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_ports_are_read() {
        assert_eq!(
            listening_on("knoxy-queue: listening on main 127.0.0.1:4242"),
            Some(("main".into(), SocketAddr::from(([127, 0, 0, 1], 4242))))
        );
        assert_eq!(
            listening_on(r#"{"message":"listening on metrics 127.0.0.1:9090","k":"v"}"#),
            Some(("metrics".into(), SocketAddr::from(([127, 0, 0, 1], 9090))))
        );
        assert_eq!(listening_on("nothing here"), None);
    }

    #[test]
    fn a_container_without_a_command_is_an_error_naming_the_instance() {
        let spec = InstanceSpec {
            namespace: "default".into(),
            service: "hello".into(),
            configuration: "hello".into(),
            revision: "hello-00001".into(),
            argv: Vec::new(),
            env: Vec::new(),
            container_concurrency: 0,
            timeout_seconds: 300,
            queue: PathBuf::from("/nonexistent"),
            launcher: None,
        };
        let e = Instance::start(&spec, "hello-00001-1")
            .err()
            .expect("an error");
        assert!(
            e.contains("hello-00001-1") && e.contains("no command"),
            "{e}"
        );
        let spec = InstanceSpec {
            argv: vec!["/nonexistent/app".into()],
            ..spec
        };
        let e = Instance::start(&spec, "hello-00001-2")
            .err()
            .expect("an error");
        assert!(e.contains("/nonexistent/app"), "{e}");
    }
}
