//! `websocket`, `websocket/split` (Knative's websocket.go).

use std::collections::BTreeSet;

use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use knoxy_tests::{within, Proc};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn dial(gw: &Proc, host: &str) -> Socket {
    let mut req = format!("ws://{}/", gw.addr("public"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("host", host.parse().unwrap());
    let (ws, response) = within("WebSocket handshake", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

async fn round_trip(ws: &mut Socket, text: &str) -> String {
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

    let mut ws = dial(&gw, "ws.example.com").await;
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
        let mut ws = dial(&gw, "wss.example.com").await;
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
