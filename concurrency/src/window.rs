//! Time-weighted concurrency over a reporting window (Knative's `RequestStats`): what the
//! queue reports for its pod and the activator for each revision it holds requests of.

use std::time::Instant;

/// Requests of one pod, or of one revision through one activator, since the window opened.
#[derive(Debug, Clone)]
pub struct Window {
    opened: Instant,
    last_change: Instant,
    concurrency: u32,
    proxied_concurrency: u32,
    /// Σ concurrency × seconds since `opened`.
    weighted: f64,
    proxied_weighted: f64,
    requests: u32,
    proxied_requests: u32,
}

/// A closed window: the average concurrencies over its length, and the requests that arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Averages {
    pub concurrency: f64,
    pub proxied_concurrency: f64,
    pub requests: u32,
    pub proxied_requests: u32,
}

impl Window {
    pub fn new(now: Instant) -> Window {
        Window {
            opened: now,
            last_change: now,
            concurrency: 0,
            proxied_concurrency: 0,
            weighted: 0.0,
            proxied_weighted: 0.0,
            requests: 0,
            proxied_requests: 0,
        }
    }

    /// A request arrived; `proxied` when the activator sent it (`K-Proxy-Request: activator`).
    pub fn enter(&mut self, now: Instant, proxied: bool) {
        self.advance(now);
        self.concurrency += 1;
        self.requests += 1;
        if proxied {
            self.proxied_concurrency += 1;
            self.proxied_requests += 1;
        }
    }

    /// A request finished: answered, or abandoned by its client.
    pub fn leave(&mut self, now: Instant, proxied: bool) {
        self.advance(now);
        self.concurrency = self.concurrency.saturating_sub(1);
        if proxied {
            self.proxied_concurrency = self.proxied_concurrency.saturating_sub(1);
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.concurrency
    }

    /// Closes the window at `now` and opens the next: requests in flight carry over, counts
    /// start again.
    pub fn close(&mut self, now: Instant) -> Averages {
        self.advance(now);
        let secs = now.saturating_duration_since(self.opened).as_secs_f64();
        let average = |sum: f64| if secs > 0.0 { sum / secs } else { 0.0 };
        let closed = Averages {
            concurrency: average(self.weighted),
            proxied_concurrency: average(self.proxied_weighted),
            requests: self.requests,
            proxied_requests: self.proxied_requests,
        };
        *self = Window {
            concurrency: self.concurrency,
            proxied_concurrency: self.proxied_concurrency,
            ..Window::new(now)
        };
        closed
    }

    fn advance(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_change)
            .as_secs_f64();
        self.weighted += f64::from(self.concurrency) * dt;
        self.proxied_weighted += f64::from(self.proxied_concurrency) * dt;
        self.last_change = self.last_change.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn overlapping_requests_average_over_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.enter(t0, false);
        w.enter(t0, true);
        w.leave(t0 + ms(500), false);
        let a = w.close(t0 + ms(1000));
        assert!((a.concurrency - 1.5).abs() < 1e-9, "{a:?}");
        assert!((a.proxied_concurrency - 1.0).abs() < 1e-9, "{a:?}");
        assert_eq!((a.requests, a.proxied_requests), (2, 1));
        // The proxied request is still in flight: it carries over; the counts do not.
        let a = w.close(t0 + ms(2000));
        assert_eq!((a.concurrency, a.proxied_concurrency), (1.0, 1.0));
        assert_eq!((a.requests, a.proxied_requests), (0, 0));
        assert_eq!(w.in_flight(), 1);
    }

    #[test]
    fn a_request_shorter_than_the_window_counts_for_its_share() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.enter(t0 + ms(100), false);
        w.leave(t0 + ms(350), false);
        let a = w.close(t0 + ms(1000));
        assert!((a.concurrency - 0.25).abs() < 1e-9, "{a:?}");
        assert_eq!(a.requests, 1);
    }

    #[test]
    fn an_empty_window_and_a_stray_leave_are_zero_not_a_panic() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        assert_eq!(w.close(t0), Averages::default());
        w.leave(t0 + ms(10), true);
        assert_eq!(w.close(t0 + ms(20)), Averages::default());
        // A clock read before the last change (another thread's `now`) does not go backwards.
        w.enter(t0 + ms(30), false);
        w.leave(t0 + ms(25), false);
        assert_eq!(w.in_flight(), 0);
    }
}
