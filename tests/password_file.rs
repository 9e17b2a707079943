//! `[auth] password_file` with a file written by Mosquitto's own `mosquitto_passwd` (Debian
//! package `mosquitto`, installed by scripts/test): the right password is accepted (MQTT 3.1.1
//! and 5), a wrong one and an unknown user are refused (0x04 / 0x86), anonymous clients are
//! still admitted on a loopback listener, `Broker::reload` picks up changes made with the
//! tool, and a broken or missing file is an error naming the file (and line).
//!
//! Without `mosquitto_passwd` these tests fail: they never skip.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use mqtt_server::codec::{Packet, ProtocolVersion};
use mqtt_server::config::{Config, ListenerConfig};
use mqtt_server::{Broker, BrokerError};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// MQTT 3.1.1 CONNACK 0x04: bad user name or password ([MQTT-3.2.2-5] table 3.1).
const BAD_CREDENTIALS_311: u8 = 0x04;
/// MQTT 5 CONNACK 0x86: bad user name or password.
const BAD_CREDENTIALS_5: u8 = 0x86;

/// A per-test directory in the system temporary directory (pid + test name), removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "mqtt-server-passwd-test-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs Mosquitto's `mosquitto_passwd` with `args`; a missing tool fails the test.
fn mosquitto_passwd(args: &[&str]) {
    let out = match std::process::Command::new("mosquitto_passwd")
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "mosquitto_passwd is not installed: these tests need Mosquitto's own tool to write \
             the password file (Debian package `mosquitto`; scripts/test installs it)"
        ),
        Err(e) => panic!("cannot run mosquitto_passwd: {e}"),
    };
    assert!(
        out.status.success(),
        "mosquitto_passwd {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates `file` with `mosquitto_passwd -c -b` for the first user, `-b` for the others.
fn password_file(file: &Path, users: &[(&str, &str)]) {
    let file_arg = file.to_str().expect("temporary paths are UTF-8 here");
    for (i, (user, password)) in users.iter().enumerate() {
        if i == 0 {
            mosquitto_passwd(&["-c", "-b", file_arg, user, password]);
        } else {
            mosquitto_passwd(&["-b", file_arg, user, password]);
        }
    }
}

/// One listener on 127.0.0.1:0 with `allow_anonymous` left to its default (true on a
/// loopback address), and `file` as the password file.
fn config(file: &Path) -> Config {
    let mut config = Config {
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().expect("literal address"),
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            tls: None,
        }],
        ..Config::default()
    };
    config.auth.password_file = Some(file.to_path_buf());
    // Refusals answered at once (the delay has its own test in tests/limits.rs).
    config.auth.failed_login_delay_ms = 0;
    config
}

/// The alice / bob file used by most tests.
fn alice_and_bob(dir: &TempDir) -> PathBuf {
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "secret"), ("bob", "hunter2")]);
    let text = std::fs::read_to_string(&file).expect("read the password file");
    // The tool wrote its usual format (PBKDF2-SHA512, `$7$`), which the broker must read.
    assert!(
        text.lines().any(|l| l.starts_with("alice:$7$")) && text.contains("\nbob:$7$"),
        "unexpected mosquitto_passwd output: {text}"
    );
    file
}

async fn start(config: Config) -> TestBroker {
    TestBroker::start_with(config).await
}

/// Sends CONNECT (`user`/`password` if given) at `version`; returns the CONNACK code, and the
/// client when it was accepted. A refused client must see the connection closed
/// ([MQTT-3.2.2-5] / [MQTT-3.2.2-7] in 5.0).
async fn connack(
    b: &TestBroker,
    client_id: &str,
    version: ProtocolVersion,
    credentials: Option<(&str, Option<&str>)>,
) -> (u8, Option<RawClient>) {
    let mut connect = connect_packet(client_id, true, 60);
    connect.protocol = version;
    if let Some((user, password)) = credentials {
        connect.username = Some(ByteString::from(user));
        connect.password = password.map(|p| Bytes::from(p.to_owned()));
    }
    let mut c = RawClient::open(b.addr).await;
    c.version = version;
    c.send(Packet::Connect(Box::new(connect))).await;
    let code = match c.recv().await {
        Some(Packet::ConnAck(a)) => a.code,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if code == 0 {
        // Usable: a PINGREQ is answered.
        assert!(c.ping_barrier().await.is_empty());
        (code, Some(c))
    } else {
        c.expect_closed().await;
        (code, None)
    }
}

/// The CONNACK code for `user`/`password` at `version`.
async fn login(b: &TestBroker, version: ProtocolVersion, user: &str, password: &str) -> u8 {
    let id = format!("{user}-{version:?}");
    connack(b, &id, version, Some((user, Some(password))))
        .await
        .0
}

#[tokio::test]
async fn right_password_is_accepted_v311_and_v5() {
    let dir = TempDir::new("right");
    let b = start(config(&alice_and_bob(&dir))).await;
    assert_eq!(login(&b, V311, "alice", "secret").await, 0);
    assert_eq!(login(&b, V5, "alice", "secret").await, 0);
    assert_eq!(login(&b, V311, "bob", "hunter2").await, 0);
    assert_eq!(login(&b, V5, "bob", "hunter2").await, 0);
    b.stop().await;
}

#[tokio::test]
async fn wrong_password_is_refused_0x04_v311_0x86_v5() {
    let dir = TempDir::new("wrong");
    let b = start(config(&alice_and_bob(&dir))).await;
    assert_eq!(
        login(&b, V311, "alice", "hunter2").await,
        BAD_CREDENTIALS_311
    );
    assert_eq!(login(&b, V5, "alice", "Secret").await, BAD_CREDENTIALS_5);
    // The password of another user, an empty one, and none at all.
    assert_eq!(login(&b, V5, "bob", "secret").await, BAD_CREDENTIALS_5);
    assert_eq!(login(&b, V311, "alice", "").await, BAD_CREDENTIALS_311);
    let (code, _) = connack(&b, "no-password", V311, Some(("alice", None))).await;
    assert_eq!(code, BAD_CREDENTIALS_311, "user name without a password");
    b.stop().await;
}

#[tokio::test]
async fn unknown_user_is_refused() {
    let dir = TempDir::new("unknown");
    let b = start(config(&alice_and_bob(&dir))).await;
    assert_eq!(
        login(&b, V311, "mallory", "secret").await,
        BAD_CREDENTIALS_311
    );
    assert_eq!(login(&b, V5, "mallory", "secret").await, BAD_CREDENTIALS_5);
    // User names are case sensitive.
    assert_eq!(login(&b, V5, "Alice", "secret").await, BAD_CREDENTIALS_5);
    b.stop().await;
}

#[tokio::test]
async fn anonymous_clients_are_still_admitted_on_loopback_by_default() {
    let dir = TempDir::new("anonymous");
    let file = alice_and_bob(&dir);
    let b = start(config(&file)).await;
    let (code, c) = connack(&b, "anon-311", V311, None).await;
    assert_eq!(
        code, 0,
        "anonymous MQTT 3.1.1 client on a loopback listener"
    );
    assert!(c.is_some());
    let (code, _) = connack(&b, "anon-5", V5, None).await;
    assert_eq!(code, 0, "anonymous MQTT 5 client on a loopback listener");
    b.stop().await;

    // Control: the same file with allow_anonymous = false refuses them (not authorized).
    let mut strict = config(&file);
    strict.listeners[0].allow_anonymous = Some(false);
    let b = start(strict).await;
    assert_eq!(connack(&b, "anon-311", V311, None).await.0, 0x05);
    assert_eq!(connack(&b, "anon-5", V5, None).await.0, 0x87);
    assert_eq!(login(&b, V311, "alice", "secret").await, 0);
    b.stop().await;
}

#[tokio::test]
async fn users_added_before_start_are_replaced_by_the_file() {
    let dir = TempDir::new("replaced");
    let broker = Broker::new(config(&alice_and_bob(&dir)));
    broker.add_credentials("dave", "pw");
    broker
        .start()
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let b = TestBroker {
        addr: broker.local_addr().expect("bound address"),
        broker,
    };
    assert_eq!(login(&b, V311, "dave", "pw").await, BAD_CREDENTIALS_311);
    assert_eq!(login(&b, V311, "alice", "secret").await, 0);
    b.stop().await;
}

#[tokio::test]
async fn reload_picks_up_users_added_changed_and_deleted() {
    let dir = TempDir::new("reload");
    let file = alice_and_bob(&dir);
    let file_arg = file.to_str().expect("UTF-8 path");
    let b = start(config(&file)).await;
    assert_eq!(login(&b, V311, "carol", "new").await, BAD_CREDENTIALS_311);

    mosquitto_passwd(&["-b", file_arg, "carol", "new"]);
    mosquitto_passwd(&["-b", file_arg, "alice", "changed"]);
    mosquitto_passwd(&["-D", file_arg, "bob"]);
    // Not before the reload.
    assert_eq!(login(&b, V311, "carol", "new").await, BAD_CREDENTIALS_311);
    assert_eq!(login(&b, V311, "alice", "secret").await, 0);

    b.broker
        .reload()
        .unwrap_or_else(|e| panic!("reload {}: {e}", file.display()));
    assert_eq!(login(&b, V311, "carol", "new").await, 0);
    assert_eq!(login(&b, V5, "carol", "new").await, 0);
    assert_eq!(login(&b, V5, "alice", "changed").await, 0);
    assert_eq!(login(&b, V5, "alice", "secret").await, BAD_CREDENTIALS_5);
    assert_eq!(login(&b, V5, "bob", "hunter2").await, BAD_CREDENTIALS_5);
    b.stop().await;
}

#[tokio::test]
async fn broken_line_on_reload_names_file_and_line_and_keeps_the_users() {
    let dir = TempDir::new("reload-broken");
    let file = alice_and_bob(&dir);
    let b = start(config(&file)).await;

    // A new user, then a line that is not `user:hash` (line 4).
    mosquitto_passwd(&["-b", file.to_str().expect("UTF-8 path"), "carol", "new"]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open the password file");
    f.write_all(b"this line is broken\n").expect("append");
    drop(f);

    let e = b
        .broker
        .reload()
        .expect_err("a broken password file must not load");
    assert!(
        e.contains(&file.display().to_string()) && e.contains("line 4"),
        "the error names the file and the line: {e}"
    );
    // The previous users stay in force; nothing of the broken file was taken.
    assert_eq!(login(&b, V311, "alice", "secret").await, 0);
    assert_eq!(login(&b, V5, "bob", "hunter2").await, 0);
    assert_eq!(login(&b, V311, "carol", "new").await, BAD_CREDENTIALS_311);
    b.stop().await;
}

#[tokio::test]
async fn start_with_a_missing_password_file_fails_naming_the_path() {
    let dir = TempDir::new("missing");
    let missing = dir.path("no-such-passwd");
    let broker = Broker::new(config(&missing));
    match broker.start().await {
        Err(e @ BrokerError::Security(_)) => {
            let e = e.to_string();
            assert!(e.contains(&missing.display().to_string()), "{e}");
        }
        other => panic!("start with a missing password file: {other:?}"),
    }
    assert_eq!(broker.local_addr(), None, "nothing may listen");
}

#[tokio::test]
async fn start_with_a_broken_password_file_fails_naming_file_and_line() {
    let dir = TempDir::new("broken-start");
    let file = alice_and_bob(&dir);
    let mut text = std::fs::read_to_string(&file).expect("read");
    text.push_str("carol:$7$not-a-hash\n");
    std::fs::write(&file, text).expect("write");
    let broker = Broker::new(config(&file));
    match broker.start().await {
        Err(BrokerError::Security(e)) => {
            assert!(
                e.contains(&file.display().to_string()) && e.contains("line 3"),
                "{e}"
            );
        }
        other => panic!("start with a broken password file: {other:?}"),
    }
    assert_eq!(broker.local_addr(), None, "nothing may listen");
}

#[tokio::test]
async fn empty_password_file_still_refuses_user_names() {
    let dir = TempDir::new("emptied");
    let file = dir.path("passwd");
    password_file(&file, &[("alice", "secret")]);
    let b = start(config(&file)).await;
    assert_eq!(login(&b, V311, "alice", "secret").await, 0);

    // The last user is deleted; the file stays configured.
    mosquitto_passwd(&["-D", file.to_str().expect("UTF-8 path"), "alice"]);
    b.broker.reload().unwrap_or_else(|e| panic!("reload: {e}"));
    // "When set, a client that sends a user name must match an entry" (AuthConfig docs).
    for (version, user) in [(V311, "alice"), (V5, "alice"), (V311, "admin")] {
        let code = login(&b, version, user, "guess").await;
        assert_ne!(
            code, 0,
            "{version:?} {user}: accepted with a wrong password"
        );
    }
    // Anonymous clients are still admitted.
    assert_eq!(connack(&b, "anon", V311, None).await.0, 0);
    b.stop().await;

    // The same at start with a file holding only a comment.
    std::fs::write(&file, "# no users yet\n").expect("write");
    let b = start(config(&file)).await;
    assert_ne!(login(&b, V311, "alice", "guess").await, 0);
    b.stop().await;
}
