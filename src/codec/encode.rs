//! Encoding: [`Packet`] → bytes.

use bytes::BytesMut;

use super::{EncodeError, Packet, ProtocolVersion};

/// Appends the wire form of `packet` for protocol level `version` to `buf`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    todo!("codec helper")
}

/// The total size in bytes (fixed header included) `packet` will have on the wire.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    todo!("codec helper")
}
