//! The token bucket the simulator keeps per (seller, operation), as SP-API's usage plans do.
//!
//! Time is passed in as seconds on the simulator's clock, so the arithmetic is testable
//! without sleeping.

/// A token bucket: starts full at `burst`, refills `rate` tokens per second, never above `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Capacity; also the starting level.
    burst: f64,
    /// Current level, as of `updated_at`.
    tokens: f64,
    /// Simulator clock (seconds) of the last refill.
    updated_at: f64,
}

impl TokenBucket {
    /// A full bucket as of `now`. Negative or non-finite settings count as zero.
    pub(crate) fn new(rate: f64, burst: f64, now: f64) -> Self {
        let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        let burst = if burst.is_finite() {
            burst.max(0.0)
        } else {
            0.0
        };
        Self {
            rate,
            burst,
            tokens: burst,
            updated_at: now,
        }
    }

    /// The refill rate, sent back in `x-amzn-RateLimit-Limit`.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Refills up to `now`, then takes one token if a whole one is there.
    pub(crate) fn try_take(&mut self, now: f64) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The level after refilling up to `now`.
    pub(crate) fn level(&mut self, now: f64) -> f64 {
        self.refill(now);
        self.tokens
    }

    fn refill(&mut self, now: f64) {
        // A clock that goes backwards (it does not, but cheap to guard) adds nothing.
        let elapsed = (now - self.updated_at).max(0.0);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated_at = self.updated_at.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_full_and_empties_after_burst() {
        let mut bucket = TokenBucket::new(1.0, 2.0, 0.0);
        assert!(bucket.try_take(0.0));
        assert!(bucket.try_take(0.0));
        assert!(!bucket.try_take(0.0));
    }

    #[test]
    fn refills_at_rate_and_caps_at_burst() {
        let mut bucket = TokenBucket::new(2.0, 3.0, 10.0);
        for _ in 0..3 {
            assert!(bucket.try_take(10.0));
        }
        assert!(!bucket.try_take(10.25)); // 0.5 token
        assert!(bucket.try_take(10.5)); // 1.0 token
        assert!(!bucket.try_take(10.5));
        assert!((bucket.level(11.0) - 1.0).abs() < 1e-9);
        assert!((bucket.level(1000.0) - 3.0).abs() < 1e-9, "capped at burst");
    }

    #[test]
    fn amazon_create_report_rate_is_one_per_minute() {
        let mut bucket = TokenBucket::new(0.0167, 15.0, 0.0);
        for _ in 0..15 {
            assert!(bucket.try_take(0.0));
        }
        assert!(!bucket.try_take(59.0));
        assert!(bucket.try_take(60.0));
        assert!(!bucket.try_take(60.0));
    }

    #[test]
    fn failed_takes_do_not_consume_and_clock_going_back_is_harmless() {
        let mut bucket = TokenBucket::new(1.0, 1.0, 5.0);
        assert!(bucket.try_take(5.0));
        assert!(!bucket.try_take(5.5));
        assert!(!bucket.try_take(4.0));
        assert!(bucket.try_take(6.0));
    }

    #[test]
    fn bad_settings_never_grant() {
        let mut bucket = TokenBucket::new(f64::NAN, -3.0, 0.0);
        assert!(!bucket.try_take(1e9));
        assert_eq!(bucket.rate(), 0.0);
    }
}
