//! The `mqtt-server` daemon as a process: the listening line on stdout, clients served on the
//! port it reports, a clean exit on SIGTERM, `--print-default-config`, and configuration
//! errors (exit code 2, with the file and the key named on stderr).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mqtt_server::Config;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-server");
/// Longest time the daemon may take to report its listeners or to fail on bad input.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGTERM must make the daemon exit within this time.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an MQTT round trip through the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENING: &str = "mqtt-server listening on ";

/// The daemon's command, killed when dropped, with logging left to its arguments.
fn daemon(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running daemon and the addresses it reported.
struct Server {
    child: Child,
    addrs: Vec<SocketAddr>,
    /// Drains the rest of stdout (logs) so the daemon never blocks on a full pipe.
    rest: JoinHandle<String>,
}

impl Server {
    /// Starts the daemon and reads `listeners` listening lines from its stdout.
    async fn start(args: &[&str], listeners: usize) -> Server {
        let mut child = daemon(args).spawn().expect("start mqtt-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs = Vec::new();
        let mut seen = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, async {
            while addrs.len() < listeners {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(addr) = line.strip_prefix(LISTENING) {
                            let addr = addr.trim().parse::<SocketAddr>().unwrap_or_else(|e| {
                                panic!("listening line {line:?} has no address: {e}")
                            });
                            addrs.push(addr);
                        }
                        seen.push_str(&line);
                        seen.push('\n');
                    }
                    Ok(None) | Err(_) => return false,
                }
            }
            true
        })
        .await;
        match read {
            Ok(true) => {}
            Ok(false) => {
                let status = child.wait().await.expect("wait for mqtt-server");
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err).await;
                }
                panic!(
                    "mqtt-server {args:?} exited ({status}) before listening; stdout:\n{seen}stderr:\n{err}"
                );
            }
            Err(_) => panic!(
                "mqtt-server {args:?} printed no {listeners} listening line(s) within \
                 {START_TIMEOUT:?}; stdout so far:\n{seen}"
            ),
        }
        let rest = tokio::spawn(drain(lines.into_inner()));
        Server { child, addrs, rest }
    }

    /// Sends SIGTERM (with the `kill` command: no libc dependency) and waits for the exit.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("the daemon is still running");
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed: {kill}");
        let status = match tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.expect("wait for mqtt-server"),
            // `self.child` is killed when dropped.
            Err(_) => panic!("mqtt-server did not exit within {EXIT_TIMEOUT:?} of SIGTERM"),
        };
        let _ = tokio::time::timeout(EXIT_TIMEOUT, &mut self.rest).await;
        status
    }
}

async fn drain(stdout: BufReader<ChildStdout>) -> String {
    let mut rest = String::new();
    let mut stdout = stdout;
    let _ = stdout.read_to_string(&mut rest).await;
    rest
}

/// Runs the daemon expecting it to exit by itself (bad input, or `--print-default-config`).
async fn run_to_exit(args: &[&str]) -> Output {
    let child = daemon(args).spawn().expect("start mqtt-server");
    match tokio::time::timeout(START_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("collect mqtt-server output"),
        Err(_) => panic!("mqtt-server {args:?} did not exit within {START_TIMEOUT:?}"),
    }
}

/// A file in the temporary directory, removed when dropped (no `tempfile` dev-dependency).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "mqtt-server-cli-test-{}-{n}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write the temporary config file");
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8 here")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Subscribes and publishes one QoS 1 message through the daemon with rumqttc; returns the
/// payload received.
async fn rumqttc_round_trip(addr: SocketAddr, client_id: &str) -> Vec<u8> {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    // Queued before the connection exists: rumqttc sends them in order after CONNECT.
    client
        .subscribe("cli/round-trip", QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    client
        .publish(
            "cli/round-trip",
            QoS::AtLeastOnce,
            false,
            "through the daemon",
        )
        .await
        .expect("queue PUBLISH");
    let received = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let mut connected = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    assert_eq!(ack.code, ConnectReturnCode::Success, "CONNACK");
                    connected = true;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert!(connected, "PUBLISH before CONNACK");
                    assert_eq!(p.topic, "cli/round-trip");
                    assert_eq!(p.qos, QoS::AtLeastOnce);
                    return p.payload.to_vec();
                }
                Ok(_) => {}
                Err(e) => panic!("rumqttc connection to {addr} failed: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no round trip through {addr} within {CLIENT_TIMEOUT:?}"));
    client.disconnect().await.expect("queue DISCONNECT");
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    received
}

#[tokio::test]
async fn port_0_serves_clients_and_sigterm_exits_0() {
    let server = Server::start(&["--port", "0", "--log-level", "warn"], 1).await;
    let [addr] = server.addrs[..] else {
        panic!("one listener expected, got {:?}", server.addrs)
    };
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "default bind address");
    assert_ne!(addr.port(), 0, "port 0 is replaced by the chosen port");
    assert_eq!(
        rumqttc_round_trip(addr, "cli-port-0").await,
        b"through the daemon"
    );

    // A client still connected must not delay the exit beyond the deadline.
    let mut options = MqttOptions::new("cli-lingering", "127.0.0.1", addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (_client, mut lingering) = AsyncClient::new(options, 10);
    match tokio::time::timeout(CLIENT_TIMEOUT, lingering.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
            assert_eq!(ack.code, ConnectReturnCode::Success)
        }
        other => panic!("expected CONNACK for the lingering client, got {other:?}"),
    }

    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "SIGTERM: clean exit, got {status}");
    // The daemon closed the lingering connection on its way out.
    match tokio::time::timeout(CLIENT_TIMEOUT, lingering.poll()).await {
        Ok(Err(_)) => {}
        other => panic!("the lingering connection should be closed, got {other:?}"),
    }
}

/// The listening line announces readiness, so a supervisor may stop the daemon as soon as it
/// appears: SIGTERM must then already be handled (clean exit 0), not kill the process with
/// the default action. Repeated because the window is short.
#[tokio::test]
async fn sigterm_right_after_the_listening_line_exits_0() {
    for attempt in 1..=50 {
        let server = Server::start(&["--port", "0", "--log-level", "warn"], 1).await;
        let status = server.terminate().await;
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: SIGTERM sent just after the listening line: {status} (the \
             daemon prints the line before installing its SIGTERM handler)"
        );
    }
}

#[tokio::test]
async fn bind_ip_with_port_0() {
    let server = Server::start(&["--bind", "127.0.0.1", "--port", "0"], 1).await;
    let [addr] = server.addrs[..] else {
        panic!("one listener expected, got {:?}", server.addrs)
    };
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert_eq!(
        rumqttc_round_trip(addr, "cli-bind").await,
        b"through the daemon"
    );
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn bind_ip_and_port_in_one_argument() {
    let server = Server::start(&["--bind", "127.0.0.1:0"], 1).await;
    let [addr] = server.addrs[..] else {
        panic!("one listener expected, got {:?}", server.addrs)
    };
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert_eq!(
        rumqttc_round_trip(addr, "cli-bind-addr").await,
        b"through the daemon"
    );
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn config_file_with_two_listeners() {
    let file = TempFile::new(
        "two-listeners.toml",
        "log_level = \"warn\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n",
    );
    let server = Server::start(&["--config", file.arg()], 2).await;
    let [first, second] = server.addrs[..] else {
        panic!("two listeners expected, got {:?}", server.addrs)
    };
    assert_ne!(first.port(), second.port(), "two distinct ports");
    assert_eq!(
        rumqttc_round_trip(first, "cli-first").await,
        b"through the daemon"
    );
    assert_eq!(
        rumqttc_round_trip(second, "cli-second").await,
        b"through the daemon"
    );
    let status = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn print_default_config_prints_the_default_as_toml() {
    let out = run_to_exit(&["--print-default-config"]).await;
    assert!(out.status.success(), "{}", out.status);
    let text = String::from_utf8(out.stdout).expect("UTF-8 configuration");
    let table: toml::Table = toml::from_str(&text).expect("valid TOML");
    assert!(
        table.contains_key("listener") && table.contains_key("limits"),
        "{table:?}"
    );
    let config = Config::from_toml_str(&text, "<stdout>").expect("a valid configuration");
    assert_eq!(
        config,
        Config::default(),
        "the printed file documents the defaults"
    );
}

#[tokio::test]
async fn unknown_key_exits_2_naming_file_and_key() {
    let file = TempFile::new("unknown-key.toml", "[limits]\nmax_conections = 5\n");
    let out = run_to_exit(&["--config", file.arg(), "--port", "0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(file.arg()), "the file is named: {stderr}");
    assert!(
        stderr.contains("max_conections"),
        "the key is named: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(LISTENING),
        "nothing may listen"
    );
}

#[tokio::test]
async fn invalid_value_exits_2_naming_the_key() {
    let file = TempFile::new("zero-packet.toml", "[limits]\nmax_packet_size = 0\n");
    let out = run_to_exit(&["--config", file.arg(), "--port", "0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(file.arg()), "the file is named: {stderr}");
    assert!(
        stderr.contains("limits.max_packet_size"),
        "the key is named: {stderr}"
    );
}

#[tokio::test]
async fn missing_config_file_fails_naming_the_path() {
    let file = TempFile::new("missing.toml", "");
    let path = file.path().to_path_buf();
    drop(file);
    assert!(!path.exists());
    let path = path.to_str().expect("UTF-8 path").to_owned();
    let out = run_to_exit(&["--config", &path, "--port", "0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a missing file is an error: {stderr}"
    );
    assert!(stderr.contains(&path), "the path is named: {stderr}");
}

#[tokio::test]
async fn unparsable_bind_exits_2() {
    let out = run_to_exit(&["--bind", "not-an-address"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("--bind") && stderr.contains("not-an-address"),
        "{stderr}"
    );
}

/// Connects with rumqttc as `user`/`password` and returns the CONNACK code.
async fn connack_code(
    addr: SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> ConnectReturnCode {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, password);
    let (_client, mut events) = AsyncClient::new(options, 10);
    let polled = tokio::time::timeout(CLIENT_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    })
    .await;
    polled.expect("CONNACK within the timeout")
}

#[tokio::test]
async fn passwd_subcommand_writes_files_that_mosquitto_passwd_and_the_broker_share() {
    let file = TempFile::new("passwd", "");
    // Ours creates the file, Mosquitto's tool adds a user to it, ours deletes one.
    let out = run_to_exit(&["passwd", "-c", "-b", file.arg(), "alice", "alice-pw"]).await;
    assert!(out.status.success(), "passwd -c -b: {out:?}");
    let out = run_to_exit(&["passwd", "-b", file.arg(), "carol", "carol-pw"]).await;
    assert!(out.status.success(), "passwd -b: {out:?}");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", file.arg(), "bob", "bob-pw"])
        .status()
        .expect("mosquitto_passwd must be installed (scripts/test installs the mosquitto package)");
    assert!(status.success(), "mosquitto_passwd -b on our file");
    let out = run_to_exit(&["passwd", "-D", file.arg(), "carol"]).await;
    assert!(out.status.success(), "passwd -D: {out:?}");
    let text = std::fs::read_to_string(file.path()).expect("read");
    assert!(text.contains("alice:$7$") && text.contains("bob:$7$") && !text.contains("carol"));
    // A password on the command line without -b is refused (it would end in shell history
    // by accident), with exit code 2.
    let out = run_to_exit(&["passwd", file.arg(), "dave", "pw"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let config = TempFile::new(
        "passwd.toml",
        &format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[auth]\npassword_file = \"{}\"\n",
            file.arg()
        ),
    );
    let server = Server::start(&["--config", config.arg(), "--log-level", "warn"], 1).await;
    let addr = server.addrs[0];
    assert_eq!(
        connack_code(addr, "a", "alice", "alice-pw").await,
        ConnectReturnCode::Success
    );
    assert_eq!(
        connack_code(addr, "b", "bob", "bob-pw").await,
        ConnectReturnCode::Success
    );
    assert_eq!(
        connack_code(addr, "c", "alice", "wrong").await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_missing_password_file_stops_the_start_naming_the_path() {
    let config = TempFile::new(
        "missing-passwd.toml",
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[auth]\npassword_file = \"/nonexistent/mqtt-passwd\"\n",
    );
    let out = run_to_exit(&["--config", config.arg()]).await;
    assert!(!out.status.success(), "must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/mqtt-passwd"), "{stderr}");
}
