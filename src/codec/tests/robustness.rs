//! Arbitrary and damaged input never panics; size limits apply before the body arrives.

use bytes::BytesMut;
use proptest::prelude::*;

use super::strategies::versioned_packet;
use super::{VERSIONS, decode_one, to_bytes};
use crate::codec::{DecodeError, ProtocolVersion, decode};

/// Maximum packet sizes tried on arbitrary input.
const MAX_SIZES: [usize; 7] = [0, 1, 2, 5, 64, 300, usize::MAX];

/// Decodes from `bytes` until the decoder errors or waits, checking that every success
/// consumes bytes and survives a re-encoding, and that waiting consumes none. Returns how the
/// loop ended.
fn drain(bytes: &[u8], version: ProtocolVersion, max: usize) -> Result<Option<()>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before, "a packet consumed nothing");
                // Whatever decodes re-encodes to something that decodes to the same packet.
                let again = to_bytes(&packet, version);
                assert_eq!(decode_one(&again, version), Ok(packet));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "waiting consumed bytes");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for v in VERSIONS {
            for max in MAX_SIZES {
                let _ = drain(&bytes, v, max);
            }
        }
    }

    #[test]
    fn arbitrary_bodies_behind_valid_headers_never_panic(
        first in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // Random bytes rarely form a fixed header; this drives every body decoder.
        let n = body.len();
        let mut bytes = if n < 128 {
            vec![first, n as u8]
        } else {
            vec![first, (n & 0x7F) as u8 | 0x80, (n >> 7) as u8]
        };
        bytes.extend_from_slice(&body);
        for v in VERSIONS {
            let _ = drain(&bytes, v, usize::MAX);
        }
    }

    #[test]
    fn damaged_packets_never_panic(
        (version, packet) in versioned_packet(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = to_bytes(&packet, version).to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        for v in VERSIONS {
            let _ = drain(&bytes, v, usize::MAX);
            let _ = drain(&bytes[..cut.index(bytes.len())], v, usize::MAX);
        }
    }
}

#[test]
fn packet_too_large_before_the_body_arrives() {
    // Remaining length 268,435,455 announced with four bytes: the body is not there.
    let header = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V3_1_1, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 5 + 268_435_455,
            max: 1024
        })
    );
    // Total size counts the fixed header: 2 + 100 bytes.
    let header = [0x30, 100];
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V5, 101),
        Err(DecodeError::PacketTooLarge {
            size: 102,
            max: 101
        })
    );
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(decode(&mut buf, ProtocolVersion::V5, 102), Ok(None));
    assert_eq!(buf.len(), 2);
    // Even a CONNECT is measured before its level is known.
    let mut buf = BytesMut::from(&[0x10, 0x80, 0x01][..]);
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V3_1_1, 100),
        Err(DecodeError::PacketTooLarge {
            size: 131,
            max: 100
        })
    );
}

#[test]
fn incomplete_fixed_headers_wait() {
    for bytes in [
        &[][..],
        &[0x30],
        &[0x30, 0x80],
        &[0x30, 0xFF, 0xFF],
        &[0x30, 0xFF, 0xFF, 0xFF],
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, ProtocolVersion::V3_1_1, 10), Ok(None));
        assert_eq!(&buf[..], bytes);
    }
}

#[test]
fn zero_remaining_length_packets_are_whole() {
    let mut buf = BytesMut::from(&b"\xC0\x00\xD0\x00"[..]);
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V3_1_1, 2),
        Ok(Some(crate::codec::Packet::PingReq))
    );
    assert_eq!(
        decode(&mut buf, ProtocolVersion::V3_1_1, 2),
        Ok(Some(crate::codec::Packet::PingResp))
    );
    assert_eq!(decode(&mut buf, ProtocolVersion::V3_1_1, 2), Ok(None));
}
