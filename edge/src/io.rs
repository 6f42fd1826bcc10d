//! The client's stream as the HTTP engine sees it: the bytes read to choose the protocol are
//! replayed first, and the first byte of a request that arrives on an idle connection is
//! noted (it starts that request's header deadline). On HTTP/1, the version of each
//! request line is judged as Go's server judges it (hyper refuses all but 1.0 and 1.1 with
//! a bare 400): `HTTP/1.x` is served as 1.1, another major version gets 505.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Activity;

/// Long enough for the HTTP/2 client preface.
pub(crate) const SNIFF_LEN: usize = 24;

pub(crate) struct ClientIo<S> {
    inner: S,
    /// HTTP/1: request lines are looked at.
    h1: bool,
    /// The end of the request line read so far (its version), while one is being read.
    line: Option<Tail>,
    sniffed: [u8; SNIFF_LEN],
    /// `sniffed[at..len]` is still to be replayed.
    at: usize,
    len: usize,
    activity: Arc<Activity>,
}

impl<S> ClientIo<S> {
    pub(crate) fn new(
        inner: S,
        sniffed: [u8; SNIFF_LEN],
        len: usize,
        activity: Arc<Activity>,
        h1: bool,
    ) -> Self {
        ClientIo {
            inner,
            h1,
            // The first bytes of an HTTP/1 connection are a request line.
            line: h1.then(Tail::default),
            sniffed,
            at: 0,
            len,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = if this.at < this.len {
            let n = (this.len - this.at).min(buf.remaining());
            buf.put_slice(&this.sniffed[this.at..this.at + n]);
            this.at += n;
            Poll::Ready(Ok(()))
        } else {
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if buf.filled().len() > before && this.activity.read_some() && this.h1 {
                this.line = Some(Tail::default());
            }
            polled
        };
        if let Some(tail) = &mut this.line {
            if let Some(done) = tail.scan(&mut buf.filled_mut()[before..]) {
                if done == Version::Refused {
                    this.activity.refuse_version();
                }
                this.line = None;
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the request line's version says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// Served (1.0, 1.1; a later 1.x was rewritten to 1.1); or not a version hyper will
    /// take, which hyper refuses itself.
    Served,
    /// Another major version: rewritten to 1.1 so hyper parses the head, and answered 505.
    Refused,
}

/// The last bytes of a request line, kept across reads until its end.
#[derive(Default)]
pub(crate) struct Tail {
    last: [u8; 10],
    len: usize,
}

impl Tail {
    /// Scans bytes just read; at the line's end, judges (and if need be rewrites) its
    /// version. A version split across reads is left to hyper.
    pub(crate) fn scan(&mut self, read: &mut [u8]) -> Option<Version> {
        let Some(end) = read.iter().position(|b| *b == b'\n') else {
            for b in read.iter() {
                self.push(*b);
            }
            return None;
        };
        let line_end = if end > 0 && read[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if line_end < 8 {
            return Some(Version::Served); // the version began in an earlier read
        }
        let version = &mut read[line_end - 8..line_end];
        Some(match crate::conform::check_version(version) {
            Ok(()) if version[7] != b'0' && version[7] != b'1' => {
                version[7] = b'1';
                Version::Served
            }
            Ok(()) => Version::Served,
            Err(r) if r.status == http::StatusCode::HTTP_VERSION_NOT_SUPPORTED => {
                version.copy_from_slice(b"HTTP/1.1");
                Version::Refused
            }
            Err(_) => Version::Served,
        })
    }

    fn push(&mut self, b: u8) {
        if self.len == self.last.len() {
            self.last.copy_within(1.., 0);
            self.len -= 1;
        }
        self.last[self.len] = b;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_versions_are_judged_as_go_judges_them() {
        for (line, want, after) in [
            ("GET / HTTP/1.1\r\n", Version::Served, "GET / HTTP/1.1\r\n"),
            ("GET / HTTP/1.0\n", Version::Served, "GET / HTTP/1.0\n"),
            (
                "GET /v HTTP/1.2\r\nHost: a\r\n",
                Version::Served,
                "GET /v HTTP/1.1\r\nHost: a\r\n",
            ),
            ("GET / HTTP/2.0\r\n", Version::Refused, "GET / HTTP/1.1\r\n"),
            ("GET / HTTP/0.9\r\n", Version::Refused, "GET / HTTP/1.1\r\n"),
            (
                "GET / HTTP/1.10\r\n",
                Version::Served,
                "GET / HTTP/1.10\r\n",
            ),
            ("GET / junk\r\n", Version::Served, "GET / junk\r\n"),
        ] {
            let mut bytes = line.as_bytes().to_vec();
            assert_eq!(Tail::default().scan(&mut bytes), Some(want), "{line:?}");
            assert_eq!(String::from_utf8_lossy(&bytes), after, "{line:?}");
        }
        let mut tail = Tail::default();
        assert_eq!(
            tail.scan(&mut b"GET /a-long-path".to_vec()),
            None,
            "no line end yet"
        );
        assert_eq!(
            tail.scan(&mut b" HTTP/2.0\r\n".to_vec()),
            Some(Version::Refused)
        );
    }
}
