//! Per-publisher sequence tracking on the subscriber side: unique deliveries, duplicates and
//! out-of-order arrivals, in constant memory.
//!
//! Everything below `base` has arrived (or was given up on, see below); a ring of
//! [`WINDOW`] bits remembers which sequence numbers at or above `base` have arrived. A gap that
//! never fills (a lost QoS 0 message) would pin `base`, so when a number arrives [`WINDOW`] or
//! more past it the window slides and the gap is forgotten: a copy arriving that late would be
//! counted as a duplicate. Over one TCP connection that would take [`WINDOW`] later messages
//! overtaking it, which a broker that keeps per-topic order never does.

/// Sequence numbers remembered above the contiguous low mark.
pub const WINDOW: u64 = 1 << 14;

/// The words of the bit ring.
const WORDS: usize = (WINDOW / 64) as usize;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First copy of this sequence number.
    New,
    /// Seen before.
    Duplicate,
}

/// The tracker of one publisher's sequence as one subscriber sees it.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    base: u64,
    max_seen: Option<u64>,
    bits: Box<[u64; WORDS]>,
    /// First copies received.
    pub unique: u64,
    /// Copies of sequence numbers already received.
    pub duplicates: u64,
    /// First copies that arrived after a higher sequence number.
    pub out_of_order: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            base: 0,
            max_seen: None,
            bits: Box::new([0; WORDS]),
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
        }
    }
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq < self.base {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        if seq - self.base >= WINDOW {
            let new_base = seq - WINDOW + 1;
            if new_base - self.base >= WINDOW {
                self.bits.fill(0);
            } else {
                for s in self.base..new_base {
                    self.clear(s);
                }
            }
            self.base = new_base;
        }
        if self.get(seq) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.set(seq);
        self.unique += 1;
        match self.max_seen {
            Some(max) if seq < max => self.out_of_order += 1,
            _ => self.max_seen = Some(seq),
        }
        while self.get(self.base) {
            self.clear(self.base);
            self.base += 1;
        }
        Arrival::New
    }

    fn slot(seq: u64) -> (usize, u64) {
        let bit = seq % WINDOW;
        ((bit / 64) as usize % WORDS, 1 << (bit % 64))
    }

    fn get(&self, seq: u64) -> bool {
        let (word, mask) = Self::slot(seq);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }

    fn set(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }

    fn clear(&mut self, seq: u64) {
        let (word, mask) = Self::slot(seq);
        if let Some(w) = self.bits.get_mut(word) {
            *w &= !mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_all_new() {
        let mut t = SeqTracker::default();
        for s in 0..3 * WINDOW {
            assert_eq!(t.record(s), Arrival::New);
        }
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (3 * WINDOW, 0, 0));
    }

    #[test]
    fn duplicates_are_counted_below_and_above_the_low_mark() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(1);
        t.record(5);
        assert_eq!(t.record(1), Arrival::Duplicate, "below base");
        assert_eq!(t.record(5), Arrival::Duplicate, "inside the window");
        assert_eq!((t.unique, t.duplicates), (3, 2));
    }

    #[test]
    fn late_arrival_is_out_of_order_but_new() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(2);
        assert_eq!(t.record(1), Arrival::New);
        assert_eq!((t.unique, t.out_of_order), (3, 1));
        assert_eq!(t.record(3), Arrival::New);
        assert_eq!(t.out_of_order, 1);
    }

    #[test]
    fn gaps_do_not_pin_the_window() {
        let mut t = SeqTracker::default();
        // seq 0 is lost; everything after arrives, far more than the window holds
        for s in 1..=4 * WINDOW {
            assert_eq!(t.record(s), Arrival::New, "seq {s}");
        }
        assert_eq!(t.unique, 4 * WINDOW);
        assert_eq!(t.duplicates, 0);
        // a huge jump clears the whole ring
        assert_eq!(t.record(100 * WINDOW), Arrival::New);
        assert_eq!(t.record(100 * WINDOW), Arrival::Duplicate);
        assert_eq!(t.record(100 * WINDOW + 1), Arrival::New);
        assert_eq!(t.unique, 4 * WINDOW + 2);
    }
}
