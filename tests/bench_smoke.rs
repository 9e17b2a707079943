//! End-to-end smoke test of the `mqtt-bench` binary: each scenario runs briefly against an
//! in-process broker and must exit 0 with a JSON report that shows deliveries and, at QoS 1
//! and 2, no loss.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt_bench::{self, Run};
use common::{TestBroker, test_config};
use serde_json::Value;

/// Upper bound for one run of the binary.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `mqtt-bench <scenario> <args> --port <broker port> --json --quiet`.
async fn bench(addr: SocketAddr, scenario: &str, args: &[&str]) -> Run {
    mqtt_bench::run(addr, scenario, args, RUN_TIMEOUT).await
}

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{} is not a number in {v:#}", path.join(".")))
}

/// Runs a message scenario and checks the common expectations; returns the report.
async fn flow(scenario: &str, args: &[&str], qos: u8) -> Value {
    let broker = TestBroker::start().await;
    let qos_arg = qos.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--qos", &qos_arg, "--drain", "5"]);
    let run = bench(broker.addr, scenario, &all).await;
    broker.stop().await;
    assert_eq!(run.code, Some(0), "exit status; stderr: {}", run.stderr);
    let r = run.json;
    assert_eq!(r["scenario"], scenario);
    assert_eq!(num(&r, &["errors"]), 0, "{r:#}");
    let sent = num(&r, &["messages", "sent"]);
    let expected = num(&r, &["messages", "expected"]);
    let delivered = num(&r, &["messages", "delivered"]);
    let lost = num(&r, &["messages", "lost"]);
    assert!(delivered > 0, "{r:#}");
    assert!(sent > 0, "{r:#}");
    assert_eq!(delivered + lost, expected, "{r:#}");
    if qos > 0 {
        assert_eq!(lost, 0, "no loss at QoS {qos}: {r:#}");
        assert_eq!(num(&r, &["messages", "acked"]), sent, "{r:#}");
        assert_eq!(num(&r, &["messages", "duplicates"]), 0, "{r:#}");
    }
    assert!(num(&r, &["latency_us", "count"]) > 0, "{r:#}");
    assert!(num(&r, &["latency_us", "p99"]) >= num(&r, &["latency_us", "p50"]));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_one_topic_qos1() {
    let r = flow(
        "fan-in",
        &["--publishers", "3", "--messages", "200", "--duration", "2"],
        1,
    )
    .await;
    assert_eq!(num(&r, &["messages", "sent"]), 600);
    assert_eq!(num(&r, &["messages", "delivered"]), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_distinct_topics_qos2() {
    let r = flow(
        "fan-in",
        &[
            "--publishers",
            "3",
            "--distinct-topics",
            "--messages",
            "200",
            "--duration",
            "2",
            "--inflight",
            "10",
        ],
        2,
    )
    .await;
    assert_eq!(num(&r, &["messages", "delivered"]), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_qos1() {
    let r = flow(
        "fan-out",
        &["--subscribers", "3", "--messages", "300", "--duration", "2"],
        1,
    )
    .await;
    assert_eq!(num(&r, &["messages", "expected"]), 900);
    assert_eq!(num(&r, &["messages", "subscribers"]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_qos2() {
    let r = flow(
        "pairs",
        &["--pairs", "3", "--messages", "200", "--duration", "2"],
        2,
    )
    .await;
    assert_eq!(num(&r, &["messages", "delivered"]), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_qos0_open_loop_counts_loss() {
    let r = flow(
        "pairs",
        &["--pairs", "2", "--rate", "500", "--duration", "1"],
        0,
    )
    .await;
    assert_eq!(r["messages"]["mode"], "open-loop");
    assert!(r["messages"]["acked"].is_null(), "no acks at QoS 0");
    assert!(r["messages"]["max_schedule_lag_ms"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_qos1() {
    let r = flow(
        "latency",
        &["--rate", "200", "--duration", "1", "--payload", "16"],
        1,
    )
    .await;
    let sent = num(&r, &["messages", "sent"]);
    assert!(
        (100..=201).contains(&sent),
        "about 200 msg/s for 1 s: {sent}"
    );
    assert!(num(&r, &["latency_us", "max"]) >= num(&r, &["latency_us", "p999"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_with_broker_memory() {
    let broker = TestBroker::start().await;
    let pid = std::process::id().to_string();
    let run = bench(
        broker.addr,
        "connections",
        &[
            "--connections",
            "50",
            "--connect-rate",
            "500",
            "--hold",
            "0.5",
            "--broker-pid",
            &pid,
        ],
    )
    .await;
    broker.stop().await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let r = run.json;
    assert_eq!(num(&r, &["connections", "connected"]), 50, "{r:#}");
    assert_eq!(num(&r, &["connections", "failed"]), 0);
    assert_eq!(num(&r, &["connections", "dropped"]), 0);
    assert!(r["connections"]["connects_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(num(&r, &["broker_process", "start", "rss_kb"]) > 0, "{r:#}");
    assert!(num(&r, &["broker_process", "end", "fds"]) >= 50, "{r:#}");
    assert!(
        r["connections"]["rss_per_connection_kb"].is_number(),
        "{r:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_retained() {
    let broker = TestBroker::start().await;
    let run = bench(
        broker.addr,
        "churn",
        &[
            "--subscriptions",
            "100",
            "--clients",
            "4",
            "--retained",
            "5",
            "--qos",
            "1",
            "--duration",
            "1",
        ],
    )
    .await;
    // the retained messages were cleared at the end
    let mut probe = common::RawClient::connect(broker.addr, "probe").await;
    let filter = "bench/#";
    probe
        .subscribe(1, &[(filter, mqtt_server::QoS::AtMostOnce)])
        .await;
    let leftovers = probe.ping_barrier().await;
    broker.stop().await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let r = run.json;
    let ops = num(&r, &["churn", "ops"]);
    assert!(ops >= 2 && ops.is_multiple_of(2), "{r:#}");
    assert_eq!(num(&r, &["churn", "existing_subscriptions"]), 100);
    assert!(num(&r, &["churn", "suback_latency_us", "p99"]) > 0, "{r:#}");
    assert!(num(&r, &["churn", "retained_received"]) > 0, "{r:#}");
    assert!(leftovers.is_empty(), "retained left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_exits_nonzero_with_the_connack_code() {
    let mut config = test_config();
    for listener in &mut config.listeners {
        listener.allow_anonymous = Some(false);
    }
    let broker = TestBroker::start_with(config).await;
    let run = bench(broker.addr, "pairs", &["--pairs", "1", "--duration", "1"]).await;
    broker.stop().await;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr
            .contains("CONNACK return code 5 (not authorized)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_for_the_fd_limit_is_refused_with_advice() {
    let broker = TestBroker::start().await;
    let run = bench(broker.addr, "connections", &["--connections", "16000000"]).await;
    broker.stop().await;
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("Split the load across processes"),
        "{}",
        run.stderr
    );
}
