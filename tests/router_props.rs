//! Property tests of the router (issue 7): random sequences of subscribe / resubscribe /
//! unsubscribe / session removal / publish against a [`Router`], checked after every publish
//! against a reference model built on [`topic::matches`], the simple matcher.
//!
//! The subscription trie itself is already compared with the reference matcher in
//! `src/router/tree.rs` (`tree_agrees_with_brute_force`), and the retained store in
//! `src/router/retained.rs`; these tests cover what the router adds on top: one delivery per
//! session with the highest granted QoS and every subscription identifier ([MQTT-3.3.4-2],
//! [MQTT-3.3.4-3]), No Local ([MQTT-3.8.3-3]), Retain As Published ([MQTT-3.3.1-12],
//! [MQTT-3.3.1-13]), shared subscriptions (one member per matching group, MQTT 5.0 section
//! 4.8.2), the `$` rule ([MQTT-4.7.2-1]) through both trees, and the bookkeeping of
//! unsubscribe and session removal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytestring::ByteString;
use proptest::prelude::*;

use mqtt_server::codec::{QoS, RetainHandling, SubscriptionOptions};
use mqtt_server::config::SharedStrategy;
use mqtt_server::message::{Message, SharedMessage};
use mqtt_server::metrics::Metrics;
use mqtt_server::router::Router;
use mqtt_server::session::{Journal, Outgoing, QueueLimits, Session};
use mqtt_server::topic;

/// Number of session slots the operations pick from.
const SLOTS: usize = 5;

/// Queues large enough never to drop, and QoS 0 kept for offline sessions, so that every
/// delivery the router makes is visible in the session's queue.
const LIMITS: QueueLimits = QueueLimits {
    max_inflight: 16,
    max_queued: 100_000,
    queue_qos0_offline: true,
};

fn qos_strategy() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Levels from a tiny alphabet, so filters and topics collide often; `$SYS`, `$` and `$share`
/// exercise [MQTT-4.7.2-1] and the shared-subscription prefix.
fn filter_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        2 => Just(""), 3 => Just("a"), 3 => Just("b"), 2 => Just("$SYS"), 1 => Just("$"),
        1 => Just("$share"), 4 => Just("+"),
    ]
}

/// A valid plain topic filter (one that is no shared subscription). Rejects are rare (a
/// `$share` first level), so many cases can run without exhausting proptest's reject budget.
fn plain_filter_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(filter_level(), 0..4),
        prop::bool::weighted(0.35),
    )
        .prop_map(|(mut levels, multi)| {
            if multi || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("valid plain filter", |f| {
            topic::validate_topic_filter(f).is_ok() && topic::parse_shared(f).is_none()
        })
}

/// A valid topic filter: plain, or `$share/{g|h}/{filter}` about a third of the time.
fn filter_strategy() -> impl Strategy<Value = String> {
    (
        plain_filter_strategy(),
        prop_oneof![3 => Just(None), 1 => Just(Some("g")), 1 => Just(Some("h"))],
    )
        .prop_map(|(filter, group)| match group {
            Some(g) => format!("$share/{g}/{filter}"),
            None => filter,
        })
}

/// A valid topic name from the same alphabet (plus `g` and `c`, which only topics use).
fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        2 => Just(""), 3 => Just("a"), 3 => Just("b"), 2 => Just("$SYS"), 1 => Just("$"),
        1 => Just("$share"), 1 => Just("g"), 1 => Just("c"),
    ];
    prop::collection::vec(level, 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic", |t| topic::validate_topic_name(t).is_ok())
}

fn strategy_strategy() -> impl Strategy<Value = SharedStrategy> {
    prop_oneof![
        Just(SharedStrategy::RoundRobin),
        Just(SharedStrategy::Random),
        Just(SharedStrategy::HashClientId),
        Just(SharedStrategy::HashTopic),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// Subscribe (or resubscribe with other options) slot's session to a filter of the pool.
    Subscribe {
        slot: usize,
        filter: usize,
        qos: QoS,
        no_local: bool,
        retain_as_published: bool,
        id: u32,
    },
    Unsubscribe {
        slot: usize,
        filter: usize,
    },
    /// `Router::remove_session`; the slot then holds the discarded session until the next
    /// subscribe to it, which must fail and puts a fresh session in the slot.
    Remove {
        slot: usize,
    },
    /// Marks the session online or offline (shared groups prefer online members).
    Online {
        slot: usize,
        online: bool,
    },
    /// Publishes a topic of the pool, from a slot's session (for No Local) or from none.
    Route {
        topic: usize,
        qos: QoS,
        retain: bool,
        publisher: Option<usize>,
    },
}

fn op_strategy(filters: usize, topics: usize) -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    prop_oneof![
        6 => (slot.clone(), 0..filters, qos_strategy(), prop::bool::weighted(0.25),
              any::<bool>(), prop_oneof![2 => Just(0u32), 1 => 1..4u32])
            .prop_map(|(slot, filter, qos, no_local, retain_as_published, id)| Op::Subscribe {
                slot, filter, qos, no_local, retain_as_published, id,
            }),
        2 => (slot.clone(), 0..filters)
            .prop_map(|(slot, filter)| Op::Unsubscribe { slot, filter }),
        1 => slot.clone().prop_map(|slot| Op::Remove { slot }),
        1 => (slot.clone(), any::<bool>()).prop_map(|(slot, online)| Op::Online { slot, online }),
        6 => (0..topics, qos_strategy(), any::<bool>(), prop::option::of(slot))
            .prop_map(|(topic, qos, retain, publisher)| {
                Op::Route { topic, qos, retain, publisher }
            }),
    ]
}

/// A pool of filters, a pool of topics, and operations that pick from them.
fn scenario_strategy() -> impl Strategy<Value = (Vec<String>, Vec<String>, Vec<Op>)> {
    (
        prop::collection::vec(filter_strategy(), 1..10),
        prop::collection::vec(topic_strategy(), 1..8),
    )
        .prop_flat_map(|(filters, topics)| {
            let ops = prop::collection::vec(op_strategy(filters.len(), topics.len()), 1..80);
            (Just(filters), Just(topics), ops)
        })
}

/// One session slot of the model.
struct Slot {
    session: Arc<Session>,
    /// Discarded by `remove_session`.
    dead: bool,
    /// Live subscriptions: filter → (options, identifier).
    subs: BTreeMap<String, (SubscriptionOptions, u32)>,
}

struct World {
    router: Router,
    metrics: Metrics,
    journal: Journal,
    slots: Vec<Slot>,
    next_key: u64,
    strategy: SharedStrategy,
}

/// What a delivery looks like, for comparison with the model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    qos: QoS,
    retain: bool,
    /// Subscription identifiers, sorted (their order is not significant, [MQTT-3.3.4-4]).
    ids: Vec<u32>,
}

impl World {
    fn new(strategy: SharedStrategy) -> World {
        let mut world = World {
            router: Router::new(strategy),
            metrics: Metrics::default(),
            journal: Journal::new(false, false),
            slots: Vec::new(),
            next_key: 1,
            strategy,
        };
        for _ in 0..SLOTS {
            let session = world.fresh_session();
            world.slots.push(Slot {
                session,
                dead: false,
                subs: BTreeMap::new(),
            });
        }
        world
    }

    fn fresh_session(&mut self) -> Arc<Session> {
        let key = self.next_key;
        self.next_key += 1;
        Arc::new(Session::new(
            key,
            ByteString::from(format!("client-{key}")),
            0,
            LIMITS,
            None,
        ))
    }

    fn slot(&mut self, i: usize) -> Result<&mut Slot, TestCaseError> {
        self.slots
            .get_mut(i)
            .ok_or_else(|| TestCaseError::fail(format!("no slot {i}")))
    }

    /// Live subscriptions over all live sessions, as the router should count them.
    fn model_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| !s.dead)
            .map(|s| s.subs.len())
            .sum()
    }

    fn apply(
        &mut self,
        op: &Op,
        filters: &[String],
        topics: &[String],
    ) -> Result<(), TestCaseError> {
        match *op {
            Op::Subscribe {
                slot,
                filter,
                qos,
                no_local,
                retain_as_published,
                id,
            } => {
                let filter = pick(filters, filter)?;
                // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error: the
                // connection refuses it before the router sees it.
                let no_local = no_local && topic::parse_shared(filter).is_none();
                let options = SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling: RetainHandling::default(),
                };
                let fresh = self.fresh_session();
                let router = &self.router;
                let journal = &mut self.journal;
                let s = self
                    .slots
                    .get_mut(slot)
                    .ok_or_else(|| TestCaseError::fail("slot"))?;
                let got = router.subscribe(
                    &s.session,
                    &ByteString::from(filter.as_str()),
                    options,
                    id,
                    journal,
                );
                if s.dead {
                    // A discarded session takes no new subscription.
                    prop_assert_eq!(got, None);
                    *s = Slot {
                        session: fresh,
                        dead: false,
                        subs: BTreeMap::new(),
                    };
                } else {
                    // [MQTT-3.8.4-3] a subscription to the same filter replaces the old one.
                    let existed = s.subs.insert(filter.clone(), (options, id)).is_some();
                    prop_assert_eq!(got, Some(existed), "subscribe {}", filter);
                }
            }
            Op::Unsubscribe { slot, filter } => {
                let filter = pick(filters, filter)?;
                let router = &self.router;
                let journal = &mut self.journal;
                let s = self
                    .slots
                    .get_mut(slot)
                    .ok_or_else(|| TestCaseError::fail("slot"))?;
                let got = router.unsubscribe(&s.session, filter, journal);
                let want = !s.dead && s.subs.remove(filter).is_some();
                prop_assert_eq!(got, want, "unsubscribe {}", filter);
            }
            Op::Remove { slot } => {
                let s = self.slot(slot)?;
                let session = s.session.clone();
                s.dead = true;
                s.subs.clear();
                self.router.remove_session(&session);
                prop_assert!(session.state.lock().pending.is_empty());
            }
            Op::Online { slot, online } => {
                self.slot(slot)?
                    .session
                    .online
                    .store(online, Ordering::Release);
            }
            Op::Route {
                topic,
                qos,
                retain,
                publisher,
            } => {
                let topic = pick(topics, topic)?;
                let publisher = match publisher {
                    Some(i) => Some(self.slot(i)?.session.clone()),
                    None => None,
                };
                self.check_route(topic, qos, retain, publisher.as_ref())?;
            }
        }
        // Every op keeps the counts in step with the model.
        prop_assert_eq!(self.router.subscription_count(), self.model_count());
        for s in &self.slots {
            let want = if s.dead { 0 } else { s.subs.len() };
            prop_assert_eq!(s.session.subscription_count(), want);
        }
        Ok(())
    }

    /// Routes one message and checks every session's queue against the model.
    fn check_route(
        &mut self,
        topic_name: &str,
        qos: QoS,
        retain: bool,
        publisher: Option<&Arc<Session>>,
    ) -> Result<(), TestCaseError> {
        let mut message = Message::new(topic_name.to_owned(), "payload", qos, retain);
        message.publisher = publisher.map_or(0, |p| p.key);
        let message: SharedMessage = Arc::new(message);
        let publisher_id = publisher.map_or_else(String::new, |p| p.client_id.to_string());
        let picks = self.route_once(&message, &publisher_id)?;
        if matches!(
            self.strategy,
            SharedStrategy::HashClientId | SharedStrategy::HashTopic
        ) {
            // With nothing changed in between, a hashing strategy picks the same members again.
            let again = self.route_once(&message, &publisher_id)?;
            prop_assert_eq!(&picks, &again, "hash strategy not deterministic");
        }
        Ok(())
    }

    /// Routes `message` once, takes what landed in every queue and compares it with the model.
    /// Returns the member each matching share group picked: (group, inner filter) → slot.
    fn route_once(
        &mut self,
        message: &SharedMessage,
        publisher_id: &str,
    ) -> Result<BTreeMap<(String, String), usize>, TestCaseError> {
        let dropped_before = self.metrics.snapshot().messages_dropped;
        let routed = self
            .router
            .route(message, publisher_id, &self.metrics, &mut self.journal);
        prop_assert_eq!(self.metrics.snapshot().messages_dropped, dropped_before);
        // Nobody is connected, so nobody can be congested.
        prop_assert!(routed.congested.is_none());
        let topic_name: &str = &message.topic;

        // The model's share groups that match: (group, inner) → slot → (options, id).
        type Members = BTreeMap<usize, (SubscriptionOptions, u32)>;
        let mut groups: BTreeMap<(String, String), Members> = BTreeMap::new();
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| !s.dead) {
            for (filter, granted) in &s.subs {
                if let Some((group, inner)) = topic::parse_shared(filter)
                    && topic::matches(inner, topic_name)
                {
                    groups
                        .entry((group.to_owned(), inner.to_owned()))
                        .or_default()
                        .insert(i, *granted);
                }
            }
        }

        let mut total = 0;
        let mut picks: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (i, s) in self.slots.iter().enumerate() {
            let queued: Vec<Outgoing> = s.session.state.lock().pending.drain(..).collect();
            total += queued.len();
            if s.dead {
                prop_assert!(queued.is_empty(), "delivery to a removed session");
                continue;
            }
            let mut plain = Vec::new();
            for o in queued {
                prop_assert!(Arc::ptr_eq(&o.message, message), "another message queued");
                let ids = {
                    let mut ids = o
                        .extra
                        .as_ref()
                        .map(|x| x.subscription_ids.clone())
                        .unwrap_or_default();
                    ids.sort_unstable();
                    ids
                };
                let delivery = Delivery {
                    qos: o.qos,
                    retain: o.retain,
                    ids,
                };
                match o.extra.as_ref().and_then(|x| x.share.clone()) {
                    None => plain.push(delivery),
                    Some(share) => {
                        let Some((group, inner)) = topic::parse_shared(&share) else {
                            return Err(TestCaseError::fail(format!("bad share {share:?}")));
                        };
                        let key = (group.to_owned(), inner.to_owned());
                        let Some(members) = groups.get(&key) else {
                            return Err(TestCaseError::fail(format!(
                                "delivery through {share:?}, which does not match {topic_name:?}"
                            )));
                        };
                        let Some(&(options, id)) = members.get(&i) else {
                            return Err(TestCaseError::fail(format!(
                                "slot {i} is no member of {share:?}"
                            )));
                        };
                        prop_assert_eq!(
                            delivery,
                            Delivery {
                                qos: message.qos.min(options.qos),
                                retain: options.retain_as_published && message.retain,
                                ids: if id == 0 { vec![] } else { vec![id] },
                            },
                            "shared delivery through {}",
                            share
                        );
                        // One member per group and message.
                        prop_assert!(picks.insert(key, i).is_none(), "{} delivered twice", share);
                    }
                }
            }

            // The model of this session's ordinary subscriptions.
            let matching: Vec<(SubscriptionOptions, u32)> = s
                .subs
                .iter()
                .filter(|(f, _)| topic::parse_shared(f).is_none() && topic::matches(f, topic_name))
                // [MQTT-3.8.3-3] No Local: not back to the publishing session.
                .filter(|(_, (o, _))| !(o.no_local && message.publisher == s.session.key))
                .map(|(_, g)| *g)
                .collect();
            let want: Vec<Delivery> = match matching.iter().map(|(o, _)| o.qos).max() {
                None => vec![],
                // [MQTT-3.3.4-2] one copy, at the highest QoS granted; [MQTT-3.3.4-3] with
                // every identifier.
                Some(granted) => {
                    let mut ids: Vec<u32> = matching
                        .iter()
                        .map(|(_, id)| *id)
                        .filter(|id| *id != 0)
                        .collect();
                    ids.sort_unstable();
                    vec![Delivery {
                        qos: message.qos.min(granted),
                        retain: message.retain
                            && matching.iter().any(|(o, _)| o.retain_as_published),
                        ids,
                    }]
                }
            };
            prop_assert_eq!(plain, want, "slot {} topic {:?}", i, topic_name);
        }
        prop_assert_eq!(routed.matched, total);

        // Every matching group delivered exactly once, preferring online members.
        for (key, members) in &groups {
            let Some(chosen) = picks.get(key) else {
                return Err(TestCaseError::fail(format!("group {key:?} got nothing")));
            };
            let online = |i: &usize| {
                self.slots
                    .get(*i)
                    .is_some_and(|s| s.session.online.load(Ordering::Acquire))
            };
            if members.keys().any(online) {
                prop_assert!(online(chosen), "group {:?} picked an offline member", key);
            }
        }
        prop_assert_eq!(picks.len(), groups.len());
        Ok(picks)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// Random subscribe / unsubscribe / remove / publish sequences: every publish reaches
    /// exactly the sessions, QoS, identifiers and share-group members the model says.
    #[test]
    fn router_agrees_with_model(
        (filters, topics, ops) in scenario_strategy(),
        strategy in strategy_strategy(),
    ) {
        let mut world = World::new(strategy);
        for op in &ops {
            world.apply(op, &filters, &topics)?;
        }
        // Whatever is left, every topic still routes as the model says; then removing every
        // session empties the router.
        for t in &topics {
            world.check_route(t, QoS::ExactlyOnce, true, None)?;
        }
        for i in 0..SLOTS {
            world.apply(&Op::Remove { slot: i }, &filters, &topics)?;
        }
        prop_assert_eq!(world.router.subscription_count(), 0);
    }
}

fn pick(pool: &[String], i: usize) -> Result<&String, TestCaseError> {
    pool.get(i)
        .ok_or_else(|| TestCaseError::fail(format!("no pool entry {i}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Round robin with nobody online spreads `rounds` messages per member evenly over a
    /// share group; with some members online, only online members receive.
    #[test]
    fn round_robin_spreads_over_the_group(
        online in prop::collection::vec(any::<bool>(), 1..7),
        rounds in 1..5usize,
    ) {
        let mut world = World::new(SharedStrategy::RoundRobin);
        let filter = ByteString::from_static("$share/g/t/+");
        let mut members = Vec::new();
        for up in &online {
            let session = world.fresh_session();
            session.online.store(*up, Ordering::Release);
            let got = world.router.subscribe(
                &session,
                &filter,
                SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
                0,
                &mut world.journal,
            );
            prop_assert_eq!(got, Some(false));
            members.push(session);
        }
        let message: SharedMessage =
            Arc::new(Message::new("t/x", "payload", QoS::AtLeastOnce, false));
        for _ in 0..rounds * members.len() {
            let routed = world.router.route(&message, "pub", &world.metrics, &mut world.journal);
            prop_assert_eq!(routed.matched, 1);
        }
        let any_online = online.iter().any(|up| *up);
        for (session, up) in members.iter().zip(&online) {
            let got = session.state.lock().pending.len();
            if !any_online {
                prop_assert_eq!(got, rounds);
            } else if !*up {
                prop_assert_eq!(got, 0);
            }
        }
        let total: usize = members.iter().map(|s| s.state.lock().pending.len()).sum();
        prop_assert_eq!(total, rounds * members.len());
    }
}

#[derive(Debug, Clone)]
enum RetainOp {
    /// A PUBLISH with the RETAIN flag: empty payload deletes.
    Publish {
        topic: usize,
        qos: QoS,
        empty: bool,
        tag: u8,
    },
    /// A new subscription asking for the retained messages of a plain filter.
    Subscribe {
        filter: usize,
        granted: QoS,
        id: u32,
    },
}

/// A retained delivery: topic, QoS, RETAIN flag, payload, subscription identifiers.
type RetainedDelivery = (String, QoS, bool, Vec<u8>, Vec<u32>);

fn retain_scenario() -> impl Strategy<Value = (Vec<String>, Vec<String>, Vec<RetainOp>)> {
    (
        // Retained messages are not sent for shared subscriptions (MQTT 5.0 section 4.8.2).
        prop::collection::vec(plain_filter_strategy(), 1..8),
        prop::collection::vec(topic_strategy(), 1..8),
    )
        .prop_flat_map(|(filters, topics)| {
            let (nf, nt) = (filters.len(), topics.len());
            let op = prop_oneof![
                3 => (0..nt, qos_strategy(), prop::bool::weighted(0.25), any::<u8>())
                    .prop_map(|(topic, qos, empty, tag)| {
                        RetainOp::Publish { topic, qos, empty, tag }
                    }),
                2 => (0..nf, qos_strategy(), 0..3u32)
                    .prop_map(|(filter, granted, id)| RetainOp::Subscribe { filter, granted, id }),
            ];
            (
                Just(filters),
                Just(topics),
                prop::collection::vec(op, 1..40),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `Router::retain` / `send_retained` against a map topic → last retained message:
    /// [MQTT-3.3.1-5] replace, [MQTT-3.3.1-10]/[MQTT-3.3.1-11] an empty payload deletes,
    /// [MQTT-3.3.1-6]/[MQTT-3.3.1-8] sent with RETAIN set at the lower QoS, with the
    /// subscription's identifier, and [MQTT-4.7.2-1] for `$` topics.
    #[test]
    fn retained_agree_with_model((filters, topics, ops) in retain_scenario()) {
        let mut world = World::new(SharedStrategy::RoundRobin);
        let mut model: BTreeMap<String, (QoS, Vec<u8>)> = BTreeMap::new();
        for op in &ops {
            match *op {
                RetainOp::Publish { topic, qos, empty, tag } => {
                    let topic = pick(&topics, topic)?;
                    let payload = if empty { vec![] } else { vec![tag, 1] };
                    let message = Arc::new(Message::new(topic.clone(), payload.clone(), qos, true));
                    world.router.retain(&message, &mut world.journal);
                    if empty {
                        model.remove(topic);
                    } else {
                        model.insert(topic.clone(), (qos, payload));
                    }
                    prop_assert_eq!(world.router.retained_count(), model.len());
                }
                RetainOp::Subscribe { filter, granted, id } => {
                    let filter = pick(&filters, filter)?;
                    let session = world.fresh_session();
                    world.router.send_retained(
                        &session, filter, granted, id, &world.metrics, &mut world.journal,
                    );
                    let mut got: Vec<RetainedDelivery> = session
                        .state
                        .lock()
                        .pending
                        .iter()
                        .map(|o| (
                            o.message.topic.to_string(),
                            o.qos,
                            o.retain,
                            o.message.payload.to_vec(),
                            o.extra
                                .as_ref()
                                .map(|x| x.subscription_ids.clone())
                                .unwrap_or_default(),
                        ))
                        .collect();
                    got.sort();
                    let want: Vec<RetainedDelivery> = model
                        .iter()
                        .filter(|(t, _)| topic::matches(filter, t))
                        .map(|(t, (qos, payload))| (
                            t.clone(),
                            (*qos).min(granted),
                            true,
                            payload.clone(),
                            if id == 0 { vec![] } else { vec![id] },
                        ))
                        .collect();
                    prop_assert_eq!(got, want, "filter {:?}", filter);
                }
            }
        }
    }
}
