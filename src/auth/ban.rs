//! Failed-login accounting per client IP address: after `ban_after_failures` failures within
//! `ban_secs`, the address is refused for `ban_secs` (Mosquitto has no such feature; EMQX's
//! "flapping detect" and fail2ban-style setups are what users otherwise bolt on).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most addresses tracked at once: a flood from many addresses cannot grow the table without
/// bound (the oldest windows are forgotten first).
const MAX_TRACKED: usize = 100_000;

/// Failures of one address in the current window.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    since: Instant,
    banned_until: Option<Instant>,
}

/// The failed-login table.
#[derive(Debug)]
pub struct LoginFailures {
    threshold: u32,
    window: Duration,
    table: Mutex<HashMap<IpAddr, Record>>,
}

impl LoginFailures {
    /// A table banning after `threshold` failures (0: never) for `window`.
    pub fn new(threshold: u32, window: Duration) -> LoginFailures {
        LoginFailures {
            threshold,
            window,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let now = Instant::now();
        self.table
            .lock()
            .get(&ip)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| until > now)
    }

    /// Records a failed login from `ip`; returns true when this failure starts a ban.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let now = Instant::now();
        let mut table = self.table.lock();
        if table.len() >= MAX_TRACKED && !table.contains_key(&ip) {
            let window = self.window;
            table.retain(|_, r| {
                now.duration_since(r.since) < window || r.banned_until.is_some_and(|u| u > now)
            });
        }
        let record = table.entry(ip).or_insert(Record {
            failures: 0,
            since: now,
            banned_until: None,
        });
        if now.duration_since(record.since) >= self.window {
            *record = Record {
                failures: 0,
                since: now,
                banned_until: None,
            };
        }
        record.failures += 1;
        if record.failures >= self.threshold && record.banned_until.is_none() {
            record.banned_until = Some(now + self.window);
            return true;
        }
        false
    }

    /// Forgets the failures of `ip` after a successful login.
    pub fn record_success(&self, ip: IpAddr) {
        if self.threshold > 0 {
            self.table.lock().remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_after_the_threshold_and_only_that_address() {
        let f = LoginFailures::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(!f.record_failure(a));
        assert!(!f.record_failure(a));
        assert!(!f.is_banned(a));
        assert!(f.record_failure(a), "the third failure bans");
        assert!(f.is_banned(a));
        assert!(!f.is_banned(b));
    }

    #[test]
    fn success_resets_and_zero_disables() {
        let f = LoginFailures::new(2, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        f.record_failure(a);
        f.record_success(a);
        assert!(!f.record_failure(a), "counting starts again");
        let off = LoginFailures::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            off.record_failure(a);
        }
        assert!(!off.is_banned(a));
    }

    #[test]
    fn bans_expire() {
        let f = LoginFailures::new(1, Duration::from_millis(20));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(f.record_failure(a));
        assert!(f.is_banned(a));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!f.is_banned(a));
    }
}
