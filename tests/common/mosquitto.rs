//! Driving Mosquitto's command-line clients (`mosquitto_pub`, `mosquitto_sub`, Debian package
//! `mosquitto-clients`, installed by `scripts/test`) against a test broker: one copy of the
//! process plumbing for the plain and the TLS interop tests.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::TestBroker;

/// Longest time any client process may run before the test fails (and the process is killed).
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);
/// `mosquitto_sub -W`: the subscriber gives up by itself after this many seconds.
pub const SUB_TIMEOUT_SECS: &str = "10";
/// How long a subscriber may take to become subscribed.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts `program` aimed at the test broker (killed when dropped), with `OPENSSL_CONF` set
/// when given; a missing binary fails the test with the way to install it (never a skip).
pub fn spawn(program: &str, b: &TestBroker, args: &[&str], openssl_conf: Option<&Path>) -> Child {
    let mut cmd = Command::new(program);
    if let Some(conf) = openssl_conf {
        cmd.env("OPENSSL_CONF", conf);
    }
    cmd.args(["-h", "127.0.0.1", "-p", &b.addr.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed ({e}): run scripts/test, which installs \
             mosquitto-clients (the interop tests never skip)"
        ),
        Err(e) => panic!("cannot start `{program}`: {e}"),
    }
}

/// Waits (bounded) for a process to exit and collects its output.
pub async fn finish(child: Child, what: &str) -> Output {
    match tokio::time::timeout(PROCESS_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{what}: cannot collect the output: {e}"),
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => panic!("{what} did not exit within {PROCESS_TIMEOUT:?}"),
    }
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `mosquitto_pub` to completion and returns its output, whatever its exit status.
pub async fn mosquitto_pub(b: &TestBroker, args: &[&str]) -> Output {
    finish(
        spawn("mosquitto_pub", b, args, None),
        &format!("mosquitto_pub {args:?}"),
    )
    .await
}

/// Starts `mosquitto_sub -W ... -F format args...` and waits until the broker holds
/// `subscriptions` subscriptions in total; fails early, with its output, if the process exits
/// first.
pub async fn subscriber(
    b: &TestBroker,
    format: &str,
    args: &[&str],
    subscriptions: usize,
) -> Child {
    let mut full = vec!["-W", SUB_TIMEOUT_SECS, "-F", format];
    full.extend_from_slice(args);
    let mut child = spawn("mosquitto_sub", b, &full, None);
    let deadline = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
    while b.broker.subscription_count() < subscriptions {
        if let Ok(Some(status)) = child.try_wait() {
            let (mut out, mut err) = (String::new(), String::new());
            if let Some(mut stdout) = child.stdout.take() {
                let _ = stdout.read_to_string(&mut out).await;
            }
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err).await;
            }
            panic!(
                "mosquitto_sub {full:?} exited before subscribing ({status}); stdout: {out:?}; \
                 stderr: {err}"
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto_sub {full:?} not subscribed within {SUBSCRIBE_TIMEOUT:?} \
             ({} subscriptions, expected {subscriptions})",
            b.broker.subscription_count()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child
}

/// Waits for a subscriber started with `-C n` to exit successfully; returns its lines in the
/// order printed.
pub async fn received(child: Child) -> Vec<String> {
    let out = finish(child, "mosquitto_sub").await;
    assert!(
        out.status.success(),
        "mosquitto_sub failed ({}) (exit code 27 means its -W timeout expired before all \
         expected messages arrived); stdout: {:?}; stderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_owned).collect()
}
