//! The reason codes each MQTT 5 packet may carry (MQTT 5.0 section 2.4 and the per-packet
//! tables), and the return codes MQTT 3.1.1 SUBACK may carry.

use super::DecodeError;

/// Packets whose reason codes are checked.
#[derive(Debug, Clone, Copy)]
pub(super) enum ReasonSet {
    /// CONNACK (3.2.2.2).
    ConnAck,
    /// PUBACK (3.4.2.1) and PUBREC (3.5.2.1) share one table.
    PubAckRec,
    /// PUBREL (3.6.2.1) and PUBCOMP (3.7.2.1) share one table.
    PubRelComp,
    /// SUBACK (3.9.3).
    SubAck,
    /// SUBACK return codes in MQTT 3.1/3.1.1 ([MQTT-3.9.3-2]).
    SubAckV3,
    /// UNSUBACK (3.11.3).
    UnsubAck,
    /// DISCONNECT (3.14.2.1).
    Disconnect,
    /// AUTH (3.15.2.1).
    Auth,
}

impl ReasonSet {
    /// The codes this packet defines.
    fn codes(self) -> &'static [u8] {
        match self {
            ReasonSet::ConnAck => &[
                0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
                0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
            ],
            ReasonSet::PubAckRec => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
            ReasonSet::PubRelComp => &[0x00, 0x92],
            ReasonSet::SubAck => &[
                0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
            ],
            ReasonSet::SubAckV3 => &[0x00, 0x01, 0x02, 0x80],
            ReasonSet::UnsubAck => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
            ReasonSet::Disconnect => &[
                0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
                0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
                0xA2,
            ],
            ReasonSet::Auth => &[0x00, 0x18, 0x19],
        }
    }

    /// Passes `code` through if this packet defines it, else [`DecodeError::InvalidReasonCode`].
    pub(super) fn check(self, code: u8) -> Result<u8, DecodeError> {
        if self.codes().contains(&code) {
            Ok(code)
        } else {
            Err(DecodeError::InvalidReasonCode(code))
        }
    }
}
