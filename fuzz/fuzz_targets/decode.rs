//! Fuzz target for the MQTT decoder.
//!
//! Run it from the repository root with cargo-fuzz and a nightly toolchain:
//!
//! ```text
//! cargo install cargo-fuzz            # once
//! cargo +nightly fuzz run decode      # add `-- -max_total_time=300` to bound the run
//! ```
//!
//! Every input is decoded at each protocol level, packet after packet, until the decoder asks
//! for more bytes or reports an error. The decoder must never panic, must consume bytes for
//! every packet it returns, and every packet it returns must survive an encode → decode round
//! trip unchanged.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mqtt_server::codec::{ProtocolVersion, decode, encode};

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
            match decode(&mut buf, version, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before, "a decoded packet consumed no bytes");
                    let mut again = BytesMut::new();
                    encode(&packet, version, &mut again).expect("a decoded packet re-encodes");
                    let decoded = decode(&mut again, version, usize::MAX)
                        .expect("a re-encoded packet decodes");
                    assert_eq!(decoded.as_ref(), Some(&packet), "round trip changed the packet");
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
