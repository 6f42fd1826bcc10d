//! `grpc`, `grpc/split` (Knative's grpc.go): bidi streams through h2c prior knowledge with
//! `:authority host:80`, every stream of a test on one client connection (Knative's tests
//! open one `grpc.ClientConn`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use knoxy_tests::within;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::common::{grpc_endpoint, PingStream};
use crate::fixture::*;

#[tokio::test]
async fn grpc() {
    let mut c = Cluster::new();
    let svc = c.h2c_service("grpc");
    c.ingress("grpc", simple("grpc.example.com", &svc));
    let gw = c.gateway();
    ready(&gw, "grpc", None).await;

    let conn = Conn::open(gw.addr("public"), "grpc.example.com:80").await;
    let mut stream = PingStream::open_on(conn.channel.clone()).await;
    for i in 0..100 {
        let reply = stream.round_trip(&format!("hello {i}")).await;
        assert_eq!(reply, format!("pong: hello {i}grpc"));
    }
    stream.finish().await;
    conn.assert_one_dial();
}

#[tokio::test]
async fn grpc_split() {
    let mut c = Cluster::new();
    let (a, b) = (c.h2c_service("grpc-a"), c.h2c_service("grpc-b"));
    let paths = json!([{"splits": [split(&a, 50), split(&b, 50)]}]);
    c.ingress(
        "grpc-split",
        json!({"rules": [rule(&["grpc-split.example.com"], paths)]}),
    );
    let gw = c.gateway();
    ready(&gw, "grpc-split", None).await;

    let want = BTreeSet::from([a.name.clone(), b.name.clone()]);
    let conn = Conn::open(gw.addr("public"), "grpc-split.example.com:80").await;
    let mut seen = BTreeSet::new();
    // Up to 100 streams on the one connection, each checked over 10 more round trips.
    for n in 0..100 {
        let mut stream = PingStream::open_on(conn.channel.clone()).await;
        let first = format!("ping -{n}");
        let reply = stream.round_trip(&first).await;
        let backend = reply
            .strip_prefix(&format!("pong: {first}"))
            .unwrap_or_else(|| panic!("{reply:?} answers {first:?}"))
            .to_owned();
        assert!(
            want.contains(&backend),
            "stream {n} answered by {backend:?}, not a split of this path"
        );
        for i in 0..10 {
            let message = format!("ping -{n}.{i}");
            assert_eq!(
                stream.round_trip(&message).await,
                format!("pong: {message}{backend}"),
                "a stream stays on one backend"
            );
        }
        stream.finish().await;
        seen.insert(backend);
        if seen == want {
            break;
        }
    }
    assert_eq!(seen, want, "both backends answer within 100 streams");
    conn.assert_one_dial();
}

/// One gRPC client connection to the gateway, dialled through a loopback relay that counts
/// the connections it accepts, so a test can tell that all its streams shared one.
struct Conn {
    channel: Channel,
    dials: Arc<AtomicUsize>,
    relay: tokio::task::JoinHandle<()>,
}

impl Conn {
    async fn open(gateway: SocketAddr, authority: &str) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dials = Arc::new(AtomicUsize::new(0));
        let relay = tokio::spawn({
            let dials = Arc::clone(&dials);
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    dials.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        if let Ok(mut upstream) = TcpStream::connect(gateway).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    });
                }
            }
        });
        let channel = within("gRPC connect", grpc_endpoint(addr, authority).connect())
            .await
            .unwrap();
        Conn {
            channel,
            dials,
            relay,
        }
    }

    fn assert_one_dial(&self) {
        assert_eq!(
            self.dials.load(Ordering::SeqCst),
            1,
            "every stream went over one client connection"
        );
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.relay.abort();
    }
}
