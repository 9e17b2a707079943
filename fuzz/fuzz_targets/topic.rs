//! Fuzz target for topic names, topic filters and the subscription tree.
//!
//! ```text
//! cargo +nightly fuzz run topic fuzz/corpus/topic fuzz/seeds/topic
//! ```
//!
//! The input is a sequence of subscribe / unsubscribe operations and topic look-ups, built from
//! a small alphabet of levels (`a`, `b`, `+`, `#`, `$SYS`, `$share`, the empty level…) plus
//! arbitrary strings, so that the fuzzer reaches deep, wildcard-heavy filters quickly.
//!
//! Checked:
//! - validation never panics, and the validators agree with each other: a valid shared filter
//!   is exactly one that [`topic::parse_shared`] splits, and that split puts the filter back
//!   together; every valid topic name is matched by itself and (unless it starts with `$`) by
//!   `#`; a filter starting with a wildcard never matches a topic starting with `$`
//!   ([MQTT-4.7.2-1]);
//! - DIFFERENTIAL: a [`SubscriptionTree`] built from the valid filters (shared ones with their
//!   `$share/{group}/` prefix removed, as the router does) reports, for every valid topic name,
//!   exactly the (subscriber, value) pairs whose filter the reference matcher
//!   [`topic::matches`] accepts; `insert`, `remove`, `get` and `len` agree with a plain map.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mqtt_server::router::tree::SubscriptionTree;
use mqtt_server::topic;

/// One level of a generated topic name or filter.
#[derive(Debug, Arbitrary)]
enum Level {
    A,
    B,
    Empty,
    Plus,
    Hash,
    DollarSys,
    DollarShare,
    Group,
    /// Anything at all, `/`, `+`, `#` and U+0000 included.
    Raw(String),
}

impl Level {
    fn push_to(&self, out: &mut String) {
        out.push_str(match self {
            Level::A => "a",
            Level::B => "b",
            Level::Empty => "",
            Level::Plus => "+",
            Level::Hash => "#",
            Level::DollarSys => "$SYS",
            Level::DollarShare => "$share",
            Level::Group => "g",
            Level::Raw(s) => s,
        });
    }
}

/// A topic name or filter: its levels joined with `/`.
#[derive(Debug, Arbitrary)]
struct Path(Vec<Level>);

impl Path {
    fn build(&self) -> String {
        let mut out = String::new();
        for (i, level) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            level.push_to(&mut out);
        }
        out
    }
}

#[derive(Debug, Arbitrary)]
enum Op {
    Subscribe {
        filter: Path,
        key: u8,
        value: u16,
    },
    Unsubscribe {
        filter: Path,
        key: u8,
    },
    /// Removes the `n`-th stored subscription (so that removals actually hit).
    UnsubscribeNth(u8),
    Match(Path),
}

fuzz_target!(|ops: Vec<Op>| {
    let mut tree: SubscriptionTree<u8, u16> = SubscriptionTree::new();
    // The model: (filter as stored in the tree, subscriber) -> value.
    let mut model: BTreeMap<(String, u8), u16> = BTreeMap::new();
    for op in &ops {
        match op {
            Op::Subscribe { filter, key, value } => {
                let filter = filter.build();
                let Some(stored) = check_filter(&filter) else {
                    continue;
                };
                let old = tree.insert(&stored, *key, *value);
                assert_eq!(
                    old,
                    model.insert((stored.clone(), *key), *value),
                    "insert {stored:?}"
                );
                assert_eq!(tree.get(&stored, key), Some(value));
            }
            Op::Unsubscribe { filter, key } => {
                let filter = filter.build();
                let Some(stored) = check_filter(&filter) else {
                    continue;
                };
                let old = tree.remove(&stored, key);
                assert_eq!(
                    old,
                    model.remove(&(stored.clone(), *key)),
                    "remove {stored:?}"
                );
                assert_eq!(tree.get(&stored, key), None);
            }
            Op::UnsubscribeNth(n) => {
                if model.is_empty() {
                    continue;
                }
                let index = usize::from(*n) % model.len();
                let Some(((filter, key), value)) =
                    model.iter().nth(index).map(|(k, v)| (k.clone(), *v))
                else {
                    continue;
                };
                assert_eq!(tree.remove(&filter, &key), Some(value), "remove {filter:?}");
                model.remove(&(filter, key));
            }
            Op::Match(path) => {
                let name = path.build();
                check_name(&name);
                if topic::validate_topic_name(&name).is_err() {
                    continue;
                }
                let mut got: Vec<(u8, u16)> = Vec::new();
                tree.for_each_match(&name, |k, v| got.push((*k, *v)));
                got.sort_unstable();
                let mut want: Vec<(u8, u16)> = model
                    .iter()
                    .filter(|((filter, _), _)| topic::matches(filter, &name))
                    .map(|((_, key), value)| (*key, *value))
                    .collect();
                want.sort_unstable();
                assert_eq!(got, want, "tree and reference disagree on topic {name:?}");
            }
        }
        assert_eq!(tree.len(), model.len());
        assert_eq!(tree.is_empty(), model.is_empty());
    }
    // Every node freed once the last subscription goes.
    let all: Vec<(String, u8)> = model.keys().cloned().collect();
    for (filter, key) in all {
        assert!(tree.remove(&filter, &key).is_some());
    }
    assert!(tree.is_empty());
    assert_eq!(
        tree.node_count(),
        1,
        "removing everything left nodes behind"
    );
});

/// Validates `filter` and cross-checks the validators; returns the filter the router would store
/// in the tree (the inner filter of a shared subscription), or `None` if `filter` is invalid.
fn check_filter(filter: &str) -> Option<String> {
    let valid = topic::validate_topic_filter(filter).is_ok();
    let shared = topic::parse_shared(filter);
    if let Some((group, inner)) = shared {
        assert!(valid, "parse_shared accepted the invalid filter {filter:?}");
        assert_eq!(format!("{}{group}/{inner}", topic::SHARE_PREFIX), filter);
        assert!(!group.is_empty() && !group.contains(['/', '+', '#']));
        assert!(!inner.is_empty());
    } else if valid {
        assert!(
            !filter.starts_with(topic::SHARE_PREFIX),
            "valid shared filter {filter:?} not split by parse_shared"
        );
    }
    if !valid {
        return None;
    }
    assert!(!filter.is_empty() && filter.len() <= topic::MAX_TOPIC_LEN && !filter.contains('\0'));
    let stored = shared.map_or(filter, |(_, inner)| inner);
    // [MQTT-4.7.1-2] '#' only as a whole last level; [MQTT-4.7.1-3] '+' only as a whole level.
    let levels: Vec<&str> = stored.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') {
            assert!(
                *level == "#" && i + 1 == levels.len(),
                "misplaced # in {filter:?}"
            );
        }
        if level.contains('+') {
            assert_eq!(*level, "+", "misplaced + in {filter:?}");
        }
    }
    Some(stored.to_owned())
}

/// Validates `name` and checks the matching rules that hold for every valid topic name.
fn check_name(name: &str) {
    let valid = topic::validate_topic_name(name).is_ok();
    // A name as a filter never panics the reference matcher, valid or not.
    let _ = topic::matches(name, name);
    if !valid {
        return;
    }
    assert!(!name.contains(['+', '#', '\0']));
    assert!(topic::matches(name, name), "{name:?} does not match itself");
    let dollar = name.starts_with('$');
    // [MQTT-4.7.2-1] filters starting with a wildcard never match topics starting with '$'.
    assert_eq!(topic::matches("#", name), !dollar);
    let first_level_plus = match name.split_once('/') {
        Some((_, rest)) => format!("+/{rest}"),
        None => "+".to_owned(),
    };
    assert_eq!(topic::matches(&first_level_plus, name), !dollar);
    // A name is a valid filter unless it looks like a (malformed) shared subscription.
    if !name.starts_with(topic::SHARE_PREFIX) {
        assert!(
            topic::validate_topic_filter(name).is_ok(),
            "{name:?} not a valid filter"
        );
    }
}
