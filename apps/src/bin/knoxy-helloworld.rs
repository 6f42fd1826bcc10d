//! Knative's helloworld sample: `Hello $TARGET!` (`World` when unset).

use std::process::ExitCode;

use http::StatusCode;
use knoxy_apps::{serve, text};

fn main() -> ExitCode {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "World".to_owned());
    let body = format!("Hello {target}!\n");
    serve(
        "knoxy-helloworld",
        move |_req: http::Request<hyper::body::Incoming>| {
            let body = body.clone();
            async move { text(StatusCode::OK, body) }
        },
    )
}
