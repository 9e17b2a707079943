//! MQTT 5 interoperability with the Eclipse Paho Python client (paho-mqtt 2.x with
//! `protocol=MQTTv5`): each test starts a broker on an ephemeral port and runs one subcommand of
//! `tests/interop/paho5.py` against it. The script waits on events with timeouts, prints
//! `OK ...` per passed check and exits non-zero with a `FAIL: ...` line on stderr otherwise.
//! A missing Python or paho-mqtt fails the test: `scripts/test` installs them.
//!
//! paho-mqtt 2.x does not resolve topic aliases the server sends (the message topic is empty),
//! and ignores the reason code of PUBREC: the script resolves aliases itself, and PUBREC codes
//! are checked with rumqttc (`tests/rumqttc5_interop.rs`).

mod common;

use common::{TestBroker, test_config};

/// Runs `python3 tests/interop/paho5.py --port N <check>` against the broker, requires exit
/// code 0, and returns its stdout.
async fn run_check(b: &TestBroker, check: &str) -> String {
    common::run_paho_script("paho5", b.addr.port(), &[check]).await
}

/// Asserts that every expected `OK ...` line was printed, in order.
fn assert_ok_lines(stdout: &str, expected: &[&str]) {
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("OK ")).collect();
    let want: Vec<String> = expected.iter().map(|e| format!("OK {e}")).collect();
    assert_eq!(
        lines, want,
        "checks reported by the script; stdout:\n{stdout}"
    );
}

/// Runs `check` against a default broker, asserts its `OK` lines and that the script left no
/// session behind (every client ended its session).
async fn run_default(check: &str, expected: &[&str]) {
    let b = TestBroker::start().await;
    let out = run_check(&b, check).await;
    assert_ok_lines(&out, expected);
    common::wait_until("every session of the script ended", || {
        b.broker.session_count() == 0
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn paho5_connack_assigned_id_server_keep_alive_and_granted_expiry() {
    let mut config = test_config();
    config.mqtt.max_keepalive = 30;
    config.mqtt.session_expiry_interval = 100;
    let b = TestBroker::start_with(config).await;
    let out = run_check(&b, "connack").await;
    assert_ok_lines(
        &out,
        &[
            "assigned client identifier and CONNACK properties",
            "server keep alive",
            "granted session expiry interval",
        ],
    );
    common::wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn paho5_session_expiry_resume_and_discard() {
    run_default(
        "session",
        &[
            "session kept for its expiry interval and resumed with session present",
            "clean start and DISCONNECT expiry 0 discard the session",
            "absent session expiry ends the session at disconnect",
            "session removed after its expiry interval",
        ],
    )
    .await;
}

#[tokio::test]
async fn paho5_request_response_properties_pass_through() {
    run_default(
        "request-response",
        &[
            "request properties forwarded unchanged",
            "response correlated with the request",
        ],
    )
    .await;
}

#[tokio::test]
async fn paho5_message_expiry_decremented_and_expired_dropped() {
    run_default(
        "message-expiry",
        &[
            "message expiry interval forwarded on live delivery",
            "expired queued message dropped, remaining interval decremented",
        ],
    )
    .await;
}

#[tokio::test]
async fn paho5_subscription_options_no_local_retain_as_published_retain_handling() {
    let b = TestBroker::start().await;
    let out = run_check(&b, "subscription-options").await;
    assert_ok_lines(
        &out,
        &[
            "no local",
            "retain as published",
            "retain handling 0, 1 and 2",
        ],
    );
    assert_eq!(
        b.broker.retained_count(),
        0,
        "the script cleared its retained messages"
    );
    common::wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn paho5_subscription_identifiers() {
    run_default(
        "subscription-identifiers",
        &[
            "subscription identifiers of all matching subscriptions",
            "replaced subscription carries its new identifier",
        ],
    )
    .await;
}

#[tokio::test]
async fn paho5_topic_alias_client_to_server() {
    run_default(
        "alias-in",
        &[
            "client topic aliases resolved",
            "invalid topic aliases refused with DISCONNECT 0x94 / 0x82",
        ],
    )
    .await;
}

#[tokio::test]
async fn paho5_topic_alias_server_to_client() {
    run_default(
        "alias-out",
        &["server topic aliases within the client's maximum"],
    )
    .await;
}

#[tokio::test]
async fn paho5_receive_maximum_flow_control() {
    run_default(
        "receive-maximum",
        &["receive maximum 1 and 2 respected, messages in order"],
    )
    .await;
}

#[tokio::test]
async fn paho5_maximum_packet_size_of_the_client() {
    run_default(
        "maximum-packet-size",
        &["message above the client's maximum packet size not delivered"],
    )
    .await;
}

#[tokio::test]
async fn paho5_will_delay_interval() {
    run_default(
        "will-delay",
        &[
            "will published after its delay, not before",
            "will published when the session expires before the delay",
            "reconnect within the delay cancels the will",
        ],
    )
    .await;
}

#[tokio::test]
async fn paho5_disconnect_with_will_message() {
    run_default(
        "disconnect-with-will",
        &["DISCONNECT 0x04 publishes the will, 0x00 does not"],
    )
    .await;
}

#[tokio::test]
async fn paho5_shared_subscription_with_v5_and_v311_members() {
    let b = TestBroker::start().await;
    let out = run_check(&b, "shared").await;
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("OK ")).collect();
    assert_eq!(lines.len(), 2, "two checks reported; stdout:\n{out}");
    assert!(
        lines[0].starts_with("OK shared subscription split ")
            && lines[0].ends_with(" between an MQTT 5 and a 3.1.1 member"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "OK unacknowledged messages of a leaving member go to another member"
    );
    common::wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn paho5_session_takeover_disconnect_0x8e() {
    run_default(
        "takeover",
        &["session takeover: DISCONNECT 0x8E seen by the old client"],
    )
    .await;
}

#[tokio::test]
async fn paho5_puback_reason_codes() {
    run_default(
        "puback",
        &[
            "PUBACK 0x10 no matching subscribers, 0x00 delivered",
            "PUBACK 0x87 on $SYS, 0x99 on an invalid UTF-8 payload",
        ],
    )
    .await;
}
