//! The on-disk encoding of keys and values (format version [`super::FORMAT_VERSION`]).
//!
//! One key space, ordered so that everything of one session is one contiguous range per
//! kind: `[kind][client id length: u16 BE][client id][suffix]`, the suffix being the big-endian
//! sequence number (queue: numeric order = delivery order), the packet id, or the filter.
//! Retained messages are `[kind][topic]`. Messages are stored as an MQTT 5 PUBLISH encoded by
//! the broker's own codec (topic, payload, QoS, retain, properties), after their absolute
//! expiry time — one codec for the wire and the disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{QueuedEntry, SessionRecord, StoredWill, unix_millis};
use crate::codec::{self, LastWill, Packet, PacketId, ProtocolVersion, Publish, QoS};
use crate::codec::{RetainHandling, SubscriptionOptions};
use crate::message::{Message, SharedMessage};
use crate::session::{DeliveryExtra, Granted};

/// Key kinds (first byte of every key).
pub(super) mod kind {
    pub const SESSION: u8 = 1;
    pub const SUBSCRIPTION: u8 = 2;
    pub const QUEUED: u8 = 3;
    pub const INBOUND: u8 = 4;
    pub const WILL: u8 = 5;
    pub const RETAINED: u8 = 6;
    /// Kinds stored under a client id (deleted with the session).
    pub const PER_SESSION: [u8; 5] = [SESSION, SUBSCRIPTION, QUEUED, INBOUND, WILL];
}

/// Largest message the store decodes (the protocol's maximum packet size).
const MAX_STORED_PACKET: usize = 268_435_460;

/// `[kind][len][client]`: the prefix of every key of `client` of this kind.
pub(super) fn client_prefix(kind: u8, client: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + client.len() + 8);
    k.push(kind);
    // Client ids are MQTT strings: at most 65 535 bytes.
    let len = u16::try_from(client.len()).unwrap_or(u16::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&client.as_bytes()[..usize::from(len)]);
    k
}

pub(super) fn session_key(client: &str) -> Vec<u8> {
    client_prefix(kind::SESSION, client)
}

pub(super) fn subscription_key(client: &str, filter: &str) -> Vec<u8> {
    let mut k = client_prefix(kind::SUBSCRIPTION, client);
    k.extend_from_slice(filter.as_bytes());
    k
}

pub(super) fn queued_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = client_prefix(kind::QUEUED, client);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn inbound_key(client: &str, id: PacketId) -> Vec<u8> {
    let mut k = client_prefix(kind::INBOUND, client);
    k.extend_from_slice(&id.get().to_be_bytes());
    k
}

pub(super) fn will_key(client: &str) -> Vec<u8> {
    client_prefix(kind::WILL, client)
}

pub(super) fn retained_key(topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + topic.len());
    k.push(kind::RETAINED);
    k.extend_from_slice(topic.as_bytes());
    k
}

/// A decoded key.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Key {
    Session(ByteString),
    Subscription(ByteString, ByteString),
    Queued(ByteString, u64),
    Inbound(ByteString, PacketId),
    Will(ByteString),
    Retained(ByteString),
}

/// Why a record could not be decoded.
pub(super) type Invalid = String;

fn utf8(bytes: &[u8], what: &str) -> Result<ByteString, Invalid> {
    std::str::from_utf8(bytes)
        .map(ByteString::from)
        .map_err(|_| format!("{what} is not UTF-8"))
}

pub(super) fn decode_key(key: &[u8]) -> Result<Key, Invalid> {
    let (&k, rest) = key.split_first().ok_or("empty key")?;
    if k == kind::RETAINED {
        return Ok(Key::Retained(utf8(rest, "retained topic")?));
    }
    let len_bytes: [u8; 2] = rest
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .ok_or("key too short")?;
    let len = usize::from(u16::from_be_bytes(len_bytes));
    let client = rest
        .get(2..2 + len)
        .ok_or("key too short for its client id")?;
    let client = utf8(client, "client id")?;
    let suffix = &rest[2 + len..];
    let fixed = |n: usize| -> Result<&[u8], Invalid> {
        if suffix.len() == n {
            Ok(suffix)
        } else {
            Err(format!(
                "key suffix of {} bytes, expected {n}",
                suffix.len()
            ))
        }
    };
    Ok(match k {
        kind::SESSION => {
            fixed(0)?;
            Key::Session(client)
        }
        kind::SUBSCRIPTION => Key::Subscription(client, utf8(suffix, "topic filter")?),
        kind::QUEUED => {
            let b: [u8; 8] = fixed(8)?.try_into().map_err(|_| "sequence")?;
            Key::Queued(client, u64::from_be_bytes(b))
        }
        kind::INBOUND => {
            let b: [u8; 2] = fixed(2)?.try_into().map_err(|_| "packet id")?;
            let id = PacketId::new(u16::from_be_bytes(b)).ok_or("packet id 0")?;
            Key::Inbound(client, id)
        }
        kind::WILL => {
            fixed(0)?;
            Key::Will(client)
        }
        other => return Err(format!("unknown key kind {other}")),
    })
}

/// A little-endian value writer.
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// A little-endian value reader.
struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if self.0.len() < n {
            return Err("value truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Invalid> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Invalid> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, Invalid> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<ByteString, Invalid> {
        let n = usize::from(self.u16()?);
        utf8(self.take(n)?, "string")
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn end(&self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes at the end of a value",
                self.0.len()
            ))
        }
    }
}

pub(super) fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(21));
    w.u32(r.expiry_interval);
    w.u64(r.last_seq);
    match r.disconnected_at {
        Some(at) => {
            w.u8(1);
            w.u64(at);
        }
        None => w.u8(0),
    }
    w.0
}

pub(super) fn decode_session(v: &[u8]) -> Result<SessionRecord, Invalid> {
    let mut r = R(v);
    let expiry_interval = r.u32()?;
    let last_seq = r.u64()?;
    let disconnected_at = match r.u8()? {
        0 => None,
        _ => Some(r.u64()?),
    };
    r.end()?;
    Ok(SessionRecord {
        expiry_interval,
        disconnected_at,
        last_seq,
    })
}

pub(super) fn encode_granted(g: &Granted) -> Vec<u8> {
    let o = &g.options;
    let mut w = W(Vec::with_capacity(5));
    w.u8(o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4);
    w.u32(g.id);
    w.0
}

pub(super) fn decode_granted(v: &[u8]) -> Result<Granted, Invalid> {
    let mut r = R(v);
    let b = r.u8()?;
    let id = r.u32()?;
    r.end()?;
    let qos = QoS::from_u8(b & 3).ok_or("subscription QoS 3")?;
    let retain_handling = match (b >> 4) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err("retain handling 3".into()),
    };
    Ok(Granted {
        options: SubscriptionOptions {
            qos,
            no_local: b & 4 != 0,
            retain_as_published: b & 8 != 0,
            retain_handling,
        },
        id,
    })
}

/// Writes `message` (topic, payload, QoS, retain, properties) as an MQTT 5 PUBLISH, preceded by
/// its absolute expiry in unix milliseconds (0: none).
fn put_message(w: &mut W, message: &Message, now: Instant, now_unix: u64) -> Result<(), Invalid> {
    let expires = message.expires_at.map_or(0, |at| {
        let left = at.saturating_duration_since(now).as_millis();
        now_unix
            .saturating_add(u64::try_from(left).unwrap_or(u64::MAX))
            .max(1)
    });
    w.u64(expires);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id: (message.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        payload: message.payload.clone(),
        properties: message.properties.clone(),
    });
    let mut buf = BytesMut::with_capacity(message.payload.len() + message.topic.len() + 16);
    codec::encode(&packet, ProtocolVersion::V5, &mut buf).map_err(|e| e.to_string())?;
    w.0.extend_from_slice(&buf);
    Ok(())
}

fn get_message(r: &mut R<'_>, now: Instant, now_unix: u64) -> Result<Message, Invalid> {
    let expires = r.u64()?;
    let mut buf = BytesMut::from(r.rest());
    let packet = codec::decode(&mut buf, ProtocolVersion::V5, MAX_STORED_PACKET)
        .map_err(|e| format!("stored message: {e}"))?
        .ok_or("stored message truncated")?;
    if !buf.is_empty() {
        return Err("bytes after a stored message".into());
    }
    let Packet::Publish(p) = packet else {
        return Err("stored message is not a PUBLISH".into());
    };
    let expires_at = (expires != 0).then(|| {
        now.checked_add(Duration::from_millis(expires.saturating_sub(now_unix)))
            .unwrap_or(now)
    });
    Ok(Message {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        publisher: 0,
        expires_at,
    })
}

pub(super) fn encode_queued(e: &QueuedEntry) -> Result<Vec<u8>, Invalid> {
    let mut w = W(Vec::with_capacity(
        e.message.payload.len() + e.message.topic.len() + 32,
    ));
    w.u8(e.qos as u8 | u8::from(e.retain) << 2 | u8::from(e.released) << 3);
    match &e.extra {
        Some(x) => {
            w.u16(u16::try_from(x.subscription_ids.len()).unwrap_or(u16::MAX));
            for id in x.subscription_ids.iter().take(usize::from(u16::MAX)) {
                w.u32(*id);
            }
            match &x.share {
                Some(s) => {
                    w.u8(1);
                    w.str(s);
                }
                None => w.u8(0),
            }
        }
        None => {
            w.u16(0);
            w.u8(0);
        }
    }
    put_message(&mut w, &e.message, Instant::now(), unix_millis())?;
    Ok(w.0)
}

pub(super) fn decode_queued(v: &[u8], now: Instant, now_unix: u64) -> Result<QueuedEntry, Invalid> {
    let mut r = R(v);
    let flags = r.u8()?;
    let qos = QoS::from_u8(flags & 3).ok_or("delivery QoS 3")?;
    let n = usize::from(r.u16()?);
    let mut subscription_ids = Vec::with_capacity(n);
    for _ in 0..n {
        subscription_ids.push(r.u32()?);
    }
    let share = match r.u8()? {
        0 => None,
        _ => Some(r.str()?),
    };
    let extra = (!subscription_ids.is_empty() || share.is_some()).then(|| {
        Arc::new(DeliveryExtra {
            subscription_ids,
            share,
        })
    });
    let message = get_message(&mut r, now, now_unix)?;
    Ok(QueuedEntry {
        message: Arc::new(message),
        qos,
        retain: flags & 4 != 0,
        extra,
        released: flags & 8 != 0,
    })
}

pub(super) fn encode_retained(m: &Message) -> Result<Vec<u8>, Invalid> {
    let mut w = W(Vec::with_capacity(m.payload.len() + m.topic.len() + 16));
    put_message(&mut w, m, Instant::now(), unix_millis())?;
    Ok(w.0)
}

pub(super) fn decode_retained(
    v: &[u8],
    now: Instant,
    now_unix: u64,
) -> Result<SharedMessage, Invalid> {
    let mut r = R(v);
    Ok(Arc::new(get_message(&mut r, now, now_unix)?))
}

pub(super) fn encode_will(w: &StoredWill) -> Result<Vec<u8>, Invalid> {
    let mut out = W(Vec::with_capacity(
        w.will.payload.len() + w.will.topic.len() + 32,
    ));
    out.u64(w.due);
    match &w.username {
        Some(u) => {
            out.u8(1);
            out.str(u);
        }
        None => out.u8(0),
    }
    let properties = w.will.properties.clone().map(|mut p| {
        // Will Delay Interval is not a PUBLISH property; the delay is `due`.
        p.will_delay_interval = None;
        p
    });
    let message = Message {
        properties,
        ..Message::new(
            w.will.topic.clone(),
            w.will.payload.clone(),
            w.will.qos,
            w.will.retain,
        )
    };
    put_message(&mut out, &message, Instant::now(), unix_millis())?;
    Ok(out.0)
}

pub(super) fn decode_will(v: &[u8]) -> Result<StoredWill, Invalid> {
    let mut r = R(v);
    let due = r.u64()?;
    let username = match r.u8()? {
        0 => None,
        _ => Some(r.str()?),
    };
    let m = get_message(&mut r, Instant::now(), unix_millis())?;
    Ok(StoredWill {
        will: LastWill {
            topic: m.topic,
            payload: Bytes::clone(&m.payload),
            qos: m.qos,
            retain: m.retain,
            properties: m.properties,
        },
        due,
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Properties;

    #[test]
    fn keys_round_trip_and_order_by_sequence() {
        let a = queued_key("c", 2);
        let b = queued_key("c", 10);
        assert!(a < b, "big-endian sequence numbers sort numerically");
        assert_eq!(decode_key(&b), Ok(Key::Queued("c".into(), 10)));
        assert_eq!(
            decode_key(&subscription_key("c", "a/+/#")),
            Ok(Key::Subscription("c".into(), "a/+/#".into()))
        );
        assert_eq!(
            decode_key(&retained_key("x/y")),
            Ok(Key::Retained("x/y".into()))
        );
        let id = PacketId::new(7).expect("non-zero");
        assert_eq!(
            decode_key(&inbound_key("é", id)),
            Ok(Key::Inbound("é".into(), id))
        );
        assert!(decode_key(&[9, 0, 0]).is_err());
        assert!(decode_key(&[kind::QUEUED, 0, 5, b'a']).is_err());
    }

    #[test]
    fn a_client_prefix_never_covers_a_longer_client_id() {
        // "ab" and "abc" have different length prefixes, so one session's range never
        // includes another's keys.
        let ab = client_prefix(kind::QUEUED, "ab");
        assert!(!queued_key("abc", 1).starts_with(&ab));
    }

    #[test]
    fn queued_entries_round_trip_with_properties_and_expiry() {
        let now = Instant::now();
        let mut m = Message::new("t/1", "payload", QoS::ExactlyOnce, true);
        m.properties = Some(Box::new(Properties {
            content_type: Some("text/plain".into()),
            message_expiry_interval: Some(60),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        }));
        m.expires_at = Some(now + Duration::from_secs(60));
        let e = QueuedEntry {
            message: Arc::new(m.clone()),
            qos: QoS::AtLeastOnce,
            retain: true,
            extra: Some(Arc::new(DeliveryExtra {
                subscription_ids: vec![3, 9],
                share: Some("$share/g/t/#".into()),
            })),
            released: true,
        };
        let bytes = encode_queued(&e).expect("encodes");
        let back = decode_queued(&bytes, Instant::now(), unix_millis()).expect("decodes");
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert!(back.retain && back.released);
        assert_eq!(back.extra, e.extra);
        assert_eq!(back.message.topic, m.topic);
        assert_eq!(back.message.payload, m.payload);
        assert_eq!(back.message.properties, m.properties);
        let left = back
            .message
            .expires_at
            .expect("expiry kept")
            .saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        assert!(decode_queued(&bytes[..bytes.len() - 1], now, unix_millis()).is_err());
    }

    #[test]
    fn sessions_subscriptions_and_wills_round_trip() {
        let r = SessionRecord {
            expiry_interval: 300,
            disconnected_at: Some(1_700_000_000_000),
            last_seq: 70_000,
        };
        assert_eq!(decode_session(&encode_session(&r)), Ok(r));
        let g = Granted {
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            id: 42,
        };
        assert_eq!(decode_granted(&encode_granted(&g)), Ok(g));
        let w = StoredWill {
            will: LastWill {
                topic: "will/t".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Some(Box::new(Properties {
                    will_delay_interval: Some(30),
                    ..Properties::default()
                })),
            },
            due: 123,
            username: Some("u".into()),
        };
        let back = decode_will(&encode_will(&w).expect("encodes")).expect("decodes");
        assert_eq!(back.due, 123);
        assert_eq!(back.username.as_deref(), Some("u"));
        assert_eq!(back.will.topic, w.will.topic);
        assert_eq!(
            back.will.properties, None,
            "the delay is not stored as a property"
        );
    }
}
