//! WebSocket round trips for bench/run: CONNECTIONS WebSockets to ADDR (Host: HOST), each
//! sending a short text message and waiting for its echo, again and again for SECONDS.
//! Prints one JSON object: round trips, per second, p50/p90/p99/max in ms, errors.
//!
//! `knoxy-wsbench ADDR HOST CONNECTIONS SECONDS` (the test backend echoes text messages).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [addr, host, conns, secs] => addr
            .parse::<SocketAddr>()
            .ok()
            .zip(conns.parse::<usize>().ok())
            .zip(secs.parse::<f64>().ok())
            .map(|((addr, conns), secs)| (addr, host.clone(), conns, secs)),
        _ => None,
    };
    let Some((addr, host, conns, secs)) = parsed else {
        eprintln!("usage: knoxy-wsbench ADDR HOST CONNECTIONS SECONDS");
        return ExitCode::from(2);
    };
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(round_trips(addr, host.clone(), until)))
        .collect();
    let (mut rtts, mut errors) = (Vec::new(), 0u64);
    for task in tasks {
        match task.await {
            Ok((mut got, failed)) => {
                rtts.append(&mut got);
                errors += failed;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    rtts.sort_unstable();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(&knoxy_tests::quantile(&rtts, q));
    println!(
        "{{\"requests\": {}, \"rps\": {:.1}, \"p50\": {:.4}, \"p90\": {:.4}, \"p99\": {:.4}, \"max\": {:.4}, \"errors\": {}}}",
        rtts.len(),
        rtts.len() as f64 / elapsed,
        at(0.5),
        at(0.9),
        at(0.99),
        rtts.last().map_or(0.0, ms),
        errors
    );
    ExitCode::SUCCESS
}

/// One connection's round trips until `until`; a failed connect or exchange counts one error
/// and ends the connection.
async fn round_trips(addr: SocketAddr, host: String, until: Instant) -> (Vec<Duration>, u64) {
    let mut rtts = Vec::new();
    let Ok(request) = format!("ws://{host}/").into_client_request() else {
        return (rtts, 1);
    };
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return (rtts, 1);
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut ws, _)) = tokio_tungstenite::client_async(request, tcp).await else {
        return (rtts, 1);
    };
    while Instant::now() < until {
        let sent = Instant::now();
        if ws.send(Message::text("ping")).await.is_err() {
            return (rtts, 1);
        }
        match ws.next().await {
            Some(Ok(Message::Text(_))) => rtts.push(sent.elapsed()),
            _ => return (rtts, 1),
        }
    }
    let _ = ws.close(None).await;
    (rtts, 0)
}
