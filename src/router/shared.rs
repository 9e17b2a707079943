//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 section 4.8.2; also offered to
//! MQTT 3.1.1 clients, as EMQX and Mosquitto do): each message matching the filter goes to ONE
//! member of the group, chosen by the configured [`SharedStrategy`].

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytestring::ByteString;
use rand::Rng;

use super::Subscriber;
use crate::config::SharedStrategy;

/// One share group on one filter, stored in the shared-subscription tree under the filter with
/// the group name as key.
#[derive(Debug)]
pub struct SharedGroup {
    /// The whole subscription filter, `$share/{group}/{filter}`, as subscribed.
    pub share: ByteString,
    /// The members, in subscription order.
    pub members: Vec<Subscriber>,
    /// Round-robin position.
    cursor: AtomicUsize,
}

impl SharedGroup {
    /// An empty group for `share`.
    pub fn new(share: ByteString) -> SharedGroup {
        SharedGroup {
            share,
            members: Vec::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Adds or replaces the member with `member.session.key`; returns whether it was there.
    pub fn upsert(&mut self, member: Subscriber) -> bool {
        match self
            .members
            .iter_mut()
            .find(|m| m.session.key == member.session.key)
        {
            Some(slot) => {
                *slot = member;
                true
            }
            None => {
                self.members.push(member);
                false
            }
        }
    }

    /// Removes the member with session key `key`; returns whether it was there.
    pub fn remove(&mut self, key: u64) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m.session.key != key);
        self.members.len() != before
    }

    /// Picks the member that gets a message: starting where `strategy` says, the first member
    /// that is online; when none is, the member at the starting point (its session queues the
    /// message until it reconnects). Members with session key `exclude` are skipped.
    pub fn pick(
        &self,
        strategy: SharedStrategy,
        publisher_id: &str,
        topic: &str,
        exclude: u64,
    ) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let hasher = foldhash::fast::FixedState::default();
        let start = match strategy {
            SharedStrategy::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed),
            SharedStrategy::Random => rand::thread_rng().gen_range(0..n),
            SharedStrategy::HashClientId => hasher.hash_one(publisher_id) as usize,
            SharedStrategy::HashTopic => hasher.hash_one(topic) as usize,
        } % n;
        let candidates = || {
            (0..n)
                .filter_map(move |k| self.members.get((start + k) % n))
                .filter(move |m| m.session.key != exclude)
        };
        candidates()
            .find(|m| m.session.online.load(Ordering::Acquire))
            .or_else(|| candidates().next())
    }
}
