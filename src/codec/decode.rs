//! Decoding: bytes → [`Packet`].

use bytes::BytesMut;

use super::{DecodeError, Packet, ProtocolVersion};

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (nothing is consumed), and an
/// error as soon as the bytes seen so far cannot be a valid packet — in particular as soon as the
/// fixed header announces more than `max_packet_size` bytes in total, before the body arrives.
/// `version` is the level negotiated by CONNECT (pass any level before CONNECT: a CONNECT packet
/// carries and is decoded with its own level).
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec helper")
}
