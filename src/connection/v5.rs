//! Per-connection MQTT 5 state: topic aliases in both directions, the limits the client
//! announced in CONNECT, and the properties of each delivery.

use std::collections::HashMap;
use std::time::Instant;

use bytestring::ByteString;

use crate::codec::Properties;
use crate::message::Message;
use crate::session::DeliveryExtra;

/// What the connection keeps about the client's side of an MQTT 5 connection while reading.
#[derive(Default)]
pub(crate) struct InboundV5 {
    /// Client → server topic aliases, index `alias - 1` (MQTT 5.0 section 3.3.2.3.4).
    pub aliases: Vec<Option<ByteString>>,
    /// Topic Alias Maximum the server announced.
    pub alias_max: u16,
    /// The Session Expiry Interval in CONNECT was 0 (absent): DISCONNECT may not raise it
    /// ([MQTT-3.14.2-2]).
    pub expiry_was_zero: bool,
    /// Authentication Method of the connection, for re-authentication (section 4.12.1).
    pub auth_method: Option<ByteString>,
    /// A re-authentication waiting for the client's next AUTH.
    pub reauth: Option<Box<dyn crate::auth::enhanced::AuthExchange>>,
}

/// Why an inbound topic alias could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliasError {
    /// 0 or above the announced maximum: [MQTT-3.3.2-8], [MQTT-3.3.2-9] → 0x94.
    Invalid,
    /// An empty topic with an alias never defined on this connection → Protocol Error 0x82.
    Unknown,
}

impl InboundV5 {
    /// Resolves the topic of an incoming PUBLISH with Topic Alias `alias`: an empty topic takes
    /// the alias's topic; a non-empty one (re)defines the alias.
    pub fn resolve(&mut self, alias: u16, topic: &ByteString) -> Result<ByteString, AliasError> {
        if alias == 0 || alias > self.alias_max {
            return Err(AliasError::Invalid);
        }
        let slot = usize::from(alias - 1);
        if topic.is_empty() {
            return self
                .aliases
                .get(slot)
                .and_then(Clone::clone)
                .ok_or(AliasError::Unknown);
        }
        if self.aliases.len() <= slot {
            self.aliases.resize(slot + 1, None);
        }
        // A copy: the topic is a slice of the read buffer, and the alias outlives it.
        let owned = ByteString::from(&**topic);
        if let Some(entry) = self.aliases.get_mut(slot) {
            *entry = Some(owned.clone());
        }
        Ok(owned)
    }
}

/// What the connection keeps about the client's limits while writing.
#[derive(Debug)]
pub(crate) struct OutboundV5 {
    /// Topic → alias assigned on this connection.
    aliases: HashMap<ByteString, u16>,
    /// The client's Topic Alias Maximum (0: no aliases).
    alias_max: u16,
    /// The client's Maximum Packet Size.
    pub max_packet: u32,
}

/// How a delivery uses a topic alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AliasUse {
    /// No alias: the topic is sent in full.
    None,
    /// The topic already has this alias: sent with an empty topic name.
    Known(u16),
    /// A new alias, sent together with the full topic (then remembered).
    New(u16),
}

impl OutboundV5 {
    /// State for a client that announced `alias_max` and `max_packet`.
    pub fn new(alias_max: u16, max_packet: u32) -> OutboundV5 {
        OutboundV5 {
            aliases: HashMap::new(),
            alias_max,
            max_packet,
        }
    }

    /// The alias a delivery to `topic` would use (nothing is remembered until
    /// [`OutboundV5::commit`]). [MQTT-3.3.2-11] never above the client's Topic Alias Maximum ([MQTT-3.1.2-27]: none when it is 0).
    pub fn alias_for(&self, topic: &str) -> AliasUse {
        if self.alias_max == 0 {
            return AliasUse::None;
        }
        if let Some(&a) = self.aliases.get(topic) {
            return AliasUse::Known(a);
        }
        match u16::try_from(self.aliases.len()) {
            Ok(n) if n < self.alias_max => AliasUse::New(n + 1),
            _ => AliasUse::None,
        }
    }

    /// Remembers a new alias once the packet carrying it has been written.
    pub fn commit(&mut self, topic: &str, alias: AliasUse) {
        if let AliasUse::New(a) = alias {
            self.aliases.insert(ByteString::from(topic), a);
        }
    }
}

/// The properties of one delivery of `message`: the publisher's properties, unchanged and in
/// order ([MQTT-3.3.2-4], [MQTT-3.3.2-17], [MQTT-3.3.2-18], [MQTT-3.3.2-20]), with the
/// remaining Message Expiry Interval ([MQTT-3.3.2-6]), the matching subscriptions' identifiers
/// ([MQTT-3.3.4-3]) and this connection's topic alias.
pub(crate) fn delivery_properties(
    message: &Message,
    extra: Option<&DeliveryExtra>,
    alias: Option<u16>,
    now: Instant,
) -> Option<Box<Properties>> {
    let ids = extra.map_or(&[][..], |x| &x.subscription_ids[..]);
    if message.expires_at.is_none() && ids.is_empty() && alias.is_none() {
        return message.properties.clone();
    }
    let mut p = message.properties.clone().unwrap_or_default();
    if message.expires_at.is_some() {
        p.message_expiry_interval = message.remaining_expiry(now);
    }
    p.subscription_identifiers = ids.to_vec();
    p.topic_alias = alias;
    Some(p)
}
