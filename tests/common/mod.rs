//! Shared helpers for the integration tests: a broker on an ephemeral port, a raw-packet
//! client built on the project's own codec (for malformed input and exact flows), and waiting
//! helpers that never sleep-and-hope.
#![allow(dead_code)]

pub mod mosquitto;
pub mod mqtt_bench;
pub mod overload;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use mqtt_server::codec::{
    self, Ack, Connect, LastWill, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscriptionOptions, Unsubscribe,
};
use mqtt_server::config::{Config, ListenerConfig};
use mqtt_server::{Broker, ClientInfo, Decision, Hooks, QoS as HookQoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Default time allowed for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(5);

/// A configuration with one listener on 127.0.0.1, port 0. Failed logins are answered at
/// once and never ban (tests refuse many logins from 127.0.0.1 on purpose); the tests of
/// those defaults set them back.
pub fn test_config() -> Config {
    let mut config = Config {
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().expect("literal address"),
            allow_anonymous: Some(true),
            password_file: None,
            acl_file: None,
            tls: None,
        }],
        ..Config::default()
    };
    config.auth.failed_login_delay_ms = 0;
    config.auth.ban_after_failures = 0;
    config
}

/// A started broker and its address.
pub struct TestBroker {
    pub broker: Broker,
    pub addr: SocketAddr,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> TestBroker {
        TestBroker::start_broker(Broker::new(config)).await
    }

    pub async fn start_with_hooks(config: Config, hooks: impl Hooks) -> TestBroker {
        TestBroker::start_broker(Broker::with_hooks(config, hooks)).await
    }

    async fn start_broker(broker: Broker) -> TestBroker {
        broker.start().await.expect("broker starts");
        let addr = broker.local_addr().expect("bound address");
        TestBroker { broker, addr }
    }

    pub async fn stop(self) {
        self.broker.shutdown().await;
    }
}

pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero packet id")
}

/// A CONNECT packet for `client_id` with the given Clean Session flag and keep-alive.
pub fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: clean,
        keep_alive,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

pub fn will(topic: &str, payload: &str, qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: ByteString::from(topic),
        payload: bytes::Bytes::from(payload.to_string()),
        qos,
        retain,
        properties: None,
    }
}

pub fn publish(topic: &str, payload: &str, qos: QoS, retain: bool, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: ByteString::from(topic),
        packet_id: id.map(pid),
        payload: bytes::Bytes::from(payload.to_string()),
        properties: None,
    })
}

pub fn subscribe(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, q)| {
                (
                    ByteString::from(*f),
                    SubscriptionOptions {
                        qos: *q,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        properties: None,
    })
}

pub fn unsubscribe(id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        filters: filters.iter().map(|f| ByteString::from(*f)).collect(),
        properties: None,
    })
}

pub fn ack(id: u16) -> Ack {
    Ack::new(pid(id))
}

/// A client that speaks raw MQTT through the project's codec.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    pub async fn open(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: BytesMut::new(),
            version: ProtocolVersion::V3_1_1,
        }
    }

    /// Opens a connection, sends CONNECT and expects a successful CONNACK; returns the client
    /// and the Session Present flag.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, bool) {
        let mut c = RawClient::open(addr).await;
        c.version = connect.protocol;
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, 0, "CONNACK refused");
                (c, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with Clean Session 1 and keep-alive 60.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> RawClient {
        RawClient::connect_with(addr, connect_packet(client_id, true, 60))
            .await
            .0
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        codec::encode(&packet, self.version, &mut out).expect("encodable test packet");
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet within `WAIT`; `None` if the connection closed. Panics on timeout.
    pub async fn recv(&mut self) -> Option<Packet> {
        match self.recv_within(WAIT).await {
            Ok(p) => p,
            Err(()) => panic!("no packet within {WAIT:?}"),
        }
    }

    /// The next packet within `timeout`: `Ok(Some)` a packet, `Ok(None)` closed, `Err` timeout.
    pub async fn recv_within(&mut self, timeout: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match codec::decode(&mut self.buf, self.version, usize::MAX) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Asserts nothing arrives within `d` (used only to check a negative, after a positive
    /// barrier such as a PINGRESP has proven the broker processed everything before it).
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(p) = self.recv_within(d).await {
            panic!("expected silence, got {p:?}");
        }
    }

    /// Sends PINGREQ and returns every packet received before the PINGRESP: a barrier proving
    /// the broker has handled everything this client sent before it.
    pub async fn ping_barrier(&mut self) -> Vec<Packet> {
        self.send(Packet::PingReq).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Some(Packet::PingResp) => return before,
                Some(p) => before.push(p),
                None => panic!("connection closed before PINGRESP"),
            }
        }
    }

    /// Proves that no PUBLISH is waiting for this client: subscribes to a fresh marker topic,
    /// has an in-process client publish to it, and requires the marker to be the next PUBLISH.
    /// (A PINGRESP proves nothing here: control packets overtake queued messages.) Other
    /// packets (acks) are allowed through.
    pub async fn assert_no_publish(&mut self, broker: &Broker) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let marker = format!("$marker/{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.send(subscribe(65_000, &[(marker.as_str(), QoS::AtMostOnce)]))
            .await;
        let local = broker.local_client(&format!("marker-publisher-{marker}"));
        let mut subscribed = false;
        loop {
            match self.recv().await {
                Some(Packet::SubAck(a)) if a.packet_id == pid(65_000) && !subscribed => {
                    subscribed = true;
                    local
                        .publish(&marker, "marker", QoS::AtMostOnce, false)
                        .expect("marker topic");
                }
                Some(Packet::Publish(p)) if *p.topic == *marker => break,
                Some(Packet::Publish(p)) => panic!("unexpected PUBLISH before the marker: {p:?}"),
                Some(_) => {}
                None => panic!("connection closed while checking for stray PUBLISHes"),
            }
        }
        self.send(unsubscribe(65_000, &[marker.as_str()])).await;
        match self.recv().await {
            Some(Packet::UnsubAck(_)) => {}
            other => panic!("expected UNSUBACK for the marker, got {other:?}"),
        }
    }

    /// Waits for the broker to close the connection, allowing any packets before it.
    pub async fn expect_closed(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Ok(None) => return,
                Ok(Some(_)) => continue,
                Err(()) => panic!("connection not closed within {WAIT:?}"),
            }
        }
    }

    /// Receives a PUBLISH (panics on anything else).
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(subscribe(id, filters)).await;
        match self.recv().await {
            Some(Packet::SubAck(s)) => {
                assert_eq!(
                    s.packet_id,
                    pid(id),
                    "[MQTT-3.8.4-2] SUBACK carries the SUBSCRIBE's packet id"
                );
                s.codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Default::default())).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Waits until `cond` holds, checking every 5 ms, failing after `WAIT`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Hooks that refuse every subscription whose filter starts with `denied/` (a refusal the
/// tests can trigger on purpose).
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyPrefix;

#[async_trait::async_trait]
impl Hooks for DenyPrefix {
    fn on_subscribe(&self, _client: &ClientInfo, filter: &str, _qos: &mut HookQoS) -> Decision {
        if filter.starts_with("denied/") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

/// Longest time one Python interop script may run before it is killed and the test fails.
pub const PAHO_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Exit code of a script that cannot import paho-mqtt (see `tests/interop/paho_common.py`).
const EXIT_NO_PAHO: i32 = 3;

/// Runs `python3 tests/interop/<script>.py --port PORT args...` (a Paho interop script), requires
/// exit code 0 and returns its stdout. A missing python3 or paho-mqtt fails the test with the
/// remedy (`scripts/test` installs them): the interop tests never skip.
pub async fn run_paho_script(script: &str, port: u16, args: &[&str]) -> String {
    use std::process::Stdio;
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
        .join(format!("{script}.py"));
    let child = tokio::process::Command::new("python3")
        .arg(&path)
        .args(["--port", &port.to_string()])
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "python3 is not installed ({e}): run scripts/test (the interop tests never skip)"
            )
        }
        Err(e) => panic!("cannot start python3 {}: {e}", path.display()),
    };
    let out = match tokio::time::timeout(PAHO_SCRIPT_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("{script} {args:?}: cannot collect the output: {e}"),
        // The dropped child is killed (kill_on_drop).
        Err(_) => panic!("{script} {args:?} did not finish within {PAHO_SCRIPT_TIMEOUT:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(EXIT_NO_PAHO),
        "paho-mqtt is missing: run scripts/test, which installs it. stderr: {stderr}"
    );
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}
