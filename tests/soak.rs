//! The CI soak (issue 7): 2 minutes of mixed traffic from `mqtt-bench soak` (all QoS, retained
//! churn, session takeovers, reconnect storms) against an in-process broker; RSS, open files and
//! p99 latency at the end must match the start within the scenario's tolerances. Alone in its
//! test binary, so the process sampled is the broker's alone. `bench/overload.sh --soak 1800`
//! runs the 30-minute version against a release broker.

mod common;

use std::time::Duration;

use common::overload::{assert_clean, bench};
use common::{TestBroker, wait_until};

/// The CI soak: 2 minutes of mixed traffic; this process is the broker, so its RSS and open
/// files are what the report samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_two_minutes() {
    let b = TestBroker::start().await;
    let pid = std::process::id().to_string();
    let (code, r) = bench(
        b.addr,
        "soak",
        &["--duration", "120", "--window", "20", "--broker-pid", &pid],
        Duration::from_secs(180),
    )
    .await;
    // the figures, for the CI log (shown with --nocapture)
    println!("{:#}", r["overload"]);
    assert_clean(code, &r);
    assert!(
        r["overload"]["broker"]["end"]["rss_kb"].as_u64().is_some(),
        "{r:#}"
    );
    wait_until("every client disconnected", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    assert_eq!(b.broker.session_count(), 0);
    b.stop().await;
}
