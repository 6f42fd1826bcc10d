//! Knative's autoscale sample: `?sleep=MS` sleeps, `?prime=N` finds the largest prime below
//! N, `?bloat=MB` holds that much memory for the request; the answer says what it did.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::StatusCode;
use knoxy_apps::{bloat, largest_prime_below, serve, text, Work};

fn main() -> ExitCode {
    serve(
        "knoxy-autoscale",
        |req: http::Request<hyper::body::Incoming>| async move {
            let work = match Work::from_query(req.uri().query()) {
                Ok(w) => w,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            let mut out = String::new();
            let held = (work.bloat_mb > 0).then(|| bloat(work.bloat_mb));
            if held.is_some() {
                let _ = writeln!(out, "Allocated {} Mb of memory.", work.bloat_mb);
            }
            if work.prime > 0 {
                let n = work.prime;
                let found = tokio::task::spawn_blocking(move || largest_prime_below(n)).await;
                match found {
                    Ok(Some(p)) => {
                        let _ = writeln!(out, "The largest prime less than {n} is {p}.");
                    }
                    _ => {
                        let _ = writeln!(out, "There are no primes smaller than {n}.");
                    }
                }
            }
            if work.sleep_ms > 0 {
                let started = Instant::now();
                tokio::time::sleep(Duration::from_millis(work.sleep_ms)).await;
                let slept = started.elapsed().as_secs_f64() * 1e3;
                let _ = writeln!(out, "Slept for {slept:.2} milliseconds.");
            }
            drop(held);
            text(StatusCode::OK, out)
        },
    )
}
