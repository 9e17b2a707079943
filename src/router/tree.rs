//! The subscription tree: topic filters → subscribers, matched against topic names.
//!
//! One trie node per filter level. Literal levels live in a hash map (foldhash, randomly seeded)
//! keyed by the level's bytes, stored inline when short; `+` and `#` have their own slots so a
//! match never hashes a wildcard. Each node keeps its
//! subscribers in a `Vec` (fan-out is a plain slice walk) with a hash index beside it once the
//! list grows, so subscribe and unsubscribe stay O(1) for very popular filters too.
//!
//! Everything that walks the trie — matching, pruning, counting, even dropping — is iterative:
//! a peer can send a filter or topic with 65 535 levels, and recursion that deep would overflow
//! the stack.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// Filter level that matches exactly one topic level (MQTT 3.1.1 section 4.7.1.3).
const SINGLE: &str = "+";
/// Filter level that matches any number of trailing levels (MQTT 3.1.1 section 4.7.1.2).
const MULTI: &str = "#";

/// Builds the hasher of the level maps.
pub(crate) type LevelHasher = foldhash::fast::RandomState;

/// Children of a trie node, keyed by level.
pub(crate) type LevelMap<T> = HashMap<LevelKey, T, LevelHasher>;

/// Longest level kept inline in a [`LevelKey`] (the key is then 24 bytes, like a `String`).
const INLINE_LEVEL: usize = 22;

/// A level of a filter or topic as a map key: stored inline when short (almost always), so a
/// lookup compares it without chasing a pointer and creating a node costs no extra allocation.
/// Equality and hashing are those of the level's bytes, which makes `&[u8]` lookups work.
#[derive(Clone)]
pub(crate) enum LevelKey {
    /// At most [`INLINE_LEVEL`] bytes.
    Inline { len: u8, buf: [u8; INLINE_LEVEL] },
    /// Longer levels.
    Heap(Box<[u8]>),
}

impl LevelKey {
    pub(crate) fn new(level: &str) -> Self {
        let bytes = level.as_bytes();
        let mut buf = [0; INLINE_LEVEL];
        match (buf.get_mut(..bytes.len()), u8::try_from(bytes.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(bytes);
                Self::Inline { len, buf }
            }
            _ => Self::Heap(bytes.into()),
        }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, buf } => buf.get(..usize::from(*len)).unwrap_or_default(),
            Self::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for LevelKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for LevelKey {}

impl Hash for LevelKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly like `[u8]` for `Borrow<[u8]>` lookups.
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for LevelKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Position meaning "every level of the topic has been consumed".
pub(crate) const END: usize = usize::MAX;

/// Returns the level that starts at byte `pos` of `s` and the position of the level after it
/// ([`END`] when it is the last one). `pos` must not be [`END`].
#[inline]
pub(crate) fn level_at(s: &str, pos: usize) -> (&str, usize) {
    let rest = s.get(pos..).unwrap_or("");
    match rest.split_once('/') {
        Some((level, _)) => (level, pos + level.len() + 1),
        None => (rest, END),
    }
}

/// A LIFO stack for tree walks that lives on the call stack until it holds more than `N`
/// entries, so an ordinary walk never allocates while a pathological one still cannot overflow.
pub(crate) struct WalkStack<T: Copy, const N: usize> {
    inline: [T; N],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy, const N: usize> WalkStack<T, N> {
    /// An empty stack; `filler` only initializes the unused inline slots.
    #[inline]
    pub(crate) fn new(filler: T) -> Self {
        Self {
            inline: [filler; N],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) if self.spill.is_empty() => {
                *slot = item;
                self.len += 1;
            }
            _ => self.spill.push(item),
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<T> {
        // Spilled entries are always newer than the inline ones.
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline.get(self.len).copied()
    }
}

/// Above this many subscribers a node indexes them by key.
const INDEX_ABOVE: usize = 16;
/// Below this many subscribers the index is dropped again (hysteresis against flapping).
const UNINDEX_BELOW: usize = 8;

/// The subscribers of one filter: a dense list for iteration plus, when long, a key → position
/// index for O(1) insert and remove (removal is `swap_remove`).
struct Subscribers<K, V> {
    entries: Vec<(K, V)>,
    #[allow(
        clippy::box_collection,
        reason = "rarely present: boxing keeps the common (small) node 40 bytes smaller"
    )]
    index: Option<Box<HashMap<K, usize>>>,
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: None,
        }
    }
}

impl<K: Eq + Hash + Clone, V> Subscribers<K, V> {
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.position(&key)
            && let Some((_, slot)) = self.entries.get_mut(i)
        {
            return Some(std::mem::replace(slot, value));
        }
        let at = self.entries.len();
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), at);
        }
        if self.entries.capacity() == 0 {
            // Most filters have a single subscriber: don't start at the default capacity of 4.
            self.entries.reserve_exact(1);
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() > INDEX_ABOVE {
            let index = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect();
            self.index = Some(Box::new(index));
        }
        None
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.position(key)?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    fn get(&self, key: &K) -> Option<&V> {
        let i = self.position(key)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        if i >= self.entries.len() {
            return None;
        }
        let (_, value) = self.entries.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(key);
            // The former last entry now sits at `i`.
            if let Some((moved, _)) = self.entries.get(i)
                && let Some(slot) = index.get_mut(moved)
            {
                *slot = i;
            }
            if self.entries.len() < UNINDEX_BELOW {
                self.index = None;
            } else if index.capacity() > 4 * index.len() {
                index.shrink_to_fit();
            }
        }
        if self.entries.capacity() > 8 && self.entries.capacity() > 4 * self.entries.len() {
            self.entries.shrink_to_fit();
        }
        Some(value)
    }
}

impl<K, V> Subscribers<K, V> {
    #[inline]
    fn for_each<'a>(&'a self, f: &mut impl FnMut(&'a K, &'a V)) {
        for (k, v) in &self.entries {
            f(k, v);
        }
    }
}

/// One filter level.
struct Node<K, V> {
    /// Children for literal levels (including the empty level).
    children: LevelMap<Node<K, V>>,
    /// Child for a `+` level.
    single: Option<Box<Node<K, V>>>,
    /// Child for a `#` level. Valid filters never give it children, only subscribers.
    multi: Option<Box<Node<K, V>>>,
    /// Subscribers of the filter that ends at this node.
    subs: Subscribers<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: LevelMap::default(),
            single: None,
            multi: None,
            subs: Subscribers::default(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn has_children(&self) -> bool {
        !self.children.is_empty() || self.single.is_some() || self.multi.is_some()
    }

    fn child_slots(&self) -> usize {
        self.children.len() + usize::from(self.single.is_some()) + usize::from(self.multi.is_some())
    }

    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            SINGLE => self.single.as_deref(),
            MULTI => self.multi.as_deref(),
            _ => self.children.get(level.as_bytes()),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            SINGLE => self.single.as_deref_mut(),
            MULTI => self.multi.as_deref_mut(),
            _ => self.children.get_mut(level.as_bytes()),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        match level {
            SINGLE => self.single.get_or_insert_with(Box::default),
            MULTI => self.multi.get_or_insert_with(Box::default),
            _ => self.children.entry(LevelKey::new(level)).or_default(),
        }
    }

    /// Detaches the child for `level` (dropped by the caller, iteratively).
    fn take_child(&mut self, level: &str) -> Option<Self> {
        let child = match level {
            SINGLE => self.single.take().map(|b| *b),
            MULTI => self.multi.take().map(|b| *b),
            _ => self.children.remove(level.as_bytes()),
        };
        if self.children.capacity() > 16 && self.children.capacity() > 4 * self.children.len() {
            self.children.shrink_to_fit();
        }
        child
    }

    /// Moves every child of this node onto `out`, leaving it childless.
    fn drain_children_into(&mut self, out: &mut Vec<Self>) {
        out.extend(self.children.drain().map(|(_, child)| child));
        out.extend(self.single.take().map(|b| *b));
        out.extend(self.multi.take().map(|b| *b));
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Drops the subtree without recursion: a chain of 65 535 levels must not overflow the stack.
    fn drop(&mut self) {
        if !self.has_children() {
            return;
        }
        let mut pending = Vec::new();
        self.drain_children_into(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.drain_children_into(&mut pending);
            // `node` is childless now, so its own drop returns at once.
        }
    }
}

/// A trie of topic filters, one level per node, with `+` and `#` children.
pub struct SubscriptionTree<K, V> {
    root: Node<K, V>,
    len: usize,
}

impl<K, V> fmt::Debug for SubscriptionTree<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately shallow: a derived, recursive Debug could overflow on a deep trie.
        f.debug_struct("SubscriptionTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Adds (or replaces) subscriber `key` on `filter`; returns the value it replaced.
    ///
    /// `filter` should have passed [`crate::topic::validate_topic_filter`] and had any
    /// `$share/{group}/` prefix removed; an invalid filter is stored but may never match.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_or_insert(level);
        }
        let old = node.subs.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of subscriber `key` on exactly `filter`, if subscribed.
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        let mut node = &self.root;
        for level in filter.split('/') {
            node = node.child(level)?;
        }
        node.subs.get(key)
    }

    /// Mutable access to the value of subscriber `key` on exactly `filter`, if subscribed.
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_mut(level)?;
        }
        node.subs.get_mut(key)
    }

    /// Removes subscriber `key` from `filter`; returns its value if it was subscribed.
    ///
    /// Nodes left without subscribers and children are freed.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.child_mut(level)?;
        }
        let value = node.subs.remove(key)?;
        self.len -= 1;
        self.prune(filter);
        Some(value)
    }

    /// Frees the nodes on `filter`'s path that no longer lead to any subscriber.
    fn prune(&mut self, filter: &str) {
        // Find the deepest node on the path that must stay: the root, or one with subscribers
        // or with children besides the path. Everything below it goes if the leaf is empty.
        let mut keep = 0;
        let mut node = &self.root;
        for (depth, level) in filter.split('/').enumerate() {
            if depth > 0 && (!node.subs.is_empty() || node.child_slots() > 1) {
                keep = depth;
            }
            match node.child(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if !node.subs.is_empty() || node.has_children() {
            return;
        }
        let mut levels = filter.split('/');
        let mut node = &mut self.root;
        for _ in 0..keep {
            match levels.next().and_then(|level| node.child_mut(level)) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            drop(node.take_child(level));
        }
    }

    /// Calls `f` for every (subscriber, value) whose filter matches `topic`. A subscriber with
    /// several matching filters is visited once per filter.
    ///
    /// The references live as long as the borrow of the tree, so `f` may collect them.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a K, &'a V)) {
        // [MQTT-4.7.2-1] filters starting with a wildcard must not match topics starting
        // with '$': the root's `+` and `#` children are skipped for such topics.
        let dollar = topic.starts_with('$');
        let mut pending: WalkStack<(&Node<K, V>, usize), 16> = WalkStack::new((&self.root, END));
        let mut node = &self.root;
        let mut pos = 0;
        loop {
            if pos == END {
                node.subs.for_each(&mut f);
                // '#' also matches the parent level: "a/#" matches "a" (section 4.7.1.2).
                if let Some(multi) = &node.multi {
                    multi.subs.for_each(&mut f);
                }
            } else {
                let (level, next) = level_at(topic, pos);
                if pos != 0 || !dollar {
                    if let Some(multi) = &node.multi {
                        multi.subs.for_each(&mut f);
                    }
                    // '+' matches exactly one level, even an empty one (section 4.7.1.3).
                    if let Some(single) = &node.single {
                        pending.push((single, next));
                    }
                }
                if let Some(child) = node.children.get(level.as_bytes()) {
                    node = child;
                    pos = next;
                    continue;
                }
            }
            match pending.pop() {
                Some((n, p)) => (node, pos) = (n, p),
                None => return,
            }
        }
    }

    /// Number of (filter, subscriber) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no subscription is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of trie nodes, the root included (1 for an empty tree). For tests and metrics.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.children.values());
            pending.extend(node.single.as_deref());
            pending.extend(node.multi.as_deref());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn matched(tree: &SubscriptionTree<u32, u32>, topic: &str) -> Vec<(u32, u32)> {
        // Collects references, as a router does before delivering.
        let mut refs: Vec<(&u32, &u32)> = Vec::new();
        tree.for_each_match(topic, |k, v| refs.push((k, v)));
        let mut out: Vec<(u32, u32)> = refs.into_iter().map(|(k, v)| (*k, *v)).collect();
        out.sort_unstable();
        out
    }

    fn keys(tree: &SubscriptionTree<u32, u32>, topic: &str) -> Vec<u32> {
        matched(tree, topic).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn empty_tree() {
        let tree: SubscriptionTree<u32, u32> = SubscriptionTree::default();
        assert!(tree.is_empty());
        assert_eq!(tree.len(), 0);
        assert_eq!(tree.node_count(), 1);
        assert!(matched(&tree, "a/b").is_empty());
        assert!(matched(&tree, "").is_empty());
        assert_eq!(format!("{tree:?}"), "SubscriptionTree { len: 0, .. }");
    }

    #[test]
    fn insert_replace_remove() {
        let mut tree = SubscriptionTree::new();
        assert_eq!(tree.insert("a/b", 1u32, 10u32), None);
        assert_eq!(tree.insert("a/b", 1, 11), Some(10));
        assert_eq!(tree.insert("a/b", 2, 20), None);
        assert_eq!(tree.insert("a/+", 1, 12), None);
        assert_eq!(tree.len(), 3);
        assert_eq!(matched(&tree, "a/b"), vec![(1, 11), (1, 12), (2, 20)]);
        assert_eq!(tree.remove("a/b", &3), None);
        assert_eq!(tree.remove("a/c", &1), None);
        assert_eq!(tree.remove("a/b/c", &1), None);
        assert_eq!(tree.remove("a/b", &1), Some(11));
        assert_eq!(tree.remove("a/b", &1), None);
        assert_eq!(tree.len(), 2);
        assert_eq!(matched(&tree, "a/b"), vec![(1, 12), (2, 20)]);
        assert_eq!(tree.remove("a/+", &1), Some(12));
        assert_eq!(tree.remove("a/b", &2), Some(20));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn spec_multi_level_examples() {
        // MQTT 3.1.1 section 4.7.1.2.
        let mut tree = SubscriptionTree::new();
        tree.insert("sport/tennis/player1/#", 1u32, 0u32);
        tree.insert("sport/#", 2, 0);
        tree.insert("#", 3, 0);
        assert_eq!(keys(&tree, "sport/tennis/player1"), vec![1, 2, 3]);
        assert_eq!(keys(&tree, "sport/tennis/player1/ranking"), vec![1, 2, 3]);
        assert_eq!(
            keys(&tree, "sport/tennis/player1/score/wimbledon"),
            vec![1, 2, 3]
        );
        assert_eq!(keys(&tree, "sport/tennis/player2"), vec![2, 3]);
        assert_eq!(keys(&tree, "sport"), vec![2, 3]);
        assert_eq!(keys(&tree, "sport/"), vec![2, 3]);
        assert_eq!(keys(&tree, "sports"), vec![3]);
    }

    #[test]
    fn spec_single_level_examples() {
        // MQTT 3.1.1 section 4.7.1.3.
        let mut tree = SubscriptionTree::new();
        tree.insert("sport/tennis/+", 1u32, 0u32);
        tree.insert("sport/+", 2, 0);
        tree.insert("+/+", 3, 0);
        tree.insert("/+", 4, 0);
        tree.insert("+", 5, 0);
        tree.insert("+/tennis/#", 6, 0);
        assert_eq!(keys(&tree, "sport/tennis/player1"), vec![1, 6]);
        assert_eq!(keys(&tree, "sport/tennis/player1/ranking"), vec![6]);
        assert_eq!(keys(&tree, "sport"), vec![5]);
        assert_eq!(keys(&tree, "sport/"), vec![2, 3]);
        assert_eq!(keys(&tree, "/finance"), vec![3, 4]);
        assert_eq!(keys(&tree, "finance"), vec![5]);
        assert_eq!(keys(&tree, "sport/tennis"), vec![2, 3, 6]);
    }

    #[test]
    fn empty_levels() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a//b", 1u32, 0u32);
        tree.insert("/a", 2, 0);
        tree.insert("a/", 3, 0);
        tree.insert("a/+/b", 4, 0);
        tree.insert("/", 5, 0);
        assert_eq!(keys(&tree, "a//b"), vec![1, 4]);
        assert_eq!(keys(&tree, "a/b"), Vec::<u32>::new());
        assert_eq!(keys(&tree, "/a"), vec![2]);
        assert_eq!(keys(&tree, "a"), Vec::<u32>::new());
        assert_eq!(keys(&tree, "a/"), vec![3]);
        assert_eq!(keys(&tree, "/"), vec![5]);
        assert_eq!(keys(&tree, "//"), Vec::<u32>::new());
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1]
        let mut tree = SubscriptionTree::new();
        tree.insert("#", 1u32, 0u32);
        tree.insert("+/monitor/Clients", 2, 0);
        tree.insert("$SYS/#", 3, 0);
        tree.insert("$SYS/monitor/+", 4, 0);
        tree.insert("+", 5, 0);
        tree.insert("a/+", 6, 0);
        assert_eq!(keys(&tree, "$SYS/x"), vec![3]);
        assert_eq!(keys(&tree, "$SYS"), vec![3]);
        assert_eq!(keys(&tree, "$SYS/monitor/Clients"), vec![3, 4]);
        assert_eq!(keys(&tree, "$"), Vec::<u32>::new());
        assert_eq!(keys(&tree, "x/monitor/Clients"), vec![1, 2]);
        assert_eq!(keys(&tree, "a/$b"), vec![1, 6]);
    }

    #[test]
    fn many_subscribers_on_one_filter() {
        let mut tree = SubscriptionTree::new();
        let n = 1000u32;
        for k in 0..n {
            assert_eq!(tree.insert("fan/out", k, k * 2), None);
        }
        for k in (0..n).step_by(3) {
            assert_eq!(tree.insert("fan/out", k, k * 3), Some(k * 2));
        }
        assert_eq!(tree.len(), n as usize);
        let got = matched(&tree, "fan/out");
        assert_eq!(got.len(), n as usize);
        for (k, v) in got {
            assert_eq!(v, if k % 3 == 0 { k * 3 } else { k * 2 });
        }
        // Remove in an order that exercises swap_remove and the index updates.
        for k in (0..n).rev().step_by(2) {
            assert!(tree.remove("fan/out", &k).is_some());
        }
        assert_eq!(tree.len(), (n / 2) as usize);
        let want: Vec<u32> = (0..n).filter(|k| k % 2 == 0).collect();
        assert_eq!(keys(&tree, "fan/out"), want);
        for k in want {
            assert!(tree.remove("fan/out", &k).is_some());
            assert_eq!(tree.remove("fan/out", &k), None);
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn pruning_keeps_shared_prefixes() {
        let mut tree = SubscriptionTree::new();
        tree.insert("a/b/c/d", 1u32, 0u32);
        tree.insert("a/b", 2, 0);
        tree.insert("a/+/c", 3, 0);
        tree.insert("a/#", 4, 0);
        assert_eq!(tree.node_count(), 8);
        tree.remove("a/b/c/d", &1);
        // a, a/b, a/+, a/+/c, a/# and the root remain.
        assert_eq!(tree.node_count(), 6);
        assert_eq!(keys(&tree, "a/b"), vec![2, 4]);
        tree.remove("a/b", &2);
        assert_eq!(tree.node_count(), 5);
        tree.remove("a/#", &4);
        assert_eq!(tree.node_count(), 4);
        assert_eq!(keys(&tree, "a/x/c"), vec![3]);
        tree.remove("a/+/c", &3);
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn invalid_filters_do_not_panic() {
        let mut tree = SubscriptionTree::new();
        for f in ["", "a/#/b", "#/#", "a+/b", "++"] {
            tree.insert(f, 1u32, 0u32);
        }
        let _ = keys(&tree, "a/x/b");
        let _ = keys(&tree, "");
        for f in ["", "a/#/b", "#/#", "a+/b", "++"] {
            assert_eq!(tree.remove(f, &1), Some(0), "{f:?}");
        }
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn deep_filters_and_topics_do_not_overflow_the_stack() {
        // 65 535 bytes of '/' is a valid filter and topic with 65 536 empty levels.
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let deep = "/".repeat(65_535);
                let plus = vec!["+"; 32_768].join("/");
                let mut tree = SubscriptionTree::new();
                tree.insert(&deep, 1u32, 0u32);
                tree.insert(&plus, 2, 0);
                tree.insert(&format!("{deep}#"), 3, 0);
                assert_eq!(keys(&tree, &deep), vec![1, 3]);
                assert_eq!(keys(&tree, &vec!["x"; 32_768].join("/")), vec![2]);
                assert!(tree.node_count() > 65_536);
                assert_eq!(tree.remove(&deep, &1), Some(0));
                assert_eq!(tree.remove(&plus, &2), Some(0));
                // Dropped with one deep chain still in it.
                drop(tree);
            });
        assert!(handle.is_ok_and(|h| h.join().is_ok()));
    }

    #[test]
    fn level_keys_inline_and_heap() {
        for len in [0, 1, 21, 22, 23, 64, 300] {
            let level = "x".repeat(len);
            let key = LevelKey::new(&level);
            assert_eq!(key.as_bytes(), level.as_bytes());
            assert_eq!(matches!(key, LevelKey::Inline { .. }), len <= INLINE_LEVEL);
            assert!(key == LevelKey::new(&level));
            assert!(key != LevelKey::new(&format!("{level}y")));
        }
        // Multi-byte characters are compared byte for byte ([MQTT-4.7.3-4]).
        let key = LevelKey::new("日本語のトピック名前");
        assert_eq!(key.as_bytes(), "日本語のトピック名前".as_bytes());
        assert!(matches!(key, LevelKey::Heap(_)));
    }

    #[test]
    fn long_and_similar_levels() {
        let a21 = "a".repeat(21);
        let a22 = "a".repeat(22);
        let a23 = "a".repeat(23);
        let long = "b".repeat(1000);
        let mut tree = SubscriptionTree::new();
        tree.insert(&format!("{a21}/{a22}/{a23}"), 1u32, 0u32);
        tree.insert(&format!("{a22}/{a23}/{long}"), 2, 0);
        tree.insert(&format!("{a23}/+/#"), 3, 0);
        assert_eq!(keys(&tree, &format!("{a21}/{a22}/{a23}")), vec![1]);
        assert_eq!(
            keys(&tree, &format!("{a21}/{a22}/{a22}")),
            Vec::<u32>::new()
        );
        assert_eq!(keys(&tree, &format!("{a22}/{a23}/{long}")), vec![2]);
        assert_eq!(
            keys(&tree, &format!("{a22}/{a23}/{long}b")),
            Vec::<u32>::new()
        );
        assert_eq!(keys(&tree, &format!("{a23}/{long}")), vec![3]);
        assert_eq!(tree.remove(&format!("{a22}/{a23}/{long}"), &2), Some(0));
        assert_eq!(tree.remove(&format!("{a21}/{a22}/{a23}"), &1), Some(0));
        assert_eq!(tree.remove(&format!("{a23}/+/#"), &3), Some(0));
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn walk_stack_is_lifo_across_the_spill() {
        let mut stack: WalkStack<u32, 4> = WalkStack::new(0);
        assert_eq!(stack.pop(), None);
        for i in 1..=10 {
            stack.push(i);
        }
        for i in (6..=10).rev() {
            assert_eq!(stack.pop(), Some(i));
        }
        stack.push(99);
        for want in [99, 5, 4, 3, 2, 1] {
            assert_eq!(stack.pop(), Some(want));
        }
        assert_eq!(stack.pop(), None);
    }

    #[test]
    fn level_positions() {
        assert_eq!(level_at("a/bc/", 0), ("a", 2));
        assert_eq!(level_at("a/bc/", 2), ("bc", 5));
        assert_eq!(level_at("a/bc/", 5), ("", END));
        assert_eq!(level_at("", 0), ("", END));
        assert_eq!(level_at("/", 0), ("", 1));
    }

    #[test]
    fn trees_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SubscriptionTree<std::sync::Arc<str>, u64>>();
    }

    /// Filters built from a tiny alphabet, so that filters and topics collide often.
    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![
            3 => Just(""), 3 => Just("a"), 3 => Just("b"), 2 => Just("$s"), 1 => Just("$"),
            3 => Just("+"),
        ];
        (
            prop::collection::vec(level, 0..5),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(mut levels, multi)| {
                if multi {
                    levels.push("#");
                }
                levels.join("/")
            })
            .prop_filter("valid filter", |f| {
                crate::topic::validate_topic_filter(f).is_ok()
            })
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![
            3 => Just(""), 3 => Just("a"), 3 => Just("b"), 2 => Just("$s"), 1 => Just("$"),
            1 => Just("c"),
        ];
        prop::collection::vec(level, 1..6).prop_map(|levels| levels.join("/"))
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32, u32),
        Remove(String, u32),
    }

    fn op_strategy(filters: Vec<String>) -> impl Strategy<Value = Op> {
        let pick = prop::sample::select(filters);
        prop_oneof![
            3 => (pick.clone(), 0..6u32, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
            2 => (pick, 0..6u32).prop_map(|(f, k)| Op::Remove(f, k)),
        ]
    }

    fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(filter_strategy(), 1..12)
            .prop_flat_map(|filters| prop::collection::vec(op_strategy(filters), 0..80))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn tree_agrees_with_brute_force(
            ops in ops_strategy(),
            topics in prop::collection::vec(topic_strategy(), 1..16),
        ) {
            let mut tree = SubscriptionTree::new();
            // The model: (filter, key) -> value.
            let mut model: std::collections::BTreeMap<(String, u32), u32> = Default::default();
            for op in &ops {
                match op {
                    Op::Insert(f, k, v) => {
                        let want = model.insert((f.clone(), *k), *v);
                        prop_assert_eq!(tree.insert(f, *k, *v), want);
                    }
                    Op::Remove(f, k) => {
                        let want = model.remove(&(f.clone(), *k));
                        prop_assert_eq!(tree.remove(f, k), want);
                    }
                }
                prop_assert_eq!(tree.len(), model.len());
                prop_assert_eq!(tree.is_empty(), model.is_empty());
            }
            for topic in &topics {
                let mut got: Vec<(u32, u32)> = Vec::new();
                tree.for_each_match(topic, |k, v| got.push((*k, *v)));
                got.sort_unstable();
                let mut want: Vec<(u32, u32)> = model
                    .iter()
                    .filter(|((f, _), _)| matches(f, topic))
                    .map(|((_, k), v)| (*k, *v))
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(got, want, "topic {:?}", topic);
            }
            // Node count never exceeds what the stored filters need.
            let distinct: BTreeSet<&str> = model.keys().map(|(f, _)| f.as_str()).collect();
            let levels: usize = distinct.iter().map(|f| f.split('/').count()).sum();
            prop_assert!(tree.node_count() <= 1 + levels);
            let entries: Vec<(String, u32)> = model.keys().cloned().collect();
            for (f, k) in entries {
                prop_assert!(tree.remove(&f, &k).is_some());
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.node_count(), 1);
        }
    }
}
