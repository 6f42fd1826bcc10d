//! `websocket`, `websocket/split` (Knative's websocket.go).

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

    let mut seen = BTreeSet::new();
    for _ in 0..100 {
        let mut ws = ws_dial(gw.addr("public"), "wss.example.com").await;
        let backend = round_trip(&mut ws, "0").await.split_off(1);
        for i in 1..5 {
            assert_eq!(
                round_trip(&mut ws, &i.to_string()).await,
                format!("{i}{backend}"),
                "a connection stays on one backend"
            );
        }
        seen.insert(backend);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from(["ws-a".into(), "ws-b".into()]));
}
