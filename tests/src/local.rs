//! Driving `knoxy local` from outside: started on loopback port 0 with YAML from a temp
//! directory, observed through its admin port's `/local` (the operator's view as JSON),
//! stopped with SIGTERM and checked from `/proc` for anything it left running.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{alive, children, get, Proc, Signal};

/// A running `knoxy local`.
pub struct Local {
    pub gw: Proc,
}

/// A config-autoscaler that lets an idle revision reach zero in seconds.
pub const FAST_AUTOSCALER: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {stable-window: 6s, scale-to-zero-grace-period: 2s}
";

impl Local {
    /// `knoxy local DIR`, every listener on a free loopback port.
    pub fn start(dir: &Path) -> Local {
        let gw = Proc::builder("knoxy")
            .arg("local")
            .arg(dir)
            .args(["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
            .args([
                "--private-http",
                "127.0.0.1:0",
                "--private-https",
                "127.0.0.1:0",
            ])
            .args(["--admin", "127.0.0.1:0"])
            .wait_for(&["public", "admin"])
            .spawn();
        Local { gw }
    }

    /// The operator's view.
    pub async fn view(&self) -> Value {
        let (status, _, body) = get(&self.gw.url("admin", "/local")).await;
        assert!(status.is_success(), "/local: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/local: {e}: {body}"))
    }

    /// Polls the view until `done` holds (at most `limit`), and returns that view.
    pub async fn until(&self, what: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let view = self.view().await;
            if done(&view) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}\nview: {view:#}\nstdout: {}",
                self.gw.stdout_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM: it exits cleanly and nothing it started outlives it.
    pub fn stop(mut self) {
        let started = children(self.gw.pid());
        self.gw.signal(Signal::SIGTERM);
        let status = self.gw.wait_exit(Duration::from_secs(30));
        assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
        let left: Vec<u32> = started.into_iter().filter(|p| alive(*p)).collect();
        assert!(left.is_empty(), "outlived knoxy local: {left:?}");
    }
}

/// The Service `name` in a view.
pub fn service<'a>(view: &'a Value, name: &str) -> &'a Value {
    find(view, "services", name)
}

/// The revision `name` in a view.
pub fn revision<'a>(view: &'a Value, name: &str) -> &'a Value {
    find(view, "revisions", name)
}

fn find<'a>(view: &'a Value, list: &str, name: &str) -> &'a Value {
    view[list]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["name"] == name))
        .unwrap_or(&Value::Null)
}

/// A condition's (status, reason) in an object's `status`.
pub fn condition(object: &Value, kind: &str) -> (String, String) {
    let found = object["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind));
    match found {
        Some(c) => (
            c["status"].as_str().unwrap_or_default().to_owned(),
            c["reason"].as_str().unwrap_or_default().to_owned(),
        ),
        None => (String::new(), String::new()),
    }
}

/// The Service is Ready.
pub fn ready(view: &Value, name: &str) -> bool {
    condition(service(view, name), "Ready").0 == "True"
}
