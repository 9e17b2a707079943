//! What [`Change`]s do to an ordered key-value space, and how that space reads back into a
//! [`Recovered`] state — shared by every engine, so they cannot disagree.

use std::collections::BTreeMap;
use std::time::Instant;

use bytestring::ByteString;

use super::record::{self, Key, kind};
use super::{Change, Recovered, RecoveredSession, unix_millis};

/// An ordered key-value space an engine offers inside one atomic write.
pub(super) trait KvWrite {
    /// The engine's error.
    type Error;
    /// Inserts or replaces.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Self::Error>;
    /// Removes `key` if present.
    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error>;
    /// Removes every key starting with `prefix`.
    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), Self::Error>;
}

/// Why applying a change failed.
pub(super) enum ApplyError<E> {
    /// The engine failed.
    Engine(E),
    /// A message could not be encoded (cannot happen for messages the codec decoded).
    Encode(String),
}

/// Applies `changes` in order.
pub(super) fn apply<W: KvWrite>(w: &mut W, changes: &[Change]) -> Result<(), ApplyError<W::Error>> {
    use ApplyError::{Encode, Engine};
    for change in changes {
        match change {
            Change::PutSession { client, record } => w
                .put(
                    &record::session_key(client),
                    &record::encode_session(record),
                )
                .map_err(Engine)?,
            Change::DeleteSession { client } => {
                for k in kind::PER_SESSION {
                    w.delete_prefix(&record::client_prefix(k, client))
                        .map_err(Engine)?;
                }
            }
            Change::PutSubscription {
                client,
                filter,
                granted,
            } => w
                .put(
                    &record::subscription_key(client, filter),
                    &record::encode_granted(granted),
                )
                .map_err(Engine)?,
            Change::DeleteSubscription { client, filter } => w
                .delete(&record::subscription_key(client, filter))
                .map_err(Engine)?,
            Change::PutQueued {
                client, seq, entry, ..
            } => {
                let value = record::encode_queued(entry).map_err(Encode)?;
                w.put(&record::queued_key(client, *seq), &value)
                    .map_err(Engine)?;
            }
            Change::DeleteQueued { client, seq } => w
                .delete(&record::queued_key(client, *seq))
                .map_err(Engine)?,
            Change::PutInbound { client, packet_id } => w
                .put(&record::inbound_key(client, *packet_id), &[])
                .map_err(Engine)?,
            Change::DeleteInbound { client, packet_id } => w
                .delete(&record::inbound_key(client, *packet_id))
                .map_err(Engine)?,
            Change::PutRetained { message } => {
                let value = record::encode_retained(message).map_err(Encode)?;
                w.put(&record::retained_key(&message.topic), &value)
                    .map_err(Engine)?;
            }
            Change::DeleteRetained { topic } => {
                w.delete(&record::retained_key(topic)).map_err(Engine)?
            }
            Change::PutWill { client, will } => {
                let value = record::encode_will(will).map_err(Encode)?;
                w.put(&record::will_key(client), &value).map_err(Engine)?;
            }
            Change::DeleteWill { client } => {
                w.delete(&record::will_key(client)).map_err(Engine)?;
            }
        }
    }
    Ok(())
}

/// The first key after every key starting with `prefix` (`None`: no such key, the range is
/// open-ended).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Rebuilds the state from every `(key, value)` pair in key order. An undecodable record is an
/// error naming its key: the broker never starts on silently discarded data.
pub(super) fn recover<I, E>(pairs: I) -> Result<Recovered, String>
where
    I: IntoIterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
    E: std::fmt::Display,
{
    let now = Instant::now();
    let now_unix = unix_millis();
    let mut sessions: BTreeMap<ByteString, RecoveredSession> = BTreeMap::new();
    let mut retained = Vec::new();
    let mut orphans = 0usize;
    for pair in pairs {
        let (key, value) = pair.map_err(|e| e.to_string())?;
        let decoded = record::decode_key(&key).map_err(|e| format!("key {key:02x?}: {e}"))?;
        let bad = |e: String| format!("record {decoded:?}: {e}");
        match &decoded {
            Key::Session(client) => {
                let record = record::decode_session(&value).map_err(bad)?;
                sessions.insert(
                    client.clone(),
                    RecoveredSession {
                        client: client.clone(),
                        record,
                        subscriptions: Vec::new(),
                        queue: Vec::new(),
                        inbound: Vec::new(),
                        will: None,
                    },
                );
            }
            Key::Retained(_) => {
                retained.push(record::decode_retained(&value, now, now_unix).map_err(bad)?)
            }
            // Keys sort by kind first, so every session record precedes the rest of its data.
            Key::Subscription(client, filter) => {
                let granted = record::decode_granted(&value).map_err(bad)?;
                match sessions.get_mut(client) {
                    Some(s) => s.subscriptions.push((filter.clone(), granted)),
                    None => orphans += 1,
                }
            }
            Key::Queued(client, seq) => {
                let entry = record::decode_queued(&value, now, now_unix).map_err(bad)?;
                match sessions.get_mut(client) {
                    Some(s) => s.queue.push((*seq, entry)),
                    None => orphans += 1,
                }
            }
            Key::Inbound(client, id) => match sessions.get_mut(client) {
                Some(s) => s.inbound.push(*id),
                None => orphans += 1,
            },
            Key::Will(client) => {
                let will = record::decode_will(&value).map_err(bad)?;
                match sessions.get_mut(client) {
                    Some(s) => s.will = Some(will),
                    None => orphans += 1,
                }
            }
        }
    }
    if orphans > 0 {
        // A session's record is written before anything else of it and deleted together with
        // everything else, in one commit: this cannot happen with a store this build wrote.
        tracing::warn!(
            orphans,
            "records without a session in the store were ignored"
        );
    }
    Ok(Recovered {
        sessions: sessions.into_values().collect(),
        retained,
    })
}

/// An in-memory key-value space (the memory store, tests).
impl KvWrite for BTreeMap<Vec<u8>, Vec<u8>> {
    type Error = std::convert::Infallible;

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Self::Error> {
        self.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.remove(key);
        Ok(())
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), Self::Error> {
        let doomed: Vec<Vec<u8>> = self
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.remove(&k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_exactly_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
