//! The autoscaler's scrape of one instance: `GET /metrics` on its queue's :9090 twin,
//! answered with the protobuf `Stat` (contract `queue-proxy.md` §8), within Knative's 3 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use knoxy_concurrency::Stat;
use prost::Message as _;

use knoxy_control::kpa::Sample;

const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

/// The instance's Stat, or None when the scrape fails (nothing is recorded then).
pub fn scrape(metrics: SocketAddr) -> Option<Sample> {
    let mut s = TcpStream::connect_timeout(&metrics, SCRAPE_TIMEOUT).ok()?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nAccept: application/protobuf\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    s.take(1 << 20).read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let stat = Stat::decode(&response[split + 4..]).ok()?;
    Some(Sample {
        average_concurrent_requests: stat.average_concurrent_requests,
        average_proxied_concurrent_requests: stat.average_proxied_concurrent_requests,
        request_count: stat.request_count,
        proxied_request_count: stat.proxied_request_count,
    })
}
