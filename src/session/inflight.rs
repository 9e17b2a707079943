//! The outbound in-flight window of one session: QoS 1/2 messages sent to the client and not yet
//! fully acknowledged, in the order they were first sent, and the packet identifiers they hold.

use std::collections::VecDeque;

use std::sync::Arc;

use super::DeliveryExtra;
use crate::codec::{PacketId, QoS};
use crate::message::SharedMessage;

/// Where an outbound QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1 sent, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitingPubRec,
    /// QoS 2 PUBREL sent, waiting for PUBCOMP (the message itself is released).
    AwaitingPubComp,
}

/// One outbound delivery awaiting acknowledgement.
#[derive(Debug, Clone)]
pub struct InflightEntry {
    /// Packet identifier it was sent with.
    pub packet_id: PacketId,
    /// The message (kept until PUBACK / PUBREC so it can be re-sent with DUP).
    pub message: SharedMessage,
    /// Delivery QoS (1 or 2).
    pub qos: QoS,
    /// Retain flag of this delivery.
    pub retain: bool,
    /// Acknowledgement stage.
    pub stage: Stage,
    /// Subscription identifiers and shared-subscription origin, re-sent with the message.
    pub extra: Option<Arc<DeliveryExtra>>,
    /// The session's sequence number of the delivery (its key in the store).
    pub seq: u64,
    /// Whether the store holds the delivery (so that its completion must delete it there).
    pub on_disk: bool,
}

/// The in-flight window, oldest first.
#[derive(Debug, Default)]
pub struct Inflight {
    entries: VecDeque<InflightEntry>,
}

impl Inflight {
    /// Number of deliveries in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, oldest first (for re-sending on reconnect, in order: [MQTT-4.6.0-1]).
    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry> {
        self.entries.iter()
    }

    /// The entries, oldest first, to update.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut InflightEntry> {
        self.entries.iter_mut()
    }

    /// Whether a delivery in flight holds packet identifier `id` ([MQTT-2.3.1-2]: an
    /// identifier becomes reusable only once its acknowledgement flow has completed).
    pub fn contains(&self, id: PacketId) -> bool {
        self.entries.iter().any(|e| e.packet_id == id)
    }

    /// Adds a delivery just sent (newest last).
    pub fn push(&mut self, entry: InflightEntry) {
        self.entries.push_back(entry);
    }

    fn position(&self, id: PacketId, stage: Stage) -> Option<usize> {
        // Acknowledgements nearly always arrive in order: the front is checked first.
        self.entries
            .iter()
            .position(|e| e.packet_id == id && e.stage == stage)
    }

    /// PUBACK received: completes a QoS 1 delivery. Returns the one that matched.
    pub fn puback(&mut self, id: PacketId) -> Option<InflightEntry> {
        let i = self.position(id, Stage::AwaitingPubAck)?;
        self.entries.remove(i)
    }

    /// PUBREC received: the QoS 2 message is now owned by the receiver; from here on only the
    /// PUBREL/PUBCOMP exchange remains ([MQTT-4.3.3-1]). Returns the entry that matched.
    pub fn pubrec(&mut self, id: PacketId) -> Option<&InflightEntry> {
        let i = self.position(id, Stage::AwaitingPubRec)?;
        let e = self.entries.get_mut(i)?;
        e.stage = Stage::AwaitingPubComp;
        Some(e)
    }

    /// PUBCOMP received: completes a QoS 2 delivery. Returns the one that matched.
    pub fn pubcomp(&mut self, id: PacketId) -> Option<InflightEntry> {
        let i = self.position(id, Stage::AwaitingPubComp)?;
        self.entries.remove(i)
    }

    /// Removes the entry with packet id `id`, whatever its stage; returns what was removed.
    pub fn remove(&mut self, id: PacketId) -> Vec<InflightEntry> {
        self.drain_where(|e| e.packet_id == id)
    }

    /// Removes and returns the entries for which `pred` holds, oldest first.
    pub fn drain_where(
        &mut self,
        mut pred: impl FnMut(&InflightEntry) -> bool,
    ) -> Vec<InflightEntry> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if pred(&e) {
                taken.push(e);
            } else {
                kept.push_back(e);
            }
        }
        self.entries = kept;
        taken
    }

    /// Drops every entry (clean session).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::session::packet_id_for;
    use std::sync::Arc;

    fn entry(inflight: &mut Inflight, seq: u64, qos: QoS) -> PacketId {
        let id = packet_id_for(seq);
        let stage = if qos == QoS::AtLeastOnce {
            Stage::AwaitingPubAck
        } else {
            Stage::AwaitingPubRec
        };
        inflight.push(InflightEntry {
            packet_id: id,
            message: Arc::new(Message::new("t", "p", qos, false)),
            qos,
            retain: false,
            stage,
            extra: None,
            seq,
            on_disk: false,
        });
        id
    }

    #[test]
    fn packet_ids_follow_sequence_numbers_and_wrap_past_zero() {
        assert_eq!(packet_id_for(1).get(), 1);
        assert_eq!(packet_id_for(65_535).get(), 65_535);
        assert_eq!(packet_id_for(65_536).get(), 1, "0 is never a packet id");
        let mut inflight = Inflight::default();
        let first = entry(&mut inflight, 1, QoS::AtLeastOnce);
        assert!(inflight.contains(first));
        assert!(
            inflight.contains(packet_id_for(65_536)),
            "a delivery 65 535 later would reuse the id: the session waits for it"
        );
    }

    #[test]
    fn qos2_flow_moves_through_stages() {
        let mut inflight = Inflight::default();
        let id = entry(&mut inflight, 7, QoS::ExactlyOnce);
        assert!(
            inflight.puback(id).is_none(),
            "PUBACK does not complete a QoS 2 delivery"
        );
        assert!(
            inflight.pubcomp(id).is_none(),
            "PUBCOMP before PUBREC is ignored"
        );
        assert!(inflight.pubrec(id).is_some());
        assert!(
            inflight.pubrec(id).is_none(),
            "a second PUBREC finds no message awaiting one"
        );
        assert_eq!(inflight.len(), 1);
        assert_eq!(inflight.pubcomp(id).map(|e| e.seq), Some(7));
        assert!(inflight.is_empty());
    }

    #[test]
    fn out_of_order_acks_complete_the_right_entry() {
        let mut inflight = Inflight::default();
        let a = entry(&mut inflight, 1, QoS::AtLeastOnce);
        let b = entry(&mut inflight, 2, QoS::AtLeastOnce);
        assert_eq!(inflight.puback(b).map(|e| e.seq), Some(2));
        assert_eq!(
            inflight.iter().map(|e| e.packet_id).collect::<Vec<_>>(),
            vec![a]
        );
        assert_eq!(
            inflight.remove(a).iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1]
        );
    }
}
