//! Per-connection publish rate limits (`limits.publish_rate_messages`, `publish_rate_bytes`):
//! token buckets holding one second's worth, refilled continuously. A connection that has
//! spent its tokens is not disconnected: its socket is not read until the debt is repaid, so
//! TCP slows the client down and other clients do not notice.

use std::time::{Duration, Instant};

/// One token bucket.
#[derive(Debug)]
struct Bucket {
    /// Tokens per second (and the bucket's capacity).
    rate: f64,
    /// Tokens available; negative when in debt.
    tokens: f64,
}

impl Bucket {
    fn new(rate: u32) -> Option<Bucket> {
        (rate > 0).then(|| Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
        })
    }

    fn refill(&mut self, elapsed: f64) {
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
    }

    /// Spends `n` tokens; returns how long until the balance is back to zero.
    fn spend(&mut self, n: f64) -> Duration {
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The publish rate limits of one connection.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    last: Instant,
}

impl RateLimiter {
    /// A limiter, or `None` when both limits are 0 (unlimited).
    pub fn new(messages_per_sec: u32, bytes_per_sec: u32) -> Option<Box<RateLimiter>> {
        let messages = Bucket::new(messages_per_sec);
        let bytes = Bucket::new(bytes_per_sec);
        (messages.is_some() || bytes.is_some()).then(|| {
            Box::new(RateLimiter {
                messages,
                bytes,
                last: Instant::now(),
            })
        })
    }

    /// Accounts one PUBLISH of `payload` bytes; returns how long reading must pause (zero
    /// while under the limits).
    pub fn on_publish(&mut self, payload: usize) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut wait = Duration::ZERO;
        if let Some(b) = &mut self.messages {
            b.refill(elapsed);
            wait = wait.max(b.spend(1.0));
        }
        if let Some(b) = &mut self.bytes {
            b.refill(elapsed);
            wait = wait.max(b.spend(payload as f64));
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_is_no_limiter() {
        assert!(RateLimiter::new(0, 0).is_none());
    }

    #[test]
    fn a_burst_of_one_second_passes_then_the_debt_is_timed() {
        let mut r = RateLimiter::new(10, 0).expect("limited");
        for _ in 0..10 {
            assert_eq!(r.on_publish(1), Duration::ZERO, "within the burst");
        }
        let wait = r.on_publish(1);
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(110),
            "one message over 10/s costs ~100 ms: {wait:?}"
        );
    }

    #[test]
    fn bytes_limit_the_rate_of_large_payloads() {
        let mut r = RateLimiter::new(0, 1000).expect("limited");
        assert_eq!(r.on_publish(1000), Duration::ZERO);
        let wait = r.on_publish(500);
        assert!(wait >= Duration::from_millis(450), "{wait:?}");
    }
}
