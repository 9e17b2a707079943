//! Encoding what a session hands its connection into one write buffer.

use std::time::Instant;

use bytes::BytesMut;

use super::v5::{AliasUse, OutboundV5, delivery_properties};
use crate::codec::{self, Packet, ProtocolVersion, Publish};
use crate::session::{Outbound, Session};

/// Appends every item to `buf` (draining `items`) and returns how many were PUBLISH packets.
/// `v5` carries an MQTT 5 connection's topic aliases and the client's Maximum Packet Size.
pub(crate) fn encode_batch(
    items: &mut Vec<Outbound>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
    session: &Session,
    mut v5: Option<&mut OutboundV5>,
) -> u64 {
    let mut published = 0u64;
    let now = Instant::now();
    for item in items.drain(..) {
        let mut alias = AliasUse::None;
        let packet = match item {
            Outbound::Packet(p) => p,
            Outbound::Publish {
                message,
                qos,
                retain,
                packet_id,
                dup,
                extra,
            } => {
                let mut topic = message.topic.clone();
                let properties = match v5.as_deref() {
                    Some(state) => {
                        alias = state.alias_for(&message.topic);
                        let alias_value = match alias {
                            AliasUse::None => None,
                            AliasUse::Known(a) => {
                                // Section 3.3.2.3.4: a known alias goes with an empty
                                // topic name.
                                topic = bytestring::ByteString::new();
                                Some(a)
                            }
                            AliasUse::New(a) => Some(a),
                        };
                        delivery_properties(&message, extra.as_deref(), alias_value, now)
                    }
                    None => None,
                };
                let packet = Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic,
                    packet_id,
                    payload: message.payload.clone(),
                    properties,
                });
                if let Some(state) = v5.as_deref() {
                    let len = codec::encoded_len(&packet, version);
                    if len > state.max_packet as usize {
                        // [MQTT-3.1.2-25] too large for the client: discarded without sending,
                        // as if it had been delivered.
                        tracing::debug!(client_id = %session.client_id, len, max = state.max_packet, "message larger than the client's Maximum Packet Size; not sent");
                        if let Some(id) = packet_id {
                            session.forget_inflight(id);
                        }
                        continue;
                    }
                }
                published += 1;
                packet
            }
        };
        if let (Some(state), Packet::SubAck(_) | Packet::UnsubAck(_)) = (v5.as_deref(), &packet)
            && codec::encoded_len(&packet, version) > state.max_packet as usize
        {
            // [MQTT-3.1.2-24] a SUBACK/UNSUBACK (one code per filter) larger than the client
            // accepts cannot be sent: it is dropped and logged (only a client that subscribes
            // to more filters at once than its own maximum allows can cause this).
            tracing::warn!(client_id = %session.client_id, max = state.max_packet, packet = packet.name(), "acknowledgement larger than the client's Maximum Packet Size; not sent");
            continue;
        }
        if let Err(e) = codec::encode(&packet, version, buf) {
            // Only a packet that cannot exist on the wire fails here (a field over 64 KiB that
            // the decoder would never have produced); skip it rather than the whole batch.
            tracing::warn!(client_id = %session.client_id, error = %e, packet = packet.name(), "cannot encode packet; skipped");
            continue;
        }
        if let (Some(state), Packet::Publish(p)) = (v5.as_deref_mut(), &packet)
            && let AliasUse::New(_) = alias
        {
            state.commit(&p.topic, alias);
        }
    }
    published
}
