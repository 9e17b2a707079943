//! What an established connection does with each packet it receives. Nothing here awaits:
//! routing and replies go through the router and the session's queues.

use std::sync::Arc;

use bytestring::ByteString;

use super::rate::RateLimiter;
use super::v5::{AliasError, InboundV5};
use crate::auth::AclSlot;
use crate::auth::enhanced::AuthStep;
use crate::broker::BrokerCore;
use crate::codec::{
    Ack, Auth, Disconnect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::hooks::{ClientInfo, Decision, DisconnectReason, PublishDraft};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::router::Routed;
use crate::session::{Journal, Session};
use crate::topic;

/// SUBACK failure return code ([MQTT-3.9.3-2]: 0x80 in 3.1.1; "unspecified error" in 5.0).
const SUBACK_FAILURE: u8 = 0x80;

/// MQTT 5 reason codes the handler sends (section 2.4).
pub(crate) mod reason {
    /// No matching subscribers (PUBACK/PUBREC, success class).
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub use crate::auth::enhanced::{
        BAD_AUTHENTICATION_METHOD, CONTINUE_AUTHENTICATION, NOT_AUTHORIZED, RE_AUTHENTICATE,
    };
    /// Protocol Error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Topic Filter invalid (SUBACK).
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic Name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Packet Identifier not found (PUBCOMP).
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// Receive Maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Topic Alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    /// Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    /// QoS not supported.
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
}

/// Why a connection ends, and (MQTT 5) the reason code of the DISCONNECT the server sends
/// first; 0 sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Close {
    /// Why, as the hooks see it.
    pub reason: DisconnectReason,
    /// DISCONNECT reason code (MQTT 5.0 section 3.14.2.1), 0 for none.
    pub code: u8,
}

impl Close {
    /// An ending without a server DISCONNECT.
    pub fn quiet(reason: DisconnectReason) -> Close {
        Close { reason, code: 0 }
    }
}

/// What routing a PUBLISH came to.
pub(crate) enum Outcome {
    /// Refused (hook, `$SYS`, invalid rewritten topic): acknowledged but not delivered.
    Refused,
    /// Routed.
    Routed(Routed),
}

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
    /// MQTT 5 state (`None` for 3.1 and 3.1.1).
    pub v5: Option<Box<InboundV5>>,
    /// Publish rate limits, if configured.
    pub rate: Option<Box<RateLimiter>>,
    /// Set when the client went over its publish rate: reading pauses this long.
    pub throttle: Option<std::time::Duration>,
    /// The ACL of the listener this client came through, if any.
    pub acl: Option<&'a AclSlot>,
}

impl Handler<'_> {
    /// Handles one packet; `Err` carries why the connection must now end.
    pub fn handle(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => return self.publish(p),
            Packet::PubAck(a) => self.session.on_puback(a.packet_id),
            Packet::PubRec(a) if a.reason >= 0x80 => {
                // MQTT 5.0 section 4.3.3: a PUBREC with an error reason ends the flow; the
                // packet identifier is free again and no PUBREL follows.
                self.session.forget_inflight(a.packet_id);
            }
            Packet::PubRec(a) => {
                let mut journal = self.core.journal();
                self.session.on_pubrec(a.packet_id, &mut journal);
                // [MQTT-4.3.3-1] PUBREL, once the new stage is stored.
                self.reply_after(journal, Packet::PubRel(Ack::new(a.packet_id)));
            }
            Packet::PubComp(a) => self.session.on_pubcomp(a.packet_id),
            Packet::PubRel(a) => {
                // [MQTT-4.3.3-2] PUBREL releases the packet id; answer PUBCOMP even for an id
                // already released (the client may be re-sending PUBREL after a reconnect),
                // with reason 0x92 in MQTT 5 ([MQTT-3.7.2-1] lists it).
                let mut journal = self.core.journal();
                let known = self.session.inbound_qos2_release(a.packet_id, &mut journal);
                let mut ack = Ack::new(a.packet_id);
                if !known && self.version.is_v5() {
                    ack.reason = reason::PACKET_ID_NOT_FOUND;
                }
                // PUBCOMP once the release is stored: otherwise, after a crash, the id would
                // still be held and the client's next message with it taken for a duplicate.
                self.reply_after(journal, Packet::PubComp(ack));
            }
            Packet::Subscribe(s) => return self.subscribe(s),
            Packet::Unsubscribe(u) => self.unsubscribe(u),
            // [MQTT-3.12.4-1] answer PINGREQ with PINGRESP.
            Packet::PingReq => self.reply(Packet::PingResp),
            Packet::Disconnect(d) => return Err(self.disconnect(d)),
            Packet::Auth(a) if self.v5.is_some() => return self.auth(a),
            Packet::Connect(_) => {
                // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
                tracing::debug!(client_id = %self.client.client_id, "[MQTT-3.1.0-2] second CONNECT; closing");
                return Err(self.protocol_error(reason::PROTOCOL_ERROR));
            }
            other => {
                // CONNACK, SUBACK, UNSUBACK, PINGRESP (and AUTH before MQTT 5) are never sent
                // by a client.
                tracing::debug!(client_id = %self.client.client_id, packet = other.name(), "packet not allowed from a client; closing");
                return Err(self.protocol_error(reason::PROTOCOL_ERROR));
            }
        }
        Ok(())
    }

    /// Queues a packet for this connection's writer (behind acknowledgements still waiting
    /// for the store, if any).
    fn reply(&self, packet: Packet) {
        if self.acks_waiting() {
            self.reply_after(self.core.journal(), packet);
        } else {
            self.session.send_control(self.conn_id, packet);
        }
    }

    /// Whether an earlier acknowledgement of this session still waits for the store.
    fn acks_waiting(&self) -> bool {
        self.core.acks_wait_for_store() && self.session.acks_waiting()
    }

    /// Submits `journal` and queues `packet` once it is durable — at once when the journal is
    /// empty and no earlier acknowledgement is still waiting for the store. This is what makes
    /// a PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK mean "stored" with persistence on.
    fn reply_after(&self, journal: Journal, packet: Packet) {
        if !self.core.acks_wait_for_store() || (journal.is_empty() && !self.acks_waiting()) {
            // No persistence, `periodic` durability (acknowledged at once, stored within the
            // interval), or nothing to wait for.
            self.core.submit(journal);
            if !self.core.store().has_failed() {
                self.session.send_control(self.conn_id, packet);
            }
            return;
        }
        self.session.ack_deferred();
        let session = self.session.clone();
        let conn = self.conn_id;
        journal.submit(
            self.core.store(),
            Some(Box::new(move |stored| {
                session.ack_stored(conn, packet, stored.is_ok());
            })),
        );
    }

    fn protocol_error(&self, code: u8) -> Close {
        Metrics::inc(&self.core.metrics.protocol_errors);
        Close {
            reason: DisconnectReason::ProtocolError,
            code,
        }
    }

    /// DISCONNECT from the client.
    fn disconnect(&mut self, d: Disconnect) -> Close {
        if let Some(v5) = &self.v5 {
            if let Some(requested) = d
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
            {
                // Section 3.14.2.2.2: a session that was to end with the connection (expiry 0
                // in CONNECT) cannot be kept by DISCONNECT: Protocol Error.
                if v5.expiry_was_zero && requested != 0 {
                    return self.protocol_error(reason::PROTOCOL_ERROR);
                }
                let max = self.core.config.mqtt.session_expiry_interval;
                self.session.state.lock().expiry_interval = requested.min(max);
            }
            // [MQTT-3.14.4-3] only reason 0x00 discards the will: 0x04 (Disconnect with Will
            // Message) and every error code publish it ([MQTT-3.1.2-8]).
            if d.reason != 0x00 {
                return Close::quiet(DisconnectReason::ClientDisconnectWithWill);
            }
        }
        Close::quiet(DisconnectReason::ClientDisconnect)
    }

    /// AUTH after the connection is established: re-authentication (MQTT 5.0 section 4.12.1).
    fn auth(&mut self, a: Auth) -> Result<(), Close> {
        let Some(v5) = self.v5.as_mut() else {
            return Err(self.protocol_error(reason::PROTOCOL_ERROR));
        };
        let props = a.properties.unwrap_or_default();
        // [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT; [MQTT-4.12.0-7] a
        // client that did not use enhanced authentication must not send AUTH at all.
        let Some(method) = v5.auth_method.clone() else {
            return Err(self.protocol_error(reason::PROTOCOL_ERROR));
        };
        if props.authentication_method.as_deref() != Some(&*method) {
            return Err(self.protocol_error(reason::PROTOCOL_ERROR));
        }
        let data = props.authentication_data.as_deref();
        let step = match (a.reason, v5.reauth.take()) {
            (reason::RE_AUTHENTICATE, _) => match self.core.authenticator(&method) {
                Some(auth) => auth.start(
                    &self.client.client_id,
                    self.client.username.as_deref(),
                    data,
                ),
                None => AuthStep::Failure {
                    reason: reason::BAD_AUTHENTICATION_METHOD,
                },
            },
            (reason::CONTINUE_AUTHENTICATION, Some(exchange)) => exchange.step(data),
            _ => return Err(self.protocol_error(reason::PROTOCOL_ERROR)),
        };
        match step {
            AuthStep::Continue { data, next } => {
                v5.reauth = Some(next);
                self.reply(auth_packet(
                    reason::CONTINUE_AUTHENTICATION,
                    &method,
                    Some(data),
                ));
                Ok(())
            }
            AuthStep::Success { data, .. } => {
                self.reply(auth_packet(0, &method, data));
                Ok(())
            }
            AuthStep::Failure { reason } => {
                tracing::info!(client_id = %self.client.client_id, code = reason, "re-authentication failed");
                // [MQTT-4.12.1-2] a failed re-authentication disconnects the client, with a
                // code DISCONNECT may carry ([MQTT-3.14.2-1]: 0x86 and 0x8C are CONNACK-only).
                Err(Close {
                    reason: DisconnectReason::ProtocolError,
                    code: reason::NOT_AUTHORIZED,
                })
            }
        }
    }

    fn publish(&mut self, mut publish: Publish) -> Result<(), Close> {
        Metrics::inc(&self.core.metrics.messages_received);
        if let Some(rate) = self.rate.as_mut() {
            let wait = rate.on_publish(publish.payload.len());
            if !wait.is_zero() {
                self.throttle = Some(wait);
            }
        }
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        let mut ack_reason = 0u8;
        let mut journal = self.core.journal();
        if let Some(v5) = self.v5.as_mut() {
            let mqtt = &self.core.config.mqtt;
            let props = publish.properties.as_deref_mut();
            // [MQTT-3.3.4-6] a client must not send a Subscription Identifier.
            if props.is_some_and(|p| !p.subscription_identifiers.is_empty()) {
                return Err(self.protocol_error(reason::PROTOCOL_ERROR));
            }
            // [MQTT-3.2.2-11] a QoS above the Maximum QoS announced: 0x9B.
            if qos as u8 > mqtt.maximum_qos {
                return Err(self.protocol_error(reason::QOS_NOT_SUPPORTED));
            }
            // [MQTT-3.2.2-14] RETAIN when Retain Available was 0: 0x9A.
            if publish.retain && !mqtt.retain_available {
                return Err(self.protocol_error(reason::RETAIN_NOT_SUPPORTED));
            }
            let alias = publish
                .properties
                .as_deref_mut()
                .and_then(|p| p.topic_alias.take());
            match alias {
                Some(alias) => match v5.resolve(alias, &publish.topic) {
                    Ok(topic) => publish.topic = topic,
                    // [MQTT-3.3.2-8], [MQTT-3.3.2-9]: 0x94 Topic Alias invalid.
                    Err(AliasError::Invalid) => {
                        return Err(self.protocol_error(reason::TOPIC_ALIAS_INVALID));
                    }
                    Err(AliasError::Unknown) => {
                        return Err(self.protocol_error(reason::PROTOCOL_ERROR));
                    }
                },
                // An empty topic needs an alias (section 3.3.2.3.4): Protocol Error.
                None if publish.topic.is_empty() => {
                    return Err(self.protocol_error(reason::PROTOCOL_ERROR));
                }
                None => {}
            }
            if qos == QoS::ExactlyOnce
                && self.session.inbound_qos2_count() >= usize::from(mqtt.receive_maximum)
            {
                // [MQTT-3.3.4-7] more unreleased QoS 2 messages than the Receive Maximum.
                return Err(self.protocol_error(reason::RECEIVE_MAXIMUM_EXCEEDED));
            }
            // Section 3.3.2.3.2: a payload declared UTF-8 that is not may be refused with
            // 0x99 Payload format invalid (it is then not delivered).
            let utf8 = publish
                .properties
                .as_ref()
                .is_some_and(|p| p.payload_format_indicator == Some(1));
            if utf8 && std::str::from_utf8(&publish.payload).is_err() {
                ack_reason = reason::PAYLOAD_FORMAT_INVALID;
            }
        }
        if !topic_within_limits(self.core, &publish.topic) {
            // `limits.max_topic_length` / `max_topic_levels`: 0x90 Topic Name invalid (a
            // 3.1.1 client cannot be told, so it is disconnected too rather than silently
            // losing the message).
            tracing::debug!(client_id = %self.client.client_id, len = publish.topic.len(), "topic over the configured limits; closing");
            return Err(self.protocol_error(reason::TOPIC_NAME_INVALID));
        }
        // [MQTT-4.3.3-2] a re-sent QoS 2 PUBLISH whose id awaits PUBREL is acknowledged again
        // but not delivered onwards a second time.
        let first_delivery = match (qos, packet_id) {
            (QoS::ExactlyOnce, Some(id)) if ack_reason < 0x80 => {
                self.session.inbound_qos2_first(id, &mut journal)
            }
            _ => true,
        };
        if first_delivery && ack_reason < 0x80 {
            let draft = PublishDraft {
                topic: publish.topic,
                payload: publish.payload,
                qos,
                retain: publish.retain,
            };
            let outcome = Self::route(
                self.core,
                self.client,
                self.session.key,
                self.acl,
                draft,
                publish.properties,
                &mut journal,
            );
            match outcome {
                Outcome::Refused => ack_reason = reason::NOT_AUTHORIZED,
                Outcome::Routed(routed) => {
                    if routed.matched == 0 {
                        ack_reason = reason::NO_MATCHING_SUBSCRIBERS;
                    }
                    if let Some(congested) = routed.congested {
                        self.congested = Some(congested);
                    }
                }
            }
        }
        if let (true, QoS::ExactlyOnce, Some(id)) = (self.v5.is_some(), qos, packet_id)
            && ack_reason >= 0x80
        {
            // A PUBREC with an error code ends the exchange: no PUBREL will come, so the packet
            // id must not stay held ([MQTT-4.3.3-9]: the next PUBLISH with it is a new message).
            self.session.inbound_qos2_release(id, &mut journal);
        }
        // [MQTT-3.3.4-1] acknowledge according to the QoS of the incoming PUBLISH; a PUBLISH
        // that was refused is still acknowledged ([MQTT-3.3.5-2]), with the reason in MQTT 5.
        let ack = |id| Ack {
            packet_id: id,
            reason: ack_reason,
            properties: None,
        };
        // With persistence, the acknowledgement waits until what it acknowledges is stored.
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.reply_after(journal, Packet::PubAck(ack(id))),
            (QoS::ExactlyOnce, Some(id)) => self.reply_after(journal, Packet::PubRec(ack(id))),
            _ => self.core.submit(journal),
        }
        Ok(())
    }

    /// Applies the publish hook, then the retained store and the subscriptions.
    fn route(
        core: &BrokerCore,
        client: &ClientInfo,
        publisher: u64,
        acl: Option<&AclSlot>,
        mut draft: PublishDraft,
        properties: Option<Box<Properties>>,
        journal: &mut Journal,
    ) -> Outcome {
        if let Some(acl) = acl
            && !acl.read().check_publish(
                &client.client_id,
                client.username.as_deref(),
                &draft.topic,
            )
        {
            // Denied by the ACL: acknowledged as the protocol level prescribes (0x87 in
            // MQTT 5), counted, not delivered.
            Metrics::inc(&core.metrics.acl_denied);
            tracing::debug!(client_id = %client.client_id, topic = %draft.topic, "publish denied by the ACL");
            return Outcome::Refused;
        }
        // The codec validated the topic; only a topic the hook replaced needs checking again.
        let decoded_topic = (draft.topic.as_ptr(), draft.topic.len());
        if core.hooks.on_publish(client, &mut draft) == Decision::Deny {
            tracing::debug!(client_id = %client.client_id, topic = %draft.topic, "publish denied by hook");
            return Outcome::Refused;
        }
        if (draft.topic.as_ptr(), draft.topic.len()) != decoded_topic
            && topic::validate_topic_name(&draft.topic).is_err()
        {
            tracing::warn!(client_id = %client.client_id, topic = %draft.topic, "publish hook produced an invalid topic; dropped");
            return Outcome::Refused;
        }
        if draft.topic.starts_with("$SYS/") || &*draft.topic == "$SYS" {
            // `$SYS` belongs to the broker: clients may not publish into it.
            tracing::debug!(client_id = %client.client_id, topic = %draft.topic, "publish to $SYS dropped");
            return Outcome::Refused;
        }
        let retain = draft.retain && core.config.mqtt.retain_available;
        let message = Arc::new(
            Message {
                topic: draft.topic,
                payload: draft.payload,
                qos: draft.qos,
                retain,
                properties,
                publisher,
                expires_at: None,
            }
            .with_expiry_from_properties(),
        );
        if retain {
            core.router.retain(&message, journal);
        }
        Outcome::Routed(
            core.router
                .route(&message, &client.client_id, &core.metrics, journal),
        )
    }

    /// Publishes a client's will ([MQTT-3.1.2-8]), through the same hook and routing as a
    /// PUBLISH from that client.
    /// The will is checked against the ACL of `session`'s client (write access), and each
    /// delivery against its reader's.
    pub fn publish_will(core: &BrokerCore, client: &ClientInfo, session: &Session, will: LastWill) {
        let draft = PublishDraft {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
        };
        let properties = will.properties.map(|mut p| {
            // The Will Delay Interval is the server's business, not a PUBLISH property.
            p.will_delay_interval = None;
            p
        });
        let acl = session.acl_slot();
        let mut journal = core.journal();
        Self::route(
            core,
            client,
            session.key,
            acl.as_deref(),
            draft,
            properties,
            &mut journal,
        );
        core.submit(journal);
    }

    fn subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let v5 = self.version.is_v5();
        let id = subscribe
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied())
            .unwrap_or(0);
        let max_qos = QoS::from_u8(self.core.config.mqtt.maximum_qos).unwrap_or(QoS::ExactlyOnce);
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained: Vec<(ByteString, QoS)> = Vec::new();
        let mut journal = self.core.journal();
        // [MQTT-3.8.4-4] several filters are handled as a sequence of SUBSCRIBEs answered by
        // one SUBACK, with one return code per filter in order ([MQTT-3.8.4-5]).
        for (filter, mut options) in subscribe.filters {
            let shared = topic::parse_shared(&filter).is_some();
            if !shared && filter.starts_with("$share/") {
                // `$share/` without a valid group and filter ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
                codes.push(if v5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    SUBACK_FAILURE
                });
                continue;
            }
            if !topic_within_limits(self.core, &filter) {
                codes.push(if v5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    SUBACK_FAILURE
                });
                continue;
            }
            let max_subs = self.core.config.limits.max_subscriptions_per_client;
            if max_subs > 0
                && !self.session.has_subscription(&filter)
                && self.session.subscription_count() >= max_subs
            {
                tracing::debug!(client_id = %self.client.client_id, %filter, "max_subscriptions_per_client reached");
                codes.push(if v5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    SUBACK_FAILURE
                });
                continue;
            }
            if shared && options.no_local {
                // [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error.
                return Err(self.protocol_error(reason::PROTOCOL_ERROR));
            }
            let acl_denied = self.acl.is_some_and(|acl| {
                !acl.read().check_subscribe(
                    &self.client.client_id,
                    self.client.username.as_deref(),
                    &filter,
                )
            });
            if acl_denied {
                Metrics::inc(&self.core.metrics.acl_denied);
                tracing::debug!(client_id = %self.client.client_id, %filter, "subscription denied by the ACL");
            }
            let mut qos = options.qos;
            if acl_denied
                || self.core.hooks.on_subscribe(self.client, &filter, &mut qos) == Decision::Deny
            {
                codes.push(match (v5, acl_denied) {
                    (false, _) => SUBACK_FAILURE,
                    (true, true) => self.core.config.auth.v5_subscribe_denied_code,
                    (true, false) => reason::NOT_AUTHORIZED,
                });
                continue;
            }
            // [MQTT-3.8.4-6] the granted QoS may be lower than requested, never higher; and
            // never above the Maximum QoS (section 3.2.2.3.4).
            options.qos = qos.min(options.qos).min(max_qos);
            let Some(existed) =
                self.core
                    .router
                    .subscribe(self.session, &filter, options, id, &mut journal)
            else {
                codes.push(SUBACK_FAILURE);
                continue;
            };
            codes.push(options.qos as u8);
            // [MQTT-3.8.4-3] retained messages are sent for a new or replaced subscription,
            // as Retain Handling says ([MQTT-3.3.1-9] to [MQTT-3.3.1-11] in 5.0), and never on
            // a shared subscription (section 4.8.2).
            let send = !shared
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send {
                retained.push((filter, options.qos));
            }
        }
        // [MQTT-3.8.4-1] SUBACK with [MQTT-3.8.4-2] the same packet id, once a persistent
        // session's subscriptions are stored.
        self.reply_after(
            journal,
            Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                codes,
                properties: None,
            }),
        );
        let mut journal = self.core.journal();
        for (filter, qos) in retained {
            self.core.router.send_retained(
                self.session,
                &filter,
                qos,
                id,
                &self.core.metrics,
                &mut journal,
            );
        }
        self.core.submit(journal);
        Ok(())
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut codes = Vec::new();
        let mut journal = self.core.journal();
        for filter in &unsubscribe.filters {
            // [MQTT-3.10.4-1] delete the subscription; [MQTT-3.10.4-3] messages already queued
            // are still delivered.
            let existed = self
                .core
                .router
                .unsubscribe(self.session, filter, &mut journal);
            self.core.hooks.on_unsubscribe(self.client, filter);
            if self.version.is_v5() {
                codes.push(if existed {
                    0x00
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                });
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK with the same packet id, [MQTT-3.10.4-5] even when no
        // subscription was removed.
        self.reply_after(
            journal,
            Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                codes,
                properties: None,
            }),
        );
    }
}

/// An AUTH packet with `method` and `data`.
pub(crate) fn auth_packet(code: u8, method: &ByteString, data: Option<bytes::Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason: code,
        properties: Some(Box::new(Properties {
            authentication_method: Some(method.clone()),
            authentication_data: data,
            ..Properties::default()
        })),
    })
}

/// Whether a topic name or filter is within `limits.max_topic_length` and `max_topic_levels`.
fn topic_within_limits(core: &BrokerCore, topic: &str) -> bool {
    let limits = &core.config.limits;
    topic.len() <= usize::from(limits.max_topic_length)
        && topic.bytes().filter(|&b| b == b'/').count() < usize::from(limits.max_topic_levels)
}
