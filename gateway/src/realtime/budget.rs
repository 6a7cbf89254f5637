//! A token bucket: the per-connection allowance for messages and for bad
//! messages, so a flood or a broken client is closed (1008) instead of
//! costing the gateway without bound.

use std::time::{Duration, Instant};

pub struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        // credit from `excuse` above the burst is spent, not cut back
        let cap = self.burst.max(self.tokens);
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(cap);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Budget {
    /// Credits time the reader spent on the server's own work (waiting for room in a saturated
    /// worker pool): the client's messages queued in the socket meanwhile and are read back to
    /// back, but were not sent as a burst.
    pub fn excuse(&mut self, spent: Duration) {
        self.tokens += spent.as_secs_f64() * self.rate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused() {
        let mut b = Budget::new(0.0, 3.0);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
    }

    #[test]
    fn time_spent_waiting_on_the_server_is_not_counted_as_a_burst() {
        let mut b = Budget::new(1_000.0, 2.0);
        b.excuse(Duration::from_millis(5));
        // the burst, and the five messages the client sent while the reader waited
        assert!((0..7).all(|_| b.take()));
        assert!(!b.take());
    }
}
