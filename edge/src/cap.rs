//! A cap on open client connections: past it a connection is answered 503 and closed, so a
//! flood costs a write, not a task, and the server recovers as soon as connections close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What a refused HTTP client reads; an h2c or TLS client just sees the close.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n";
/// A refused client that does not read gets no more than this.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct ConnLimit {
    open: AtomicUsize,
    max: usize,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnLimit>);

impl ConnLimit {
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A permit, or None when `max` connections are open.
    pub fn try_open(self: &Arc<Self>) -> Option<ConnPermit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnPermit(Arc::clone(self))),
                Err(now) => open = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Answers a connection over the cap with a short 503 (when `http`) and closes it.
    pub async fn refuse<S: AsyncWrite + Unpin>(mut io: S, http: bool) {
        if http {
            let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                io.write_all(REFUSAL).await?;
                io.shutdown().await
            })
            .await;
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_cap_and_come_back_when_dropped() {
        let limit = ConnLimit::new(2);
        let a = limit.try_open().expect("first");
        let _b = limit.try_open().expect("second");
        assert!(limit.try_open().is_none(), "third is over the cap");
        drop(a);
        assert!(
            limit.try_open().is_some(),
            "a closed connection frees a place"
        );
    }

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
