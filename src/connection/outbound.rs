//! Encoding what a session hands its connection into one write buffer.

use bytes::BytesMut;

use crate::codec::{self, Packet, ProtocolVersion, Publish};
use crate::session::Outbound;

/// Appends every item to `buf` (draining `items`) and returns how many were PUBLISH packets.
pub(crate) fn encode_batch(
    items: &mut Vec<Outbound>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
    client_id: &str,
) -> u64 {
    let mut published = 0u64;
    for item in items.drain(..) {
        let packet = match item {
            Outbound::Packet(p) => p,
            Outbound::Publish {
                message,
                qos,
                retain,
                packet_id,
                dup,
            } => {
                published += 1;
                Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic: message.topic.clone(),
                    packet_id,
                    payload: message.payload.clone(),
                    properties: if version.is_v5() {
                        message.properties.clone()
                    } else {
                        None
                    },
                })
            }
        };
        if let Err(e) = codec::encode(&packet, version, buf) {
            // Only a packet that cannot exist on the wire fails here (a field over 64 KiB that
            // the decoder would never have produced); skip it rather than the whole batch.
            tracing::warn!(%client_id, error = %e, packet = packet.name(), "cannot encode packet; skipped");
        }
    }
    published
}
