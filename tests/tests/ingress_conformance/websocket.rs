//! `websocket`, `websocket/split` (Knative's websocket.go): 100 echoes on one connection;
//! under a 50/50 split each connection sticks to one of the two backends, both are seen.

use std::collections::BTreeSet;

use futures_util::{SinkExt as _, StreamExt as _};
use knoxy_tests::within;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{ws_dial, WebSocket};
use crate::fixture::*;

async fn round_trip(ws: &mut WebSocket, text: &str) -> String {
    within("send", ws.send(Message::text(text))).await.unwrap();
    let reply = within("echo", ws.next()).await.unwrap().unwrap();
    reply.into_text().unwrap().as_str().to_owned()
}

#[tokio::test]
async fn websocket() {
    let mut c = Cluster::new();
    let svc = c.service("ws");
    c.ingress("websocket", simple("ws.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "websocket", None).await;

    let mut ws = ws_dial(gw.addr("public"), "ws.example.com").await;
    for i in 0..100 {
        assert_eq!(
            round_trip(&mut ws, &format!("m{i}")).await,
            format!("m{i}ws")
        );
    }
    within("close", ws.close(None)).await.unwrap();
}

#[tokio::test]
async fn websocket_split() {
    let mut c = Cluster::new();
    let (a, b) = (c.service("ws-a"), c.service("ws-b"));
    let paths = json!([{"splits": [split(&a, 50), split(&b, 50)]}]);
    c.ingress(
        "ws-split",
        json!({"rules": [rule(&["wss.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "ws-split", None).await;

    let want = BTreeSet::from([a.name.clone(), b.name.clone()]);
    let mut seen = BTreeSet::new();
    // Knative's test: up to 100 connections, each checked over 10 more round trips.
    for n in 0..100 {
        let mut ws = ws_dial(gw.addr("public"), "wss.example.com").await;
        let first = format!("ping -{n}");
        let reply = round_trip(&mut ws, &first).await;
        let backend = reply
            .strip_prefix(&first)
            .unwrap_or_else(|| panic!("{reply:?} echoes {first:?}"))
            .to_owned();
        assert!(
            want.contains(&backend),
            "connection {n} answered by {backend:?}, not a split of this path"
        );
        for i in 0..10 {
            let message = format!("ping -{n}.{i}");
            assert_eq!(
                round_trip(&mut ws, &message).await,
                format!("{message}{backend}"),
                "a connection stays on one backend"
            );
        }
        within("close", ws.close(None)).await.unwrap();
        seen.insert(backend);
        if seen == want {
            break;
        }
    }
    assert_eq!(seen, want, "both backends answer within 100 connections");
}
