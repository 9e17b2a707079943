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
}

/// The in-flight window, oldest first.
#[derive(Debug, Default)]
pub struct Inflight {
    entries: VecDeque<InflightEntry>,
    last_id: u16,
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

    /// Allocates a packet identifier that no in-flight delivery uses ([MQTT-2.3.1-2]: an
    /// identifier becomes reusable only once its acknowledgement flow has completed).
    /// `None` only if all 65 535 identifiers are in use, which the window size prevents.
    pub fn next_packet_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id == 0 {
                self.last_id = 1;
            }
            let candidate = PacketId::new(self.last_id)?;
            if !self.entries.iter().any(|e| e.packet_id == candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// Records a delivery just sent.
    pub fn push(&mut self, entry: InflightEntry) {
        self.entries.push_back(entry);
    }

    fn position(&self, id: PacketId, stage: Stage) -> Option<usize> {
        // Acknowledgements nearly always arrive in order: the front is checked first.
        self.entries
            .iter()
            .position(|e| e.packet_id == id && e.stage == stage)
    }

    /// PUBACK received: completes a QoS 1 delivery. Returns whether one matched.
    pub fn puback(&mut self, id: PacketId) -> bool {
        match self.position(id, Stage::AwaitingPubAck) {
            Some(i) => self.entries.remove(i).is_some(),
            None => false,
        }
    }

    /// PUBREC received: the QoS 2 message is now owned by the receiver; from here on only the
    /// PUBREL/PUBCOMP exchange remains ([MQTT-4.3.3-1]). Returns whether one matched.
    pub fn pubrec(&mut self, id: PacketId) -> bool {
        match self.position(id, Stage::AwaitingPubRec) {
            Some(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.stage = Stage::AwaitingPubComp;
                }
                true
            }
            None => false,
        }
    }

    /// PUBCOMP received: completes a QoS 2 delivery. Returns whether one matched.
    pub fn pubcomp(&mut self, id: PacketId) -> bool {
        match self.position(id, Stage::AwaitingPubComp) {
            Some(i) => self.entries.remove(i).is_some(),
            None => false,
        }
    }

    /// Removes the entry with packet id `id`, whatever its stage.
    pub fn remove(&mut self, id: PacketId) {
        self.entries.retain(|e| e.packet_id != id);
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
    use std::sync::Arc;

    fn entry(inflight: &mut Inflight, qos: QoS) -> PacketId {
        let id = inflight.next_packet_id().expect("free id");
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
        });
        id
    }

    #[test]
    fn ids_in_flight_are_never_reused() {
        let mut inflight = Inflight::default();
        let first = entry(&mut inflight, QoS::AtLeastOnce);
        // Wrap the counter all the way round: the id still in flight must be skipped.
        for _ in 0..70_000 {
            let id = inflight.next_packet_id().expect("free id");
            assert_ne!(id, first);
        }
    }

    #[test]
    fn qos2_flow_moves_through_stages() {
        let mut inflight = Inflight::default();
        let id = entry(&mut inflight, QoS::ExactlyOnce);
        assert!(
            !inflight.puback(id),
            "PUBACK does not complete a QoS 2 delivery"
        );
        assert!(!inflight.pubcomp(id), "PUBCOMP before PUBREC is ignored");
        assert!(inflight.pubrec(id));
        assert!(
            !inflight.pubrec(id),
            "a second PUBREC finds no message awaiting one"
        );
        assert_eq!(inflight.len(), 1);
        assert!(inflight.pubcomp(id));
        assert!(inflight.is_empty());
    }

    #[test]
    fn out_of_order_acks_complete_the_right_entry() {
        let mut inflight = Inflight::default();
        let a = entry(&mut inflight, QoS::AtLeastOnce);
        let b = entry(&mut inflight, QoS::AtLeastOnce);
        assert!(inflight.puback(b));
        assert_eq!(
            inflight.iter().map(|e| e.packet_id).collect::<Vec<_>>(),
            vec![a]
        );
    }
}
