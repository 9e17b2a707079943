//! The MQTT data representations (section 1.5 of both specifications): integers, Variable Byte
//! Integers, UTF-8 strings and binary data — a bounds-checked reader over a packet body and the
//! matching writers.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{DecodeError, EncodeError, PacketId};

/// The largest value a four-byte Variable Byte Integer can carry.
pub(super) const MAX_VARINT: usize = 268_435_455;

/// A cursor over a region of one packet. Every read is bounds-checked and fails with
/// [`DecodeError::Malformed`] when the region ends early; slices share the packet's buffer.
pub(super) struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over the whole of `data`.
    pub(super) fn new(data: &'a Bytes) -> Reader<'a> {
        Reader {
            data,
            pos: 0,
            end: data.len(),
        }
    }

    /// Bytes left in this region.
    pub(super) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// True when the region is used up.
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Advances over `n` bytes and returns their start offset.
    fn advance(&mut self, n: usize) -> Result<usize, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Malformed("packet ends inside a field"));
        }
        let start = self.pos;
        self.pos += n;
        Ok(start)
    }

    /// The next `n` bytes, borrowed.
    fn raw(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.advance(n)?;
        let data: &'a Bytes = self.data;
        data.get(start..start + n)
            .ok_or(DecodeError::Malformed("packet ends inside a field"))
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub(super) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.advance(n)?;
        Ok(Reader {
            data: self.data,
            pos: start,
            end: start + n,
        })
    }

    /// One byte.
    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        let start = self.advance(1)?;
        self.data
            .get(start)
            .copied()
            .ok_or(DecodeError::Malformed("packet ends inside a field"))
    }

    /// A Two Byte Integer (big-endian).
    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.raw(2)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::Malformed("packet ends inside a field")),
        }
    }

    /// A Four Byte Integer (big-endian).
    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        match *self.raw(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DecodeError::Malformed("packet ends inside a field")),
        }
    }

    /// A Variable Byte Integer of at most four bytes.
    pub(super) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for shift in [0u32, 7, 14, 21] {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        // [MQTT-1.5.5-1] at most four bytes
        Err(DecodeError::Malformed(
            "variable byte integer longer than four bytes",
        ))
    }

    /// A packet identifier, which must not be zero.
    pub(super) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        // [MQTT-2.3.1-1] packet identifiers are non-zero
        PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId)
    }

    /// Length-prefixed bytes, borrowed (for comparisons such as the protocol name).
    pub(super) fn prefixed_raw(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        self.raw(len)
    }

    /// The next `n` bytes as a slice of the packet buffer.
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.advance(n)?;
        if n == 0 {
            return Ok(Bytes::new());
        }
        Ok(self.data.slice(start..start + n))
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub(super) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        self.bytes(len)
    }

    /// A UTF-8 Encoded String: well-formed and free of U+0000.
    pub(super) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let bytes = self.binary()?;
        // [MQTT-1.5.3-2] a UTF-8 encoded string must not include U+0000; in UTF-8 the byte 0
        // occurs only as that character
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        // [MQTT-1.5.3-1] well-formed UTF-8 (which also excludes the surrogates U+D800..U+DFFF)
        ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// How far into the packet this reader is.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    /// Everything left in the region, as a slice of the packet buffer.
    pub(super) fn rest(&mut self) -> Bytes {
        let n = self.remaining();
        // Cannot fail: exactly the remaining bytes are taken.
        self.bytes(n).unwrap_or_default()
    }

    /// Fails if bytes are left over after the last field.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "bytes left over after the last field",
            ))
        }
    }
}

/// How many bytes the Variable Byte Integer encoding of `value` takes (values above the
/// four-byte maximum count as four: callers reject them separately).
pub(super) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`MAX_VARINT`]) as a Variable Byte Integer.
pub(super) fn put_varint(buf: &mut BytesMut, value: usize) {
    let mut v = value;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Writes a length-prefixed binary field.
pub(super) fn put_binary(buf: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong)?;
    buf.put_u16(len);
    buf.put_slice(data);
    Ok(())
}

/// Writes a UTF-8 string field.
pub(super) fn put_str(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(buf, s.as_bytes())
}

/// The encoded size of a string or binary field (two-byte length prefix included).
pub(super) fn field_len(data: &[u8]) -> usize {
    2 + data.len()
}
