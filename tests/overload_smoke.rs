//! Short runs of the overload scenarios of `mqtt-bench` (slow-consumer, flood, huge-packet,
//! soak) against an in-process broker, checked from both sides: the JSON report's figures and
//! checks, and the broker's own counters (connections, drops, sessions, retained messages).
//! `bench/overload.sh` runs the full-size versions against a release broker.
//! The 2-minute CI soak is `tests/soak.rs`.

mod common;

use common::overload::{RUN_TIMEOUT, assert_clean, bench, figure};
use common::{TestBroker, test_config, wait_until};
use mqtt_server::config::Config;

/// Waits until the broker has no client connected.
async fn all_disconnected(b: &TestBroker) {
    wait_until("every client disconnected", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
}

fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    edit(&mut c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_lose_messages_not_the_broker() {
    // small queues make the bound sharp: 20 in flight + 100 queued
    let b = TestBroker::start_with(config(|c| c.limits.max_queued_messages = 100)).await;
    let (code, r) = bench(
        b.addr,
        "slow-consumer",
        &[
            "--duration",
            "3",
            "--phase",
            "1",
            "--drain",
            "2",
            "--publishers",
            "2",
            "--min-bystander-pct",
            "75",
        ],
        RUN_TIMEOUT,
    )
    .await;
    assert_clean(code, &r);
    let sent = figure(&r, "flood_sent");
    assert!(sent > 1000.0, "{r:#}");
    // the QoS 1 slow consumer gets at most its window and queue (plus a few moving through)
    let q1 = figure(&r, "slow_qos1_received");
    assert!(q1 <= 200.0, "slow QoS 1 consumer got {q1}: {r:#}");
    assert!(figure(&r, "slow_qos1_dropped_inferred") > 0.0, "{r:#}");
    assert!(figure(&r, "slow_qos0_dropped_inferred") > 0.0, "{r:#}");
    assert_eq!(figure(&r, "fast_subscriber_missed"), 0.0, "{r:#}");
    // the broker counted what it dropped
    assert!(b.broker.metrics().messages_dropped > 0);
    all_disconnected(&b).await;
    assert_eq!(b.broker.session_count(), 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_and_half_open_sockets_are_cleaned_up() {
    let b = TestBroker::start_with(config(|c| c.limits.connect_timeout_secs = 1)).await;
    let (code, r) = bench(
        b.addr,
        "flood",
        &[
            "--duration",
            "3",
            "--phase",
            "1",
            "--churners",
            "4",
            "--half-open",
            "200",
            "--broker-connect-timeout",
            "1",
            "--min-bystander-pct",
            "75",
        ],
        RUN_TIMEOUT,
    )
    .await;
    assert_clean(code, &r);
    assert!(figure(&r, "churn_connections") > 100.0, "{r:#}");
    assert_eq!(figure(&r, "half_open_closed_by_broker"), 200.0, "{r:#}");
    // closed by the 1 s connect timeout, not before it and not much after it
    assert!(figure(&r, "half_open_close_min_s") >= 0.9, "{r:#}");
    assert!(figure(&r, "half_open_close_max_s") < 2.5, "{r:#}");
    all_disconnected(&b).await;
    assert_eq!(b.broker.session_count(), 0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_packets_are_refused_at_the_header() {
    let b = TestBroker::start_with(config(|c| c.limits.max_packet_size = 64 * 1024)).await;
    let (code, r) = bench(
        b.addr,
        "huge-packet",
        &[
            "--duration",
            "2",
            "--phase",
            "1",
            "--attackers",
            "4",
            "--interval-ms",
            "50",
            "--min-bystander-pct",
            "75",
        ],
        RUN_TIMEOUT,
    )
    .await;
    assert_clean(code, &r);
    let attempts = figure(&r, "attempts");
    assert!(attempts >= 4.0, "{r:#}");
    assert_eq!(figure(&r, "closed_by_broker"), attempts, "{r:#}");
    // refused at the fixed header: no attempt waited for a body chunk
    assert!(figure(&r, "close_after_max_ms") < 1000.0, "{r:#}");
    all_disconnected(&b).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_keeps_every_flow_and_cleans_up() {
    let b = TestBroker::start().await;
    let (code, r) = bench(
        b.addr,
        "soak",
        &[
            "--duration",
            "6",
            "--window",
            "2",
            "--storm-every",
            "2",
            "--storm-size",
            "50",
            "--stream-rate",
            "100",
            "--takeover-every-ms",
            "200",
            "--retained-topics",
            "20",
            "--latency-factor",
            "5",
            "--min-bystander-pct",
            "75",
        ],
        RUN_TIMEOUT,
    )
    .await;
    assert_clean(code, &r);
    assert!(figure(&r, "takeovers") >= 5.0, "{r:#}");
    assert!(figure(&r, "storms") >= 1.0, "{r:#}");
    assert!(figure(&r, "retained_published") > 0.0, "{r:#}");
    // every stream message arrives; only those in flight when the streams stop may be missing
    let sent = figure(&r, "stream_messages_sent");
    let received = figure(&r, "stream_messages_received");
    assert!(sent > 1000.0, "{r:#}");
    assert!(received <= sent && sent - received <= 5.0, "{r:#}");
    all_disconnected(&b).await;
    // the retained worker cleared its topics; every clean session ended
    wait_until("retained messages cleared", || {
        b.broker.retained_count() == 0
    })
    .await;
    assert_eq!(b.broker.session_count(), 0);
    b.stop().await;
}
