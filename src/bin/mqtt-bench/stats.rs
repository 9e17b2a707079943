//! Counters shared by the running tasks (read by the progress line and the drain check) and
//! latency histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Live counters, updated by the tasks once per batch (not per message).
#[derive(Debug, Default)]
pub struct Live {
    /// Messages published.
    pub sent: AtomicU64,
    /// Publications acknowledged (PUBACK, or PUBCOMP for QoS 2).
    pub acked: AtomicU64,
    /// First copies delivered to subscribers.
    pub delivered: AtomicU64,
    /// Errors: broken connections, protocol violations, foreign messages.
    pub errors: AtomicU64,
    /// Churn operations (SUBSCRIBE or UNSUBSCRIBE acknowledged).
    pub ops: AtomicU64,
    /// Connections established (CONNACK accepted).
    pub connected: AtomicU64,
    /// Connection attempts that failed.
    pub failed: AtomicU64,
    /// Established connections that closed before the end.
    pub dropped: AtomicU64,
}

impl Live {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Highest latency a histogram tracks (larger values are recorded as this), in µs: one hour.
const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Latency {
    /// An empty histogram with `sigfig` significant decimal digits, 2 or 3 (fewer digits take
    /// less memory, for runs with many subscribers).
    pub fn new(sigfig: u8) -> Latency {
        // Constant bounds (1 <= low, high >= 2 * low, sigfig 2..=3) that the crate accepts.
        let hist = Histogram::new_with_bounds(1, MAX_TRACKABLE_US, sigfig.clamp(2, 3))
            .expect("constant histogram bounds are valid");
        Latency(hist)
    }

    /// Records a latency given in nanoseconds (sub-microsecond values count as 1 µs).
    pub fn record_ns(&mut self, ns: u64) {
        self.0.saturating_record((ns / 1000).max(1));
    }

    /// Records a duration.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds all values of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both come from `new` with the same bounds; a failure would only mean a value out of
        // range, which saturating_record already prevents.
        let _ = self.0.add(&other.0);
    }

    /// The value at quantile `q` (0.0..=1.0), in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// Percentiles, `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: self.0.len(),
            min: self.0.min(),
            mean: (self.0.mean() * 10.0).round() / 10.0,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.0.max(),
        })
    }
}

/// Latency histograms written by many tasks: a few stripes, each behind a mutex, so that
/// thousands of subscribers share a bounded amount of memory. Tasks record whole batches.
#[derive(Debug)]
pub struct SharedLatency {
    stripes: Vec<parking_lot::Mutex<Latency>>,
}

impl SharedLatency {
    /// `stripes` histograms (at least one) of 3 significant digits.
    pub fn new(stripes: usize) -> SharedLatency {
        SharedLatency {
            stripes: (0..stripes.max(1))
                .map(|_| parking_lot::Mutex::new(Latency::new(3)))
                .collect(),
        }
    }

    /// Records latencies in nanoseconds into the stripe of task `key`.
    pub fn record_batch(&self, key: usize, values_ns: &[u64]) {
        if values_ns.is_empty() {
            return;
        }
        if let Some(stripe) = self.stripes.get(key % self.stripes.len()) {
            let mut hist = stripe.lock();
            for &ns in values_ns {
                hist.record_ns(ns);
            }
        }
    }

    /// All stripes merged.
    pub fn merged(&self) -> Latency {
        let mut all = Latency::new(3);
        for stripe in &self.stripes {
            all.merge(&stripe.lock());
        }
        all
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Latency::new(3);
        for us in 1..=1000u64 {
            h.record_ns(us * 1000);
        }
        let Some(s) = h.summary() else {
            panic!("empty summary");
        };
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        assert_eq!(s.max, 1000);
    }

    #[test]
    fn merge_adds_counts_and_huge_values_saturate() {
        let mut a = Latency::new(2);
        let mut b = Latency::new(2);
        a.record_ns(500); // below 1 µs: counts as 1
        b.record(Duration::from_secs(10 * 3600));
        a.merge(&b);
        assert_eq!(a.summary().map(|s| s.count), Some(2));
        assert_eq!(a.summary().map(|s| s.min), Some(1));
        assert!(a.quantile(1.0) >= MAX_TRACKABLE_US * 99 / 100);
        assert_eq!(Latency::new(3).summary(), None);
    }

    #[test]
    fn shared_latency_merges_its_stripes() {
        let shared = SharedLatency::new(4);
        for key in 0..10 {
            shared.record_batch(key, &[1_000, 2_000]);
        }
        shared.record_batch(3, &[]);
        let all = shared.merged();
        assert_eq!(
            all.summary().map(|s| (s.count, s.min, s.max)),
            Some((20, 1, 2))
        );
        assert_eq!(SharedLatency::new(0).merged().summary(), None);
    }
}
