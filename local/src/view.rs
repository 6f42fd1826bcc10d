//! The operator's view of `knoxy local` (issue 14 item 6): each Service's status as Knative
//! writes it, each revision's instances (desired / actual / ready), what the KPA observes
//! and whether it panics, and the recent events. The same value is JSON on the admin port
//! (`/local`) and text on the terminal.

use std::fmt::Write as _;

use knoxy_control::serving::domainmapping::DomainMappingStatus;
use knoxy_control::serving::status::{Condition, RevisionStatus, ServiceStatus};
use knoxy_control::serving::traffic::Status;
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub services: Vec<ServiceView>,
    pub domain_mappings: Vec<DomainMappingView>,
    pub revisions: Vec<RevisionView>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub status: ServiceStatus,
    /// Why the last edit was not applied (what runs keeps running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainMappingView {
    pub namespace: String,
    /// The host.
    pub name: String,
    pub status: DomainMappingStatus,
    /// The reconciler's error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub namespace: String,
    pub name: String,
    pub service: String,
    /// `active` while a Route names it, else `reserve`.
    pub routing_state: &'static str,
    pub status: RevisionStatus,
    /// Instances running (ready or not).
    pub instances: usize,
    /// The decider's last count (before bounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    /// `concurrency` or `rps`, and its stable and panic averages at the last tick.
    pub metric: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panic: Option<f64>,
    pub panicking: bool,
    pub activator_in_path: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since `knoxy local` started.
    pub second: i64,
    pub message: String,
}

impl View {
    /// The view as text, one block per Service, at most `events` recent events.
    pub fn render(&self, events: usize) -> String {
        let mut out = String::new();
        for s in &self.services {
            let _ = writeln!(
                out,
                "{}/{}  {}  {}",
                s.namespace,
                s.name,
                s.status.url,
                ready(&s.status.conditions)
            );
            if let Some(e) = &s.error {
                let _ = writeln!(out, "  last edit refused: {}", e.replace('\n', "; "));
            }
            for t in &s.status.traffic {
                let _ = writeln!(
                    out,
                    "  {:>3}% -> {}{}{}",
                    t.percent,
                    t.revision_name,
                    if t.latest_revision { " (latest)" } else { "" },
                    t.tag
                        .as_ref()
                        .map(|tag| format!("  tag {tag} {}", t.url.as_deref().unwrap_or_default()))
                        .unwrap_or_default(),
                );
            }
            for r in self
                .revisions
                .iter()
                .filter(|r| r.service == s.name && r.namespace == s.namespace)
            {
                let _ = writeln!(
                    out,
                    "  {}  {}  instances {} ready {} desired {}  {} {}{}{}",
                    r.name,
                    r.routing_state,
                    r.instances,
                    r.status.actual_replicas,
                    r.status
                        .desired_replicas
                        .map_or("-".to_owned(), |d| d.to_string()),
                    r.metric,
                    r.stable.map_or("-".to_owned(), |v| format!("{v:.1}")),
                    r.panic
                        .map_or(String::new(), |v| format!(" (panic window {v:.1})")),
                    if r.panicking { "  PANIC" } else { "" },
                );
            }
        }
        for m in &self.domain_mappings {
            let _ = writeln!(
                out,
                "{}/{}  {}  {}",
                m.namespace,
                m.name,
                m.status.url,
                ready(&m.status.conditions)
            );
        }
        let recent = self.events.len().saturating_sub(events);
        if recent < self.events.len() {
            out.push_str("recent:\n");
        }
        for e in &self.events[recent..] {
            let _ = writeln!(out, "  {:>5}s  {}", e.second, e.message);
        }
        out
    }
}

/// `Ready=<status>`, with the reason and message when there is one.
fn ready(conditions: &[Condition]) -> String {
    let ready = conditions.iter().find(|c| c.kind == "Ready");
    format!(
        "Ready={}{}",
        ready.map_or("Unknown", |c| status(c.status)),
        ready
            .filter(|c| !c.reason.is_empty())
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default()
    )
}

fn status(s: Status) -> &'static str {
    match s {
        Status::True => "True",
        Status::False => "False",
        Status::Unknown => "Unknown",
    }
}
