//! Criterion micro-benchmarks of topic matching in [`SubscriptionTree`].
//!
//! Trees of 10k, 100k and 1M subscriptions with five-level filters
//! `{site}/{building}/{floor}/{device}/{metric}` (10 buildings × 10 floors × 10 devices ×
//! 10 metrics = 10k topics per site; 1, 10 or 100 sites). One filter in 100 has a `+` at a
//! random level, and one in 200 keeps its first 2 to 4 levels and ends in `#` (`s0042/b07/#`,
//! `s0042/b07/f03/d09/#`; a site-wide `s0042/#` would cover every topic of the site and leave
//! no deep miss to measure). Keys are distinct `u64` subscriber ids, values a QoS byte. Each
//! tree is built once, outside the timed code.
//!
//! Benchmarks per size: `hit` (a topic matching a handful of subscriptions, exact and wildcard)
//! and `miss` (a topic whose first four levels exist but that matches nothing), plus `fanout`:
//! 10k subscribers on one filter. Every benchmark consumes each match.
//!
//! Run with `cargo bench --bench topic_match`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt_server::router::tree::SubscriptionTree;

const BUILDINGS: usize = 10;
const FLOORS: usize = 10;
const DEVICES: usize = 10;
const METRICS: [&str; 10] = [
    "temperature",
    "humidity",
    "co2",
    "pressure",
    "power",
    "voltage",
    "current",
    "occupancy",
    "lux",
    "noise",
];
/// Subscriptions per site.
const PER_SITE: usize = BUILDINGS * FLOORS * DEVICES * METRICS.len();

/// SplitMix64: a small deterministic generator, so every run builds the same trees.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` for a benchmark.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The five levels of subscription number `i` (mixed radix, metric fastest).
fn levels(i: usize) -> [String; 5] {
    let metric = METRICS[i % METRICS.len()];
    let i = i / METRICS.len();
    let device = i % DEVICES;
    let i = i / DEVICES;
    let floor = i % FLOORS;
    let i = i / FLOORS;
    let building = i % BUILDINGS;
    let site = i / BUILDINGS;
    [
        format!("s{site:04}"),
        format!("b{building:02}"),
        format!("f{floor:02}"),
        format!("d{device:02}"),
        metric.to_owned(),
    ]
}

/// Builds a tree of `n` subscriptions; `n` must be a multiple of [`PER_SITE`].
fn build(n: usize) -> SubscriptionTree<u64, u8> {
    let mut rng = SplitMix(0x5EED_0000 ^ n as u64);
    let mut tree = SubscriptionTree::new();
    let (mut plus, mut hash) = (0, 0);
    for i in 0..n {
        let mut lv = levels(i);
        let filter = match rng.below(1000) {
            // 1%: '+' at a random level
            0..10 => {
                plus += 1;
                let at = rng.below(5) as usize;
                if let Some(l) = lv.get_mut(at) {
                    *l = "+".to_owned();
                }
                lv.join("/")
            }
            // 0.5%: the first 2..=4 levels, then '#'
            10..15 => {
                hash += 1;
                let keep = 2 + rng.below(3) as usize;
                let mut f = lv.get(..keep).map(|l| l.join("/")).unwrap_or_default();
                f.push_str("/#");
                f
            }
            _ => lv.join("/"),
        };
        tree.insert(&filter, i as u64, (i % 3) as u8);
    }
    eprintln!(
        "built {n} subscriptions ({plus} with '+', {hash} with '#'), {} nodes",
        tree.node_count()
    );
    tree
}

/// Number of matches of `topic`, and the sum of their keys and values (to consume each one).
fn matches(tree: &SubscriptionTree<u64, u8>, topic: &str) -> (usize, u64) {
    let (mut count, mut sum) = (0usize, 0u64);
    tree.for_each_match(topic, |k, v| {
        count += 1;
        sum = sum.wrapping_add(*k ^ u64::from(*v));
    });
    (count, sum)
}

/// Resident set size of this process in MiB, or `?` where `/proc` does not tell.
fn rss_mib() -> String {
    let kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    kib.map_or_else(|| "?".to_owned(), |k| (k / 1024).to_string())
}

fn topic_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(100)
        .throughput(Throughput::Elements(1));

    for (n, label) in [(10_000, "10k"), (100_000, "100k"), (1_000_000, "1M")] {
        let before = rss_mib();
        let start = Instant::now();
        let mut tree = build(n);
        // The hit topic, in the last site so that it is present at every size: a handful of
        // wildcard subscribers on top of the random ones, as other clients would have.
        let site = n / PER_SITE - 1;
        let hit = format!("s{site:04}/b07/f03/d09/temperature");
        let extra = [
            format!("s{site:04}/b07/+/d09/temperature"),
            format!("s{site:04}/b07/f03/d09/temperature/#"),
            "+/b07/f03/d09/temperature".to_owned(),
            format!("s{site:04}/+/f03/d09/temperature"),
        ];
        for (j, f) in extra.iter().enumerate() {
            tree.insert(f, u64::MAX - j as u64, 1);
        }
        eprintln!(
            "{label}: build took {:.2?}, RSS {} -> {} MiB",
            start.elapsed(),
            before,
            rss_mib()
        );
        // Miss: existing site/building/floor/device, unknown metric, so the walk goes four
        // levels deep and down every '+' branch on the way. The first such topic (from the last
        // site down) that no random '#' or '+' filter covers.
        let miss = (0..n / PER_SITE * BUILDINGS * FLOORS * DEVICES)
            .rev()
            .map(|i| {
                let [s, b, f, d, _] = levels(i * METRICS.len());
                format!("{s}/{b}/{f}/{d}/vibration")
            })
            .find(|t| matches(&tree, t).0 == 0)
            .unwrap_or_else(|| "s9999/b07/f03/d09/vibration".to_owned());
        let (hit_count, _) = matches(&tree, &hit);
        let (miss_count, _) = matches(&tree, &miss);
        eprintln!("{label}: '{hit}' matches {hit_count}, '{miss}' matches {miss_count}");
        assert!(hit_count > extra.len(), "hit topic matched too little");
        assert_eq!(miss_count, 0, "miss topic matched something");

        group.bench_function(format!("hit/{label}"), |b| {
            b.iter(|| matches(&tree, black_box(&hit)))
        });
        group.bench_function(format!("miss/{label}"), |b| {
            b.iter(|| matches(&tree, black_box(&miss)))
        });
        drop(tree);
    }

    // Fan-out: 10k subscribers on one filter, in an otherwise empty tree. Throughput is per
    // delivered match, so the figure reads as time per subscriber visited.
    let mut tree = SubscriptionTree::new();
    let filter = "s0042/b07/f03/d09/temperature";
    for k in 0..10_000u64 {
        tree.insert(filter, k, (k % 3) as u8);
    }
    assert_eq!(matches(&tree, filter).0, 10_000);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("fanout/10k_on_one_filter", |b| {
        b.iter(|| matches(&tree, black_box(filter)))
    });
    group.finish();
}

criterion_group!(benches, topic_match);
criterion_main!(benches);
