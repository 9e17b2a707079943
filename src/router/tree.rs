//! The subscription tree: topic filters → subscribers, matched against topic names.

use std::hash::Hash;

/// A trie of topic filters, one level per node, with `+` and `#` children.
#[derive(Debug)]
pub struct SubscriptionTree<K, V> {
    _p: std::marker::PhantomData<(K, V)>,
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        todo!()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        todo!()
    }
    /// Adds (or replaces) subscriber `key` on `filter`; returns the value it replaced.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let _ = (filter, key, value);
        todo!()
    }
    /// Removes subscriber `key` from `filter`; returns its value if it was subscribed.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let _ = (filter, key);
        todo!()
    }
    /// Calls `f` for every (subscriber, value) whose filter matches `topic`. A subscriber with
    /// several matching filters is visited once per filter.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a K, &'a V)) {
        let _ = (topic, &mut f);
        todo!()
    }
    /// Number of (filter, subscriber) entries.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// True when no subscription is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
