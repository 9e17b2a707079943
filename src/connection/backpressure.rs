//! How long a publisher may be paused for subscribers its messages congest.
//!
//! When a publish fills a subscriber's queue past half, the publisher's connection stops reading
//! until that subscriber drains ([`crate::session::Enqueued::Congested`]): a short burst then
//! slows the publisher rather than overflowing the queue. But every other subscriber of that
//! publisher waits too, so a subscriber that is slow, stuck or malicious must not be able to
//! throttle publishers at will — for example by subscribing to `#` and never reading, again and
//! again under fresh sessions, each of which starts a congestion episode of its own.
//!
//! Each publishing connection therefore holds a budget of pause time: a token bucket of
//! [`PAUSE_BURST`] refilled at [`PAUSE_SHARE`] of real time. A pause that ends within
//! [`FREE_PAUSE`] because the subscriber drained (it reads and caught up at once: the usual
//! case when a closed-loop publisher outruns fast readers) costs nothing; every other pause is
//! charged in full.
//! So whatever the subscribers do, a publisher is paused at most `PAUSE_BURST` at once and,
//! beyond short hiccups, at most `PAUSE_SHARE` of the time in the long run; past that, a
//! congested subscriber's overflow is dropped (and counted) instead. A subscriber that stops
//! reading costs its publishers [`crate::session::CONGESTION_STALL`] once per congestion
//! episode (the wait ends as soon as its queue stops shrinking).

use std::time::Duration;

use tokio::time::Instant;

use crate::session::CONGESTION_GRACE;

/// The longest pause at once: one congestion grace period.
pub const PAUSE_BURST: Duration = CONGESTION_GRACE;

/// The share of time a publisher may spend in long pauses (10 %: a publisher keeps at least
/// 90 % of its rate whatever its subscribers do, beyond pauses shorter than [`FREE_PAUSE`]).
pub const PAUSE_SHARE: f64 = 0.10;

/// Pauses at most this long are not charged: the subscriber caught up at once.
pub const FREE_PAUSE: Duration = crate::session::CONGESTION_STALL;

/// Pauses shorter than this are not worth a wake-up: the budget is spent.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// The pause budget of one publishing connection.
#[derive(Debug)]
pub(crate) struct PauseBudget {
    /// Pause time available now.
    credit: Duration,
    /// When `credit` was last brought up to date.
    updated: Instant,
    /// When the pause under way began (`None`: not paused for congestion).
    started: Option<Instant>,
}

impl PauseBudget {
    /// A full budget.
    pub fn new(now: Instant) -> PauseBudget {
        PauseBudget {
            credit: PAUSE_BURST,
            updated: now,
            started: None,
        }
    }

    /// Starts a pause: returns how long it may last at most, or `None` when the budget is
    /// spent (the publisher must not pause).
    pub fn begin(&mut self, now: Instant) -> Option<Duration> {
        let refill = now
            .saturating_duration_since(self.updated)
            .mul_f64(PAUSE_SHARE);
        self.credit = (self.credit + refill).min(PAUSE_BURST);
        self.updated = now;
        if self.credit < MIN_PAUSE {
            return None;
        }
        self.started = Some(now);
        Some(self.credit)
    }

    /// Ends the pause under way (if any), charging its length to the budget unless the
    /// subscriber `drained` within [`FREE_PAUSE`].
    pub fn end(&mut self, now: Instant, drained: bool) {
        if let Some(started) = self.started.take() {
            let paused = now.saturating_duration_since(started);
            if !drained || paused > FREE_PAUSE {
                self.credit = self.credit.saturating_sub(paused);
                // The paused time does not refill the budget.
                self.updated = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_fresh_budget_allows_one_full_burst() {
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        assert_eq!(b.begin(t0), Some(PAUSE_BURST));
        b.end(t0 + PAUSE_BURST, false);
        // Spent: no pause right after.
        assert_eq!(b.begin(t0 + PAUSE_BURST), None);
    }

    #[test]
    fn the_budget_refills_at_the_pause_share() {
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        b.begin(t0);
        b.end(t0 + PAUSE_BURST, false);
        let t1 = t0 + PAUSE_BURST + 1000 * MS;
        // One second later: 10 % of it.
        assert_eq!(b.begin(t1), Some(100 * MS));
        b.end(t1 + 40 * MS, false);
        assert_eq!(b.begin(t1 + 40 * MS), Some(60 * MS));
    }

    #[test]
    fn a_long_pause_costs_its_length() {
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        b.begin(t0);
        b.end(t0 + 30 * MS, true);
        assert_eq!(b.begin(t0 + 30 * MS), Some(PAUSE_BURST - 30 * MS));
    }

    #[test]
    fn short_pauses_are_free() {
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        let mut now = t0;
        for _ in 0..10_000 {
            assert!(b.begin(now).is_some());
            now += FREE_PAUSE;
            b.end(now, true);
        }
        assert_eq!(b.begin(now), Some(PAUSE_BURST));
    }

    #[test]
    fn a_short_pause_that_did_not_drain_is_charged() {
        // A stalled subscriber, or a pause cut short by a small remaining budget.
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        b.begin(t0);
        b.end(t0 + 5 * MS, false);
        assert_eq!(b.begin(t0 + 5 * MS), Some(PAUSE_BURST - 5 * MS));
    }

    #[test]
    fn the_credit_never_exceeds_one_burst() {
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        assert_eq!(b.begin(t0 + 3600 * 1000 * MS), Some(PAUSE_BURST));
    }

    #[test]
    fn paused_time_in_the_long_run_is_bounded_by_the_share() {
        // A subscriber that congests the publisher after every millisecond of reading, and
        // does not catch up before the pause's limit.
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        let mut now = t0;
        let mut paused = Duration::ZERO;
        while now < t0 + 60 * 1000 * MS {
            if let Some(limit) = b.begin(now) {
                now += limit;
                paused += limit;
                b.end(now, false);
            }
            now += MS;
        }
        let share = paused.as_secs_f64() / (now - t0).as_secs_f64();
        assert!(share <= PAUSE_SHARE + 0.01, "paused {share:.3} of the time");
    }

    #[test]
    fn ending_without_a_pause_changes_nothing() {
        let t0 = Instant::now();
        let mut b = PauseBudget::new(t0);
        b.end(t0 + 100 * MS, false);
        assert_eq!(b.begin(t0 + 100 * MS), Some(PAUSE_BURST));
    }
}
