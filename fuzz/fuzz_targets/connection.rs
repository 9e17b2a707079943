//! Stateful fuzz target: whole client byte streams through the real per-connection state machine.
//!
//! ```text
//! cargo +nightly fuzz run connection fuzz/corpus/connection fuzz/seeds/connection
//! ```
//!
//! One broker runs for the whole process, on 127.0.0.1 port 0, inside a current-thread tokio
//! runtime created once. Each input is what up to [`MAX_CLIENTS`] clients send, their byte
//! streams separated by [`SEPARATOR`]: each is written to a fresh TCP connection, all at once
//! (so one client's PUBLISH reaches another's subscription, a second CONNECT with the same
//! client id takes a session over, shared subscriptions pick between members...), then
//! half-closed; the harness reads what the broker answers each until it closes the connection
//! (or stays silent for [`IDLE`]). The broker's state (sessions, subscriptions, retained
//! messages) carries over from input to input, as on a live server.
//!
//! Checked:
//! - nothing panics, in the harness or in any broker task (libfuzzer-sys's panic hook aborts
//!   the process, whichever task panicked);
//! - when the input starts with a well-formed CONNECT, everything the broker sends back decodes
//!   at the protocol level of that CONNECT (the broker never writes a malformed packet);
//! - every [`PROBE_EVERY`] inputs, a well-behaved MQTT 3.1.1 client still gets CONNACK 0 and a
//!   PINGRESP: no input leaves the broker wedged.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use libfuzzer_sys::fuzz_target;
use mqtt_server::Broker;
use mqtt_server::codec::{self, Connect, Packet, ProtocolVersion};
use mqtt_server::config::{Config, ListenerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Separates the byte streams of the clients of one input.
const SEPARATOR: &[u8] = b"\n--client--\n";
/// Most clients per input (the rest of the input goes to the last one).
const MAX_CLIENTS: usize = 4;
/// How long the harness waits for more bytes from the broker before giving up on an input.
const IDLE: Duration = Duration::from_millis(20);
/// A liveness probe every this many inputs.
const PROBE_EVERY: u64 = 1000;
/// How long the liveness probe may take.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// The runtime and the broker, created on the first input.
struct Harness {
    runtime: Runtime,
    addr: SocketAddr,
    /// Kept alive for the whole process.
    _broker: Broker,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static INPUTS: AtomicU64 = AtomicU64::new(0);

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut config = Config {
            listeners: vec![ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                allow_anonymous: Some(true),
                password_file: None,
                acl_file: None,
                tls: None,
            }],
            ..Config::default()
        };
        // Failed logins answered at once and never banned: the fuzzer fails many on purpose.
        config.auth.failed_login_delay_ms = 0;
        config.auth.ban_after_failures = 0;
        // Bound the memory the fuzzer's persistent sessions can pin over millions of inputs.
        config.limits.max_queued_messages = 16;
        config.mqtt.session_expiry_interval = 1;
        let broker = Broker::new(config);
        runtime.block_on(broker.start()).expect("the broker starts");
        let addr = broker.local_addr().expect("a bound address");
        Harness {
            runtime,
            addr,
            _broker: broker,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let n = INPUTS.fetch_add(1, Ordering::Relaxed);
    let clients = split_clients(data);
    let replies = h.runtime.block_on(async {
        let exchanges = clients.iter().map(|c| exchange(h.addr, c));
        join_all(exchanges).await
    });
    for (client, reply) in clients.iter().zip(&replies) {
        check_reply(client, reply);
    }
    if n.is_multiple_of(PROBE_EVERY) {
        h.runtime.block_on(probe(h.addr));
    }
});

/// The clients' byte streams of one input: split at [`SEPARATOR`], at most [`MAX_CLIENTS`].
fn split_clients(data: &[u8]) -> Vec<&[u8]> {
    let mut clients = Vec::new();
    let mut rest = data;
    while clients.len() + 1 < MAX_CLIENTS {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                clients.push(rest.get(..at).unwrap_or_default());
                rest = rest.get(at + SEPARATOR.len()..).unwrap_or_default();
            }
            None => break,
        }
    }
    clients.push(rest);
    clients
}

/// Runs the exchanges at once, on this task, and returns their replies in order.
async fn join_all<F: std::future::Future<Output = Vec<u8>>>(
    exchanges: impl Iterator<Item = F>,
) -> Vec<Vec<u8>> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = exchanges.map(Box::pin).collect();
    let mut replies: Vec<Option<Vec<u8>>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in futures.iter_mut().zip(replies.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    replies.into_iter().map(Option::unwrap_or_default).collect()
}

/// Sends `data` on a fresh connection, half-closes it, and returns what the broker sent back.
async fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        panic!("the broker refused a TCP connection");
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.split();
    let mut reply = Vec::new();
    // Write and read at once: a broker that answers a long input packet by packet must not
    // dead-lock against a harness that only reads after writing everything.
    let write = async {
        let _ = wr.write_all(data).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(IDLE, rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => reply.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
    };
    tokio::join!(write, read);
    reply
}

/// When `data` starts with a well-formed CONNECT, every packet in `reply` must decode at the
/// protocol level that CONNECT asked for.
fn check_reply(data: &[u8], reply: &[u8]) {
    let mut input = BytesMut::from(data);
    let Ok(Some(Packet::Connect(connect))) =
        codec::decode(&mut input, ProtocolVersion::V3_1_1, usize::MAX)
    else {
        return;
    };
    let version = connect.protocol;
    let mut out = BytesMut::from(reply);
    loop {
        match codec::decode(&mut out, version, usize::MAX) {
            Ok(Some(_)) => {}
            // A reply cut short by the idle timeout ends in a partial packet.
            Ok(None) => break,
            Err(err) => panic!(
                "the broker sent a malformed packet at {version:?}: {err}; reply {reply:02x?}"
            ),
        }
    }
}

/// A well-behaved client must still get CONNACK 0 and PINGRESP.
async fn probe(addr: SocketAddr) {
    let result = tokio::time::timeout(PROBE_WAIT, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let connect = Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 30,
            client_id: ByteString::from_static("fuzz-probe"),
            will: None,
            username: None,
            password: None,
            properties: None,
        }));
        let mut out = BytesMut::new();
        codec::encode(&connect, ProtocolVersion::V3_1_1, &mut out).ok()?;
        codec::encode(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut out).ok()?;
        stream.write_all(&out).await.ok()?;
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 2 {
            match codec::decode(&mut buf, ProtocolVersion::V3_1_1, usize::MAX).ok()? {
                Some(packet) => got.push(packet),
                None => {
                    if stream.read_buf(&mut buf).await.ok()? == 0 {
                        return None;
                    }
                }
            }
        }
        Some(got)
    })
    .await;
    match result.ok().flatten().as_deref() {
        Some([Packet::ConnAck(ack), Packet::PingResp]) if ack.code == 0 => {}
        other => panic!("liveness probe failed: {other:?}"),
    }
}
