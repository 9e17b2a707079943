//! Codec tests: round trips, specification byte vectors, one test per validation error,
//! partial buffers and arbitrary input.

mod errors;
mod robustness;
mod roundtrip;
mod strategies;
mod vectors;

use bytes::{Bytes, BytesMut};

use super::{DecodeError, Packet, ProtocolVersion, decode, encode, encoded_len};

/// Every protocol level.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Encodes `packet`, checking that `encoded_len` predicted the size.
fn to_bytes(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("test packet encodes");
    assert_eq!(
        buf.len(),
        encoded_len(packet, version),
        "encoded_len of {packet:?}"
    );
    buf.freeze()
}

/// Decodes exactly one packet from `bytes`, with no size limit.
fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, usize::MAX)?.expect("a whole packet was given");
    assert!(buf.is_empty(), "{} bytes left after {packet:?}", buf.len());
    Ok(packet)
}

/// The error decoding `bytes` gives.
fn decode_err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, usize::MAX) {
        Err(e) => e,
        Ok(p) => panic!("expected an error, decoded {p:?} from {bytes:02x?}"),
    }
}
