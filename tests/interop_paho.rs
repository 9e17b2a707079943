//! Interoperability with the Eclipse Paho Python client (paho-mqtt 2.x): each test starts a
//! broker on an ephemeral port and runs one script of `tests/interop/` against it. The scripts
//! wait on events with timeouts, print `OK ...` per passed check and exit non-zero with a
//! `FAIL: ...` line on stderr otherwise. A missing Python or paho-mqtt fails the test:
//! `scripts/test` installs them.

mod common;

use common::TestBroker;

/// Runs `python3 tests/interop/<name>.py --port N [extra]` against the broker, requires exit
/// code 0, and returns its stdout.
async fn run_script(b: &TestBroker, name: &str, extra: &[&str]) -> String {
    common::run_paho_script(name, b.addr.port(), extra).await
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

#[tokio::test]
async fn paho_connects_and_disconnects_with_mqtt_3_1_1() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_connect", &[]).await;
    assert_ok_lines(
        &out,
        &[
            "connect and disconnect",
            "reconnect with the same client id (MQTT 3.1.1)",
        ],
    );
    common::wait_until("clean sessions discarded", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn paho_connects_and_disconnects_with_mqtt_3_1() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_connect", &["--protocol", "3.1"]).await;
    assert_ok_lines(
        &out,
        &[
            "connect and disconnect",
            "reconnect with the same client id (MQTT 3.1)",
        ],
    );
    b.stop().await;
}

#[tokio::test]
async fn paho_qos_0_1_2_round_trips() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_qos", &[]).await;
    assert_ok_lines(&out, &["QoS 0/1/2 round trips (MQTT 3.1.1)"]);
    b.stop().await;
}

#[tokio::test]
async fn paho_qos_0_1_2_round_trips_with_mqtt_3_1() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_qos", &["--protocol", "3.1"]).await;
    assert_ok_lines(&out, &["QoS 0/1/2 round trips (MQTT 3.1)"]);
    b.stop().await;
}

#[tokio::test]
async fn paho_retained_message_and_clearing_it() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_retained", &[]).await;
    assert_ok_lines(
        &out,
        &[
            "retained message delivered to a new subscriber",
            "live publications carry retain 0",
            "empty retained payload clears the retained message",
        ],
    );
    assert_eq!(
        b.broker.retained_count(),
        0,
        "every retained message was cleared"
    );
    b.stop().await;
}

#[tokio::test]
async fn paho_will_on_abrupt_close() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_will", &[]).await;
    assert_ok_lines(
        &out,
        &["will published on abrupt close, not after DISCONNECT"],
    );
    b.stop().await;
}

#[tokio::test]
async fn paho_offline_queueing_with_persistent_session() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_session", &[]).await;
    assert_ok_lines(
        &out,
        &[
            "messages queued while offline delivered on reconnect",
            "subscription kept in the persistent session",
            "clean session discards the stored session",
        ],
    );
    // The last connection of "paho-persistent" used Clean Session 0: its session stays.
    common::wait_until("only the persistent session is left", || {
        b.broker.session_count() == 1
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn paho_overlapping_subscriptions_deliver_once() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_overlap", &[]).await;
    assert_ok_lines(
        &out,
        &["overlapping subscriptions deliver one copy at the highest QoS"],
    );
    b.stop().await;
}

#[tokio::test]
async fn paho_unsubscribe_stops_delivery() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_unsubscribe", &[]).await;
    assert_ok_lines(&out, &["unsubscribe stops delivery for that filter only"]);
    b.stop().await;
}

#[tokio::test]
async fn paho_dollar_topics_not_matched_by_wildcards() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_dollar", &[]).await;
    assert_ok_lines(
        &out,
        &[
            "'$' topics not matched by '#' or '+' (live)",
            "'$' topics not matched by '#' (retained)",
        ],
    );
    b.stop().await;
}

#[tokio::test]
async fn paho_keep_alive_closes_a_silent_client() {
    let b = TestBroker::start().await;
    let out = run_script(&b, "paho_keepalive", &[]).await;
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("OK ")).collect();
    assert_eq!(lines.len(), 2, "two checks reported; stdout:\n{out}");
    assert!(
        lines[0].starts_with("OK silent client disconnected after")
            && lines[0].ends_with("with keepalive=1"),
        "{out}"
    );
    assert_eq!(lines[1], "OK a client that keeps sending stays connected");
    b.stop().await;
}
