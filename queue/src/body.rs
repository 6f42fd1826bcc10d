//! Response bodies: the queue's own short answers, and the user container's body relayed
//! frame by frame under the revision's total and idle timeouts (contract §5).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::handler::Guard;
use knoxy_upstream::{Lease, LeasedBody};

/// Appended to a response whose headers were already sent when a timeout fired.
pub const TIMEOUT_BODY: &str = "request timeout";

pin_project_lite::pin_project! {
    #[project = BodyProj]
    pub enum Body {
        Full { data: Option<Bytes> },
        Proxy { #[pin] inner: ProxyBody },
    }
}

pin_project_lite::pin_project! {
    pub struct ProxyBody {
        #[pin]
        inner: LeasedBody,
        timer: Pin<Box<Sleep>>,
        total: Instant,
        idle: Option<Duration>,
        last_write: Instant,
        done: bool,
        guard: Guard,
    }
}

impl Body {
    pub fn full(data: impl Into<Bytes>) -> Body {
        let data = data.into();
        Body::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub fn empty() -> Body {
        Body::Full { data: None }
    }

    /// Relays `inner`; `timer` is re-armed for the total and idle deadlines, `lease` returns
    /// the upstream connection to the pool at the end, `guard` is released when the body drops.
    pub fn proxy(
        inner: Incoming,
        mut timer: Pin<Box<Sleep>>,
        total: Instant,
        idle: Option<Duration>,
        lease: Option<Lease>,
        guard: Guard,
    ) -> Body {
        let now = Instant::now();
        timer.as_mut().reset(next_deadline(total, idle, now));
        Body::Proxy {
            inner: ProxyBody {
                inner: LeasedBody::new(inner, lease),
                timer,
                total,
                idle,
                last_write: now,
                done: false,
                guard,
            },
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Proxy { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full { data } => data.is_none(),
            Body::Proxy { inner } => inner.done || inner.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Proxy { inner } => inner.inner.size_hint(),
        }
    }
}

impl ProxyBody {
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.guard.sent(data.len());
                }
                if this.idle.is_some() {
                    *this.last_write = Instant::now();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Pending => {}
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let now = Instant::now();
            let next = next_deadline(*this.total, *this.idle, *this.last_write);
            if next > now {
                // Data flowed since the timer was set: the idle deadline moved on.
                this.timer.as_mut().reset(next);
                continue;
            }
            // The status is already sent: append the timeout and end the response (contract §5).
            let which = if now >= *this.total {
                "Request timeout"
            } else {
                "Idle timeout"
            };
            crate::log::warning!("{which} after the response started");
            // The connection (still leased, mid-response) is closed when the body drops.
            *this.done = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                TIMEOUT_BODY.as_bytes(),
            )))));
        }
    }
}

/// The earliest of the total deadline and the idle deadline counted from `last_write`.
pub fn next_deadline(total: Instant, idle: Option<Duration>, last_write: Instant) -> Instant {
    match idle {
        Some(idle) => total.min(last_write + idle),
        None => total,
    }
}
