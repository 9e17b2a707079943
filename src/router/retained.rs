//! The retained-message store: one value per topic name, looked up by topic filter.

/// A trie of topic names holding one retained value each.
#[derive(Debug)]
pub struct RetainedTree<V> {
    _p: std::marker::PhantomData<V>,
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        todo!()
    }
}

impl<V> RetainedTree<V> {
    /// An empty store.
    pub fn new() -> Self {
        todo!()
    }
    /// Stores `value` as the retained message of `topic`, returning the one it replaces.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let _ = (topic, value);
        todo!()
    }
    /// Deletes the retained message of `topic`.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let _ = topic;
        todo!()
    }
    /// Calls `f` with every retained value whose topic matches `filter` (same rules as
    /// [`crate::topic::matches`], including the `$` rule).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let _ = (filter, &mut f);
        todo!()
    }
    /// Number of retained messages.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
