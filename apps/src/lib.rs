//! The apps `knoxy local` runs in its examples, behaving as Knative's samples do: each
//! listens on `$PORT` (default 8080; `$BIND_ADDRESS`, default 127.0.0.1) for HTTP/1.1 and
//! h2c, and stops on SIGTERM or Ctrl-C.
//! `knoxy-autoscale` is Knative's autoscale sample (`?sleep=MS`, `?prime=N`, `?bloat=MB`);
//! `knoxy-helloworld` answers `Hello $TARGET!`.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Serves `answer` on `$PORT` until SIGTERM or Ctrl-C; a bad `$PORT` is an error naming it.
pub fn serve<F, Fut>(name: &str, answer: F) -> ExitCode
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let port = match std::env::var("PORT") {
        Err(_) => 8080,
        Ok(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("{name}: PORT {p:?} is not a port number");
                return ExitCode::from(64);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Loopback unless told otherwise: local instances are reached through their queue.
        let ip = std::env::var("BIND_ADDRESS")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let addr = SocketAddr::new(ip, port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{name}: listening on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bound = listener.local_addr().unwrap_or(addr);
        println!("{name}: listening on http {bound}");
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return ExitCode::SUCCESS,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let answer = answer.clone();
                            async move { Ok::<_, Infallible>(answer(req).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    })
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The autoscale sample's work for one request, from its query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Work {
    pub sleep_ms: u64,
    pub prime: u64,
    pub bloat_mb: u64,
}

/// Bounds on one request's work, so no query can take the machine down.
pub const MAX_SLEEP_MS: u64 = 600_000;
pub const MAX_PRIME: u64 = 100_000_000;
pub const MAX_BLOAT_MB: u64 = 1024;

impl Work {
    /// `sleep`, `prime` and `bloat` from a query string; an error names the bad parameter.
    pub fn from_query(query: Option<&str>) -> Result<Work, String> {
        let mut work = Work::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (slot, max) = match key {
                "sleep" => (&mut work.sleep_ms, MAX_SLEEP_MS),
                "prime" => (&mut work.prime, MAX_PRIME),
                "bloat" => (&mut work.bloat_mb, MAX_BLOAT_MB),
                _ => continue,
            };
            *slot =
                value.parse().ok().filter(|n| *n <= max).ok_or_else(|| {
                    format!("{key}={value:?} is not a whole number from 0 to {max}")
                })?;
        }
        Ok(work)
    }
}

/// The largest prime below `n`, if any (a sieve: the sample's CPU work).
pub fn largest_prime_below(n: u64) -> Option<u64> {
    let n = usize::try_from(n).ok()?;
    if n < 3 {
        return None;
    }
    let mut composite = vec![false; n];
    let mut i = 2;
    while i * i < n {
        if !composite[i] {
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
        i += 1;
    }
    (2..n).rev().find(|&k| !composite[k]).map(|k| k as u64)
}

/// Holds `mb` megabytes, every page touched, so the memory is really resident.
pub fn bloat(mb: u64) -> Vec<u8> {
    let bytes = usize::try_from(mb).unwrap_or(0).saturating_mul(1 << 20);
    let mut held = vec![0u8; bytes];
    for page in held.chunks_mut(4096) {
        page[0] = 1;
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_asks_for_work_within_bounds() {
        assert_eq!(
            Work::from_query(Some("sleep=100&prime=10000&bloat=5&x=y")),
            Ok(Work {
                sleep_ms: 100,
                prime: 10_000,
                bloat_mb: 5
            })
        );
        assert_eq!(Work::from_query(None), Ok(Work::default()));
        let e = Work::from_query(Some("bloat=99999")).expect_err("too much");
        assert!(e.contains("bloat") && e.contains("1024"), "{e}");
        assert!(Work::from_query(Some("sleep=soon")).is_err());
    }

    #[test]
    fn primes_are_found() {
        assert_eq!(largest_prime_below(10_000), Some(9973));
        assert_eq!(largest_prime_below(3), Some(2));
        assert_eq!(largest_prime_below(2), None);
    }

    #[test]
    fn bloat_holds_the_memory_asked_for() {
        assert_eq!(bloat(2).len(), 2 << 20);
        assert!(bloat(0).is_empty());
    }
}
