//! The 16 bytes at the start of every payload: when it was sent, by whom, and its number.
//!
//! Bytes 0..8: send time in nanoseconds since the run's shared start instant (big endian).
//! Bytes 8..16: the publisher index in the top 24 bits and its sequence number (from 0) in the
//! low 40 bits, so a subscriber of a topic shared by many publishers can still track each one.

/// Bytes a stamp occupies at the start of the payload.
pub const STAMP_LEN: usize = 16;

/// Bits of the second word that hold the sequence number.
const SEQ_BITS: u32 = 40;

/// Publishers one run can tell apart (the top 24 bits).
pub const MAX_PUBLISHERS: u32 = 1 << (64 - SEQ_BITS);

/// One decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, nanoseconds since the run's start.
    pub sent_ns: u64,
    /// Index of the publisher that sent it.
    pub publisher: u32,
    /// The publisher's sequence number of this message, from 0.
    pub seq: u64,
}

/// Writes `stamp` into the first [`STAMP_LEN`] bytes of `payload`; does nothing if it is shorter.
pub fn write(payload: &mut [u8], stamp: Stamp) {
    let word = (u64::from(stamp.publisher) << SEQ_BITS) | (stamp.seq & ((1 << SEQ_BITS) - 1));
    if let Some(head) = payload.get_mut(..STAMP_LEN) {
        let (time, id) = head.split_at_mut(8);
        time.copy_from_slice(&stamp.sent_ns.to_be_bytes());
        id.copy_from_slice(&word.to_be_bytes());
    }
}

/// Reads the stamp at the start of `payload`, `None` if it is too short to hold one.
pub fn read(payload: &[u8]) -> Option<Stamp> {
    let time: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let word: [u8; 8] = payload.get(8..STAMP_LEN)?.try_into().ok()?;
    let word = u64::from_be_bytes(word);
    Some(Stamp {
        sent_ns: u64::from_be_bytes(time),
        publisher: u32::try_from(word >> SEQ_BITS).ok()?,
        seq: word & ((1 << SEQ_BITS) - 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for stamp in [
            Stamp {
                sent_ns: 0,
                publisher: 0,
                seq: 0,
            },
            Stamp {
                sent_ns: u64::MAX,
                publisher: MAX_PUBLISHERS - 1,
                seq: (1 << SEQ_BITS) - 1,
            },
            Stamp {
                sent_ns: 123_456_789,
                publisher: 7,
                seq: 42,
            },
        ] {
            let mut payload = [0xAAu8; 20];
            write(&mut payload, stamp);
            assert_eq!(read(&payload), Some(stamp));
            assert_eq!(payload[16..], [0xAA; 4], "bytes after the stamp untouched");
        }
    }

    #[test]
    fn short_payloads_have_no_stamp() {
        assert_eq!(read(&[0u8; 15]), None);
        let mut short = [1u8; 10];
        write(
            &mut short,
            Stamp {
                sent_ns: 5,
                publisher: 1,
                seq: 1,
            },
        );
        assert_eq!(short, [1u8; 10]);
    }

    #[test]
    fn publisher_and_sequence_do_not_overlap() {
        let mut payload = [0u8; 16];
        write(
            &mut payload,
            Stamp {
                sent_ns: 1,
                publisher: 3,
                seq: (1 << SEQ_BITS) - 1,
            },
        );
        let got = read(&payload);
        assert_eq!(
            got.map(|s| (s.publisher, s.seq)),
            Some((3, (1 << SEQ_BITS) - 1))
        );
    }
}
