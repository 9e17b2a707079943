//! Independent malformed-input audit: runs `tests/interop/malformed_audit.py` (pure Python
//! standard library, raw sockets, no paho) against a broker started in-process with the test
//! defaults. The script plays an outside tester working from the OASIS MQTT 3.1.1 and 5.0
//! specifications: 100+ malformed or odd-but-legal inputs, each on its own connection, checked
//! against what the spec requires (close only the offending connection, CONNACK / DISCONNECT
//! reason codes, or "accepted and the session continues"), while a QoS 1 bystander keeps
//! exchanging numbered messages and must see no gap and no stall. The script reads the limits
//! it needs (Maximum Packet Size, Receive Maximum, Topic Alias Maximum) from the MQTT 5
//! CONNACK rather than hard-coding them, and checks the RSS of this process (which hosts the
//! broker) stays bounded.

mod common;

use common::TestBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_the_offending_connection() {
    let b = TestBroker::start().await;
    let pid = std::process::id().to_string();
    let out =
        common::run_paho_script("malformed_audit", b.addr.port(), &["--broker-pid", &pid]).await;
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        fails.is_empty(),
        "failed cases:\n{}\n\nstdout:\n{out}",
        fails.join("\n")
    );
    let passes = out.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(passes >= 100, "at least 100 cases passed; stdout:\n{out}");
    assert!(
        out.lines().any(|l| l.starts_with("PASS bystander")),
        "the bystander's flow was checked; stdout:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("PASS broker memory")),
        "the broker's memory stayed bounded; stdout:\n{out}"
    );
    if let Some(summary) = out.lines().find(|l| l.starts_with("summary: ")) {
        println!("{summary}");
    }
    b.stop().await;
}
