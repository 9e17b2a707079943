//! What an established connection does with each packet it receives. Nothing here awaits:
//! routing and replies go through the router and the session's queues.

use std::sync::Arc;

use bytestring::ByteString;

use crate::broker::BrokerCore;
use crate::codec::{
    Ack, LastWill, Packet, ProtocolVersion, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::hooks::{ClientInfo, Decision, DisconnectReason, PublishDraft};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::session::Session;
use crate::topic;

/// SUBACK failure return code ([MQTT-3.9.3-2]: 0x80 in 3.1.1; "unspecified error" in 5.0).
const SUBACK_FAILURE: u8 = 0x80;

/// Per-connection packet handling.
pub(crate) struct Handler<'a> {
    pub core: &'a BrokerCore,
    pub session: &'a Arc<Session>,
    pub client: &'a ClientInfo,
    pub version: ProtocolVersion,
    pub conn_id: u64,
    /// A subscriber whose queue this connection's publishes congested: the connection pauses
    /// reading until it drains (see [`crate::session::Enqueued::Congested`]).
    pub congested: Option<Arc<Session>>,
}

impl Handler<'_> {
    /// Handles one packet; `Err` carries why the connection must now end.
    pub fn handle(&mut self, packet: Packet) -> Result<(), DisconnectReason> {
        match packet {
            Packet::Publish(p) => self.publish(p),
            Packet::PubAck(a) => self.session.on_puback(a.packet_id),
            Packet::PubRec(a) => self.session.on_pubrec(self.conn_id, a.packet_id),
            Packet::PubComp(a) => self.session.on_pubcomp(a.packet_id),
            Packet::PubRel(a) => {
                // [MQTT-4.3.3-2] PUBREL releases the packet id; answer PUBCOMP even for an id
                // already released (the client may be re-sending PUBREL after a reconnect).
                self.session.inbound_qos2_release(a.packet_id);
                self.reply(Packet::PubComp(Ack::new(a.packet_id)));
            }
            Packet::Subscribe(s) => self.subscribe(s),
            Packet::Unsubscribe(u) => self.unsubscribe(u),
            // [MQTT-3.12.4-1] answer PINGREQ with PINGRESP.
            Packet::PingReq => self.reply(Packet::PingResp),
            Packet::Disconnect(_) => return Err(DisconnectReason::ClientDisconnect),
            Packet::Connect(_) => {
                // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
                tracing::debug!(client_id = %self.client.client_id, "[MQTT-3.1.0-2] second CONNECT; closing");
                return Err(self.protocol_error());
            }
            other => {
                // CONNACK, SUBACK, UNSUBACK, PINGRESP (and AUTH before MQTT 5) are never sent
                // by a client.
                tracing::debug!(client_id = %self.client.client_id, packet = other.name(), "packet not allowed from a client; closing");
                return Err(self.protocol_error());
            }
        }
        Ok(())
    }

    /// Queues a packet for this connection's writer.
    fn reply(&self, packet: Packet) {
        self.session.send_control(self.conn_id, packet);
    }

    fn protocol_error(&self) -> DisconnectReason {
        Metrics::inc(&self.core.metrics.protocol_errors);
        DisconnectReason::ProtocolError
    }

    fn publish(&mut self, publish: Publish) {
        Metrics::inc(&self.core.metrics.messages_received);
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        // [MQTT-4.3.3-2] a re-sent QoS 2 PUBLISH whose id awaits PUBREL is acknowledged again
        // but not delivered onwards a second time.
        let first_delivery = match (qos, packet_id) {
            (QoS::ExactlyOnce, Some(id)) => self.session.inbound_qos2_first(id),
            _ => true,
        };
        if first_delivery {
            let draft = PublishDraft {
                topic: publish.topic,
                payload: publish.payload,
                qos,
                retain: publish.retain,
            };
            if let Some(congested) = Self::route(self.core, self.client, draft, publish.properties)
            {
                self.congested = Some(congested);
            }
        }
        // [MQTT-3.3.4-1] acknowledge according to the QoS of the incoming PUBLISH; a PUBLISH
        // that was refused is still acknowledged ([MQTT-3.3.5-2]).
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.reply(Packet::PubAck(Ack::new(id))),
            (QoS::ExactlyOnce, Some(id)) => self.reply(Packet::PubRec(Ack::new(id))),
            _ => {}
        }
    }

    /// Applies the publish hook, then the retained store and the subscriptions.
    fn route(
        core: &BrokerCore,
        client: &ClientInfo,
        mut draft: PublishDraft,
        properties: Option<Box<crate::codec::Properties>>,
    ) -> Option<Arc<Session>> {
        // The codec validated the topic; only a topic the hook replaced needs checking again.
        let decoded_topic = (draft.topic.as_ptr(), draft.topic.len());
        if core.hooks.on_publish(client, &mut draft) == Decision::Deny {
            tracing::debug!(client_id = %client.client_id, topic = %draft.topic, "publish denied by hook");
            return None;
        }
        if (draft.topic.as_ptr(), draft.topic.len()) != decoded_topic
            && topic::validate_topic_name(&draft.topic).is_err()
        {
            tracing::warn!(client_id = %client.client_id, topic = %draft.topic, "publish hook produced an invalid topic; dropped");
            return None;
        }
        if draft.topic.starts_with("$SYS/") || &*draft.topic == "$SYS" {
            // `$SYS` belongs to the broker: clients may not publish into it.
            tracing::debug!(client_id = %client.client_id, topic = %draft.topic, "publish to $SYS dropped");
            return None;
        }
        let retain = draft.retain && core.config.mqtt.retain_available;
        let message = Arc::new(Message {
            topic: draft.topic,
            payload: draft.payload,
            qos: draft.qos,
            retain,
            properties,
        });
        if retain {
            core.router.retain(&message);
        }
        core.router.route(&message, &core.metrics)
    }

    /// Publishes a client's will ([MQTT-3.1.2-8]), through the same hook and routing as a
    /// PUBLISH from that client.
    pub fn publish_will(core: &BrokerCore, client: &ClientInfo, will: LastWill) {
        let draft = PublishDraft {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
        };
        Self::route(core, client, draft, will.properties);
    }

    fn subscribe(&mut self, subscribe: Subscribe) {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut granted: Vec<(ByteString, QoS)> = Vec::with_capacity(subscribe.filters.len());
        // [MQTT-3.8.4-4] several filters are handled as a sequence of SUBSCRIBEs answered by
        // one SUBACK, with one return code per filter in order ([MQTT-3.8.4-5]).
        for (filter, mut options) in subscribe.filters {
            if topic::parse_shared(&filter).is_some() {
                // Shared subscriptions arrive with issue 4; refuse rather than treat the
                // filter as a literal topic.
                codes.push(SUBACK_FAILURE);
                continue;
            }
            let mut qos = options.qos;
            if self.core.hooks.on_subscribe(self.client, &filter, &mut qos) == Decision::Deny {
                codes.push(SUBACK_FAILURE);
                continue;
            }
            // [MQTT-3.8.4-6] the granted QoS may be lower than requested, never higher.
            options.qos = qos.min(options.qos);
            if !self.core.router.subscribe(self.session, &filter, options) {
                codes.push(SUBACK_FAILURE);
                continue;
            }
            codes.push(options.qos as u8);
            granted.push((filter, options.qos));
        }
        // [MQTT-3.8.4-1] SUBACK with [MQTT-3.8.4-2] the same packet id.
        self.reply(Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            codes,
            properties: None,
        }));
        // [MQTT-3.8.4-3] retained messages are sent for every new or replaced subscription.
        for (filter, qos) in granted {
            self.core
                .router
                .send_retained(self.session, &filter, qos, &self.core.metrics);
        }
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::new();
        for filter in &unsubscribe.filters {
            // [MQTT-3.10.4-1] delete the subscription; [MQTT-3.10.4-3] messages already queued
            // are still delivered.
            let existed = self.core.router.unsubscribe(self.session, filter);
            self.core.hooks.on_unsubscribe(self.client, filter);
            if self.version.is_v5() {
                codes.push(if existed { 0x00 } else { 0x11 });
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK with the same packet id, [MQTT-3.10.4-5] even when no
        // subscription was removed.
        self.reply(Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            codes,
            properties: None,
        }));
    }
}
