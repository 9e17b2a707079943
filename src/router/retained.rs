//! The retained-message store: one value per topic name, looked up by topic filter.
//!
//! The dual of the subscription tree: a trie of topic-name levels, walked with a filter. An
//! exact filter level follows one child, `+` fans out to every child, `#` takes the whole
//! subtree, node included. Each stored value keeps its full topic name beside it so a match can
//! report it without building strings. All walks are iterative (see [`super::tree`]).

use std::fmt;

use super::tree::{END, LevelKey, LevelMap, WalkStack, level_at};

/// Walk position meaning "report this node and everything below it" (a `#` was reached).
const SUBTREE: usize = usize::MAX - 1;

/// One topic level.
struct Node<V> {
    children: LevelMap<Node<V>>,
    /// The retained value of the topic that ends here, with that topic's full name.
    value: Option<(Box<str>, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: LevelMap::default(),
            value: None,
        }
    }
}

impl<V> Drop for Node<V> {
    /// Drops the subtree without recursion: a chain of 65 535 levels must not overflow the stack.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending: Vec<Self> = self.children.drain().map(|(_, c)| c).collect();
        while let Some(mut node) = pending.pop() {
            pending.extend(node.children.drain().map(|(_, c)| c));
        }
    }
}

impl<V> Node<V> {
    #[inline]
    fn report<'a>(&'a self, f: &mut impl FnMut(&'a str, &'a V)) {
        if let Some((topic, value)) = &self.value {
            f(topic, value);
        }
    }
}

/// A trie of topic names holding one retained value each.
pub struct RetainedTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> fmt::Debug for RetainedTree<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately shallow: a derived, recursive Debug could overflow on a deep trie.
        f.debug_struct("RetainedTree")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> RetainedTree<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Stores `value` as the retained message of `topic`, returning the one it replaces.
    ///
    /// `topic` should have passed [`crate::topic::validate_topic_name`]; every level is
    /// stored literally.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(LevelKey::new(level)).or_default();
        }
        match &mut node.value {
            Some((_, old)) => Some(std::mem::replace(old, value)),
            slot @ None => {
                *slot = Some((Box::from(topic), value));
                self.len += 1;
                None
            }
        }
    }

    /// Deletes the retained message of `topic`.
    ///
    /// Nodes left without a value and children are freed.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level.as_bytes())?;
        }
        let (_, value) = node.value.take()?;
        self.len -= 1;
        self.prune(topic);
        Some(value)
    }

    /// Frees the nodes on `topic`'s path that no longer lead to any value.
    fn prune(&mut self, topic: &str) {
        // The deepest node on the path that must stay: the root, or one with a value or with
        // children besides the path. Everything below it goes if the leaf is empty.
        let mut keep = 0;
        let mut node = &self.root;
        for (depth, level) in topic.split('/').enumerate() {
            if depth > 0 && (node.value.is_some() || node.children.len() > 1) {
                keep = depth;
            }
            match node.children.get(level.as_bytes()) {
                Some(child) => node = child,
                None => return,
            }
        }
        if node.value.is_some() || !node.children.is_empty() {
            return;
        }
        let mut levels = topic.split('/');
        let mut node = &mut self.root;
        for _ in 0..keep {
            match levels
                .next()
                .and_then(|level| node.children.get_mut(level.as_bytes()))
            {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            drop(node.children.remove(level.as_bytes()));
            let map = &mut node.children;
            if map.capacity() > 16 && map.capacity() > 4 * map.len() {
                map.shrink_to_fit();
            }
        }
    }

    /// Calls `f` with every retained value whose topic matches `filter` (same rules as
    /// [`crate::topic::matches`], including the `$` rule).
    ///
    /// The references live as long as the borrow of the store, so `f` may collect them.
    pub fn for_each_match<'a>(&'a self, filter: &str, mut f: impl FnMut(&'a str, &'a V)) {
        // [MQTT-4.7.2-1] a filter starting with a wildcard must not match topics starting
        // with '$': at the root, such a filter skips the children whose level starts with '$'.
        let wild_first = filter.starts_with('+') || filter.starts_with('#');
        let mut pending: WalkStack<(&Node<V>, usize), 16> = WalkStack::new((&self.root, END));
        let mut node = &self.root;
        let mut pos = 0;
        loop {
            match pos {
                END => node.report(&mut f),
                SUBTREE => {
                    node.report(&mut f);
                    for child in node.children.values() {
                        pending.push((child, SUBTREE));
                    }
                }
                _ => {
                    let (level, next) = level_at(filter, pos);
                    let skip_dollar = pos == 0 && wild_first;
                    match level {
                        // '#' matches the parent level too: "a/#" matches "a" (section 4.7.1.2).
                        "#" => {
                            node.report(&mut f);
                            for (name, child) in &node.children {
                                if !(skip_dollar && name.as_bytes().starts_with(b"$")) {
                                    pending.push((child, SUBTREE));
                                }
                            }
                        }
                        // '+' matches exactly one level, even an empty one (section 4.7.1.3).
                        "+" => {
                            for (name, child) in &node.children {
                                if !(skip_dollar && name.as_bytes().starts_with(b"$")) {
                                    pending.push((child, next));
                                }
                            }
                        }
                        _ => {
                            if let Some(child) = node.children.get(level.as_bytes()) {
                                node = child;
                                pos = next;
                                continue;
                            }
                        }
                    }
                }
            }
            match pending.pop() {
                Some((n, p)) => (node, pos) = (n, p),
                None => return,
            }
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of trie nodes, the root included (1 for an empty store). For tests and metrics.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![&self.root];
        while let Some(node) = pending.pop() {
            count += 1;
            pending.extend(node.children.values());
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::matches;
    use proptest::prelude::*;

    fn matched(tree: &RetainedTree<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut refs: Vec<(&str, &u32)> = Vec::new();
        tree.for_each_match(filter, |t, v| refs.push((t, v)));
        let mut out: Vec<(String, u32)> =
            refs.into_iter().map(|(t, v)| (t.to_owned(), *v)).collect();
        out.sort_unstable();
        out
    }

    fn topics(tree: &RetainedTree<u32>, filter: &str) -> Vec<String> {
        matched(tree, filter).into_iter().map(|(t, _)| t).collect()
    }

    fn store(names: &[&str]) -> RetainedTree<u32> {
        let mut tree = RetainedTree::new();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(tree.insert(name, i as u32), None);
        }
        tree
    }

    #[test]
    fn empty_store() {
        let tree: RetainedTree<u32> = RetainedTree::default();
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
        assert!(matched(&tree, "#").is_empty());
        assert!(matched(&tree, "a/+").is_empty());
        assert_eq!(format!("{tree:?}"), "RetainedTree { len: 0, .. }");
    }

    #[test]
    fn insert_replace_remove() {
        let mut tree = RetainedTree::new();
        assert_eq!(tree.insert("a/b", 1u32), None);
        assert_eq!(tree.insert("a/b", 2), Some(1));
        assert_eq!(tree.insert("a", 3), None);
        assert_eq!(tree.len(), 2);
        assert_eq!(matched(&tree, "a/b"), vec![("a/b".to_owned(), 2)]);
        assert_eq!(tree.remove("a/c"), None);
        assert_eq!(tree.remove("a/b/c"), None);
        assert_eq!(tree.remove("a/b"), Some(2));
        assert_eq!(tree.remove("a/b"), None);
        assert_eq!(tree.node_count(), 2);
        assert_eq!(tree.remove("a"), Some(3));
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn spec_multi_level_examples() {
        // MQTT 3.1.1 section 4.7.1.2, from the retained side.
        let tree = store(&[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "sport",
            "sports",
        ]);
        assert_eq!(
            topics(&tree, "sport/tennis/player1/#"),
            vec![
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
            ]
        );
        assert_eq!(topics(&tree, "sport/#").len(), 5);
        assert!(topics(&tree, "sport/#").contains(&"sport".to_owned()));
        assert_eq!(topics(&tree, "#").len(), 6);
    }

    #[test]
    fn spec_single_level_examples() {
        // MQTT 3.1.1 section 4.7.1.3, from the retained side.
        let tree = store(&[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport",
            "sport/",
            "/finance",
            "finance",
        ]);
        assert_eq!(
            topics(&tree, "sport/tennis/+"),
            vec!["sport/tennis/player1"]
        );
        assert_eq!(topics(&tree, "sport/+"), vec!["sport/"]);
        assert_eq!(topics(&tree, "+/+"), vec!["/finance", "sport/"]);
        assert_eq!(topics(&tree, "/+"), vec!["/finance"]);
        assert_eq!(topics(&tree, "+"), vec!["finance", "sport"]);
        assert_eq!(
            topics(&tree, "+/tennis/#"),
            vec!["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
    }

    #[test]
    fn dollar_topics() {
        // [MQTT-4.7.2-1]
        let tree = store(&[
            "$SYS/x",
            "$SYS",
            "$SYS/monitor/Clients",
            "a/$b",
            "x/monitor/Clients",
        ]);
        assert_eq!(topics(&tree, "#"), vec!["a/$b", "x/monitor/Clients"]);
        assert_eq!(
            topics(&tree, "+/monitor/Clients"),
            vec!["x/monitor/Clients"]
        );
        assert_eq!(topics(&tree, "+"), Vec::<String>::new());
        assert_eq!(
            topics(&tree, "$SYS/#"),
            vec!["$SYS", "$SYS/monitor/Clients", "$SYS/x"]
        );
        assert_eq!(
            topics(&tree, "$SYS/monitor/+"),
            vec!["$SYS/monitor/Clients"]
        );
        assert_eq!(topics(&tree, "a/+"), vec!["a/$b"]);
    }

    #[test]
    fn empty_levels() {
        let tree = store(&["a//b", "/a", "a/", "a", "/", "a/b"]);
        assert_eq!(topics(&tree, "a//b"), vec!["a//b"]);
        assert_eq!(topics(&tree, "a/+/b"), vec!["a//b"]);
        assert_eq!(topics(&tree, "a/+"), vec!["a/", "a/b"]);
        assert_eq!(topics(&tree, "+/"), vec!["/", "a/"]);
        assert_eq!(topics(&tree, "/#"), vec!["/", "/a"]);
        assert_eq!(topics(&tree, "a/#"), vec!["a", "a/", "a//b", "a/b"]);
    }

    #[test]
    fn wide_stores_spill_the_walk_stack() {
        let mut tree = RetainedTree::new();
        for i in 0..500u32 {
            tree.insert(&format!("w/{i}/x"), i);
            tree.insert(&format!("w/{i}"), i);
        }
        assert_eq!(topics(&tree, "w/+/x").len(), 500);
        assert_eq!(topics(&tree, "w/#").len(), 1000);
        assert_eq!(topics(&tree, "+/+").len(), 500);
        for i in 0..500u32 {
            assert_eq!(tree.remove(&format!("w/{i}/x")), Some(i));
            assert_eq!(tree.remove(&format!("w/{i}")), Some(i));
        }
        assert_eq!(tree.node_count(), 1);
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let deep = "/".repeat(65_535);
                let mut tree = RetainedTree::new();
                tree.insert(&deep, 1u32);
                tree.insert(&format!("{deep}x"), 2);
                assert_eq!(matched(&tree, "#").len(), 2);
                assert_eq!(matched(&tree, &deep).len(), 1);
                assert_eq!(matched(&tree, &format!("{deep}+")).len(), 2);
                assert_eq!(tree.remove(&deep), Some(1));
                assert!(tree.node_count() > 65_536);
                drop(tree);
            });
        assert!(handle.is_ok_and(|h| h.join().is_ok()));
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            3 => Just(""), 3 => Just("a"), 3 => Just("b"), 2 => Just("$s"), 1 => Just("$"),
            1 => Just("c"),
        ]
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..6).prop_map(|levels| levels.join("/"))
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![4 => level(), 2 => Just("+")];
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

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u32),
        Remove(String),
    }

    fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(topic_strategy(), 1..16).prop_flat_map(|names| {
            let pick = prop::sample::select(names);
            let op = prop_oneof![
                3 => (pick.clone(), any::<u32>()).prop_map(|(t, v)| Op::Insert(t, v)),
                1 => pick.prop_map(Op::Remove),
            ];
            prop::collection::vec(op, 0..60)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn store_agrees_with_brute_force(
            ops in ops_strategy(),
            filters in prop::collection::vec(filter_strategy(), 1..16),
        ) {
            let mut tree = RetainedTree::new();
            let mut model: std::collections::BTreeMap<String, u32> = Default::default();
            for op in &ops {
                match op {
                    Op::Insert(t, v) => {
                        prop_assert_eq!(tree.insert(t, *v), model.insert(t.clone(), *v));
                    }
                    Op::Remove(t) => prop_assert_eq!(tree.remove(t), model.remove(t)),
                }
                prop_assert_eq!(tree.len(), model.len());
                prop_assert_eq!(tree.is_empty(), model.is_empty());
            }
            for filter in &filters {
                let got = matched(&tree, filter);
                let want: Vec<(String, u32)> = model
                    .iter()
                    .filter(|(t, _)| matches(filter, t))
                    .map(|(t, v)| (t.clone(), *v))
                    .collect();
                prop_assert_eq!(got, want, "filter {:?}", filter);
            }
            let levels: usize = model.keys().map(|t| t.split('/').count()).sum();
            prop_assert!(tree.node_count() <= 1 + levels);
            let names: Vec<String> = model.keys().cloned().collect();
            for t in names {
                prop_assert!(tree.remove(&t).is_some());
            }
            prop_assert!(tree.is_empty());
            prop_assert_eq!(tree.node_count(), 1);
        }
    }
}
