//! Fuzz target for the MQTT decoder.
//!
//! Run it from the repository root with cargo-fuzz and a nightly toolchain:
//!
//! ```text
//! cargo install cargo-fuzz            # once
//! cargo +nightly fuzz run decode fuzz/corpus/decode fuzz/seeds/decode
//! ```
//!
//! Every input is decoded at each protocol level, packet after packet, until the decoder asks
//! for more bytes or reports an error. Checked:
//! - the decoder never panics;
//! - a packet it returns consumed exactly the frame [`frame_len`] announces, and waiting for
//!   more bytes (`Ok(None)`) consumes none;
//! - the same frame one byte short is "need more bytes", and with a maximum packet size one
//!   byte below its length it is refused as too large (before its body is read);
//! - every packet it returns survives an encode → decode round trip unchanged, and
//!   [`encoded_len`] predicts the size of its encoding.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_server::codec::{DecodeError, ProtocolVersion, decode, encode, encoded_len, frame_len};

/// The maximum packet size the fuzzer decodes with: large enough for any input it makes.
const MAX_PACKET_SIZE: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    for version in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            let frame = buf.clone();
            match decode(&mut buf, version, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => {
                    let consumed = before - buf.len();
                    assert!(consumed > 0, "a decoded packet consumed no bytes");
                    assert_eq!(frame_len(&frame), Some(consumed), "frame_len disagrees");
                    let whole = frame.get(..consumed).unwrap_or_default();
                    let short = whole.get(..consumed - 1).unwrap_or_default();
                    assert!(
                        matches!(
                            decode(&mut BytesMut::from(short), version, MAX_PACKET_SIZE),
                            Ok(None)
                        ),
                        "a frame one byte short is not incomplete"
                    );
                    assert!(
                        matches!(
                            decode(&mut BytesMut::from(whole), version, consumed - 1),
                            Err(DecodeError::PacketTooLarge { .. })
                        ),
                        "a frame over the maximum packet size is not refused"
                    );
                    let mut again = BytesMut::new();
                    encode(&packet, version, &mut again).expect("a decoded packet re-encodes");
                    assert_eq!(
                        encoded_len(&packet, version),
                        again.len(),
                        "encoded_len is wrong"
                    );
                    let decoded = decode(&mut again, version, usize::MAX)
                        .expect("a re-encoded packet decodes");
                    assert_eq!(
                        decoded.as_ref(),
                        Some(&packet),
                        "round trip changed the packet"
                    );
                    assert!(again.is_empty(), "re-encoding wrote trailing bytes");
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "waiting for more bytes consumed some");
                    break;
                }
                Err(_) => break,
            }
        }
    }
});
