//! One client connection: the CONNECT handshake, the read loop with keep-alive, and the exit
//! path (will message, session detach). Outbound traffic is written by a sibling task,
//! [`writer::Writer`], fed through the session's queues.
//!
//! The connection never knows what transport it runs on: it takes any async byte stream halves.

mod handler;
mod handshake;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerCore;
use crate::codec::{self, ConnAck, Connect, DecodeError, LastWill, Packet, ProtocolVersion};
use crate::hooks::{ClientInfo, ConnectDecision, DisconnectReason};
use crate::metrics::Metrics;
use crate::session::{QueueLimits, Session};
use crate::transport::{ListenerContext, ReadHalf};
use handler::Handler;
use writer::Writer;

/// Free space kept in the read buffer before each read.
const READ_CHUNK: usize = 4096;
/// Control packets (acknowledgements) allowed to wait for the writer before the reader stops
/// reading: a client that publishes but never reads its socket must not grow our memory.
const CONTROL_HIGH_WATER: usize = 1024;
/// How long the reader waits for its writer to finish after the connection ends.
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// Serves one accepted connection until it ends. `reader`/`writer` are the two halves of the
/// client's byte stream.
pub(crate) async fn run<R, W>(
    core: Arc<BrokerCore>,
    listener: Arc<ListenerContext>,
    mut reader: R,
    mut writer: W,
    remote_addr: Option<SocketAddr>,
) where
    R: ReadHalf,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max_packet = core.config.limits.max_packet_size as usize;
    let mut buf = BytesMut::new();

    // [MQTT-3.1.0-1] the first packet must be CONNECT, and it must come within the connect
    // timeout (a socket that never sends one must not hold resources: slowloris).
    let deadline = Instant::now() + core.config.limits.connect_timeout();
    let first = tokio::select! {
        biased;
        _ = core.shutdown.cancelled() => return,
        // Boxed, like every other short-lived await of the handshake: an established
        // connection's task then does not carry their state for its whole life.
        r = Box::pin(tokio::time::timeout_at(deadline, read_packet(&mut reader, &mut buf, ProtocolVersion::V3_1_1, max_packet))) => r,
    };
    let connect = match first {
        Err(_elapsed) => {
            tracing::debug!(
                ?remote_addr,
                "no CONNECT within the connect timeout; closing"
            );
            return;
        }
        Ok(Err(ReadError::Closed)) => return,
        Ok(Err(ReadError::Decode(e))) => {
            Metrics::inc(&core.metrics.protocol_errors);
            tracing::debug!(?remote_addr, error = %e, "bad CONNECT; closing");
            if let DecodeError::UnsupportedProtocolLevel(level) = e {
                // [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close.
                let version = (level == 5).then_some(ProtocolVersion::V5);
                let code = handshake::unsupported_version_code(version);
                Box::pin(send_refusal(&mut writer, code, ProtocolVersion::V3_1_1)).await;
            }
            return;
        }
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(other)) => {
            Metrics::inc(&core.metrics.protocol_errors);
            tracing::debug!(
                ?remote_addr,
                packet = other.name(),
                "[MQTT-3.1.0-1] first packet is not CONNECT; closing"
            );
            return;
        }
    };
    serve(core, listener, reader, writer, buf, *connect, remote_addr).await;
}

/// Counts a refused connection and answers it with CONNACK `code`. Boxed: an established
/// connection's task must not carry the size of this rarely taken path.
async fn refuse<W: AsyncWrite + Unpin>(
    core: &BrokerCore,
    writer: &mut W,
    code: u8,
    version: ProtocolVersion,
) {
    Metrics::inc(&core.metrics.connections_refused);
    Box::pin(send_refusal(writer, code, version)).await;
}

/// Writes a refusing CONNACK (Session Present 0, [MQTT-3.2.2-4]) and closes ([MQTT-3.2.2-5]).
async fn send_refusal<W: AsyncWrite + Unpin>(writer: &mut W, code: u8, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: None,
    });
    if codec::encode(&connack, version, &mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = writer.write_all(&out).await;
            let _ = writer.shutdown().await;
        })
        .await;
    }
}

async fn serve<R, W>(
    core: Arc<BrokerCore>,
    listener: Arc<ListenerContext>,
    mut reader: R,
    mut writer: W,
    mut buf: BytesMut,
    mut connect: Connect,
    remote_addr: Option<SocketAddr>,
) where
    R: ReadHalf,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let version = connect.protocol;
    if version.is_v5() {
        // The codec speaks MQTT 5, but the session semantics (reason codes, properties,
        // expiry, aliases, flow control) arrive with issue 4: refuse cleanly until then
        // rather than half-serve a 5.0 client. 0x84 = Unsupported Protocol Version.
        let code = handshake::unsupported_version_code(Some(version));
        return refuse(&core, &mut writer, code, version).await;
    }
    let (client_id, _assigned) = match handshake::client_id(&core, &connect) {
        Ok(id) => id,
        Err(decision) => {
            let code = handshake::refusal_code(decision, version);
            return refuse(&core, &mut writer, code, version).await;
        }
    };
    // The application's on_connect hook may await (a user-store lookup): it is bounded by the
    // connect timeout too.
    let auth = handshake::authenticate(&core, &listener, &connect, &client_id, remote_addr);
    let decision = match Box::pin(tokio::time::timeout(
        core.config.limits.connect_timeout(),
        auth,
    ))
    .await
    {
        Ok(decision) => decision,
        Err(_) => {
            tracing::warn!(%client_id, ?remote_addr, "authentication did not finish within the connect timeout");
            ConnectDecision::NotAuthorized
        }
    };
    if decision != ConnectDecision::Accept {
        tracing::info!(%client_id, ?remote_addr, ?decision, "connection refused");
        let code = handshake::refusal_code(decision, version);
        return refuse(&core, &mut writer, code, version).await;
    }

    let conn_id = core.next_connection_id();
    let cancel = core.shutdown.child_token();
    let limits = QueueLimits {
        max_inflight: usize::from(core.config.limits.max_inflight_messages),
        max_queued: core.config.limits.max_queued_messages,
        queue_qos0_offline: core.config.mqtt.queue_qos0_messages,
    };
    let opened = core.sessions.open(&client_id, connect.clean_start, limits);
    if let Some(old) = &opened.discarded {
        core.router.remove_session(old);
    }
    let session = opened.session;
    session.attach(conn_id, cancel.clone());

    // CONNACK is written before the writer task starts, so it precedes everything queued.
    let connack = Packet::ConnAck(ConnAck {
        // [MQTT-3.2.2-1] Session Present is 0 with Clean Session 1; [MQTT-3.2.2-2] 1 when a
        // stored session was resumed.
        session_present: opened.present,
        code: 0,
        properties: None,
    });
    let mut out = BytesMut::new();
    let wrote = match codec::encode(&connack, version, &mut out) {
        Ok(()) => writer.write_all(&out).await.is_ok(),
        Err(_) => false,
    };

    // What outlives the handshake is copied out of the CONNECT packet, whose fields are
    // slices of the first read buffer: an idle connection must not pin that buffer.
    let client = Arc::new(ClientInfo {
        client_id: client_id.clone(),
        username: connect.username.as_deref().map(ByteString::from),
        remote_addr,
        protocol: version,
    });
    let keep_alive = connect.keep_alive;
    let mut will = connect.will.take().map(compact_will);
    drop(connect);
    Metrics::inc(&core.metrics.connections_current);
    let reason = if wrote {
        tracing::debug!(%client_id, ?remote_addr, ?version, present = opened.present, "client connected");
        core.hooks.on_connected(&client);
        let failed = Arc::new(AtomicBool::new(false));
        let written = Arc::new(Notify::new());
        let writer_task = tokio::spawn(
            Writer {
                io: writer,
                session: session.clone(),
                conn_id,
                version,
                cancel: cancel.clone(),
                failed: failed.clone(),
                written: written.clone(),
                core: core.clone(),
            }
            .run(),
        );
        let mut handler = Handler {
            core: &core,
            session: &session,
            client: &client,
            version,
            conn_id,
        };
        let keep_alive = (keep_alive > 0)
            // [MQTT-3.1.2-24] close after one and a half times the keep-alive without a packet.
            .then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let signals = Signals {
            cancel: &cancel,
            write_failed: &failed,
            written: &written,
        };
        let reason = read_loop(
            &core,
            &mut handler,
            &mut reader,
            &mut buf,
            version,
            keep_alive,
            signals,
        )
        .await;
        if reason == DisconnectReason::ClientDisconnect {
            // [MQTT-3.14.4-3] DISCONNECT discards the will without publishing it.
            will = None;
        }
        cancel.cancel();
        let _ = Box::pin(tokio::time::timeout(WRITER_GRACE, writer_task)).await;
        reason
    } else {
        DisconnectReason::NetworkError
    };

    finish(&core, &session, conn_id, &client, reason, will);
}

/// A will whose topic and payload own their memory (see `serve`).
fn compact_will(will: LastWill) -> LastWill {
    LastWill {
        topic: ByteString::from(&*will.topic),
        payload: Bytes::copy_from_slice(&will.payload),
        ..will
    }
}

/// The exit path shared by every way a connection ends.
fn finish(
    core: &BrokerCore,
    session: &Arc<Session>,
    conn_id: u64,
    client: &ClientInfo,
    reason: DisconnectReason,
    will: Option<LastWill>,
) {
    Metrics::dec(&core.metrics.connections_current);
    tracing::debug!(client_id = %client.client_id, ?reason, "client disconnected");
    core.hooks.on_disconnect(client, reason);
    // [MQTT-3.1.2-8] the will is published when the connection closes for any reason other
    // than DISCONNECT: network errors, keep-alive timeout, protocol errors, takeover.
    if let Some(will) = will
        && reason != DisconnectReason::Shutdown
    {
        Handler::publish_will(core, client, will);
    }
    if session.detach(conn_id) && session.state.lock().clean {
        // [MQTT-3.1.2-6] a Clean Session ends with the connection.
        core.sessions.remove_if_current(session);
        core.router.remove_session(session);
    }
}

/// Why reading a packet failed.
enum ReadError {
    /// End of stream or I/O error.
    Closed,
    /// Bytes that are not a valid packet.
    Decode(DecodeError),
}

/// Reads until one whole packet is buffered and decodes it.
async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet: usize,
) -> Result<Packet, ReadError> {
    loop {
        match codec::decode(buf, version, max_packet) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Decode(e)),
        }
        reserve(buf);
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(_) => {}
        }
    }
}

/// Reads what the client sent next. With nothing partial buffered, waits for readability
/// before taking a buffer at all.
async fn read_more<R: ReadHalf>(reader: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        reader.ready().await?;
    }
    reserve(buf);
    reader.read_buf(buf).await
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// How the writer task talks back to the reader.
struct Signals<'a> {
    /// Cancelled when the connection must end (takeover, shutdown, write failure).
    cancel: &'a CancellationToken,
    /// Set by the writer when a write failed.
    write_failed: &'a AtomicBool,
    /// Notified by the writer after each batch it wrote.
    written: &'a Notify,
}

/// Reads and handles packets until the connection ends; returns why it ended.
async fn read_loop<R: ReadHalf>(
    core: &BrokerCore,
    handler: &mut Handler<'_>,
    reader: &mut R,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    keep_alive: Option<Duration>,
    signals: Signals<'_>,
) -> DisconnectReason {
    let Signals {
        cancel,
        write_failed,
        written,
    } = signals;
    let max_packet = core.config.limits.max_packet_size as usize;
    let far_future = Duration::from_secs(100 * 365 * 24 * 3600);
    let mut deadline = Instant::now() + keep_alive.unwrap_or(far_future);
    loop {
        // Handle everything already buffered (clients may pipeline packets after CONNECT).
        loop {
            match codec::decode(buf, version, max_packet) {
                Ok(Some(packet)) => {
                    if let Some(k) = keep_alive {
                        deadline = Instant::now() + k;
                    }
                    if let Err(reason) = handler.handle(packet) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Metrics::inc(&core.metrics.protocol_errors);
                    tracing::debug!(client_id = %handler.client.client_id, error = %e, "malformed packet; closing");
                    return DisconnectReason::ProtocolError;
                }
            }
        }
        if buf.is_empty() {
            // Nothing partial is buffered: release the buffer (decoded packets keep what they
            // need) and wait for readability without one, so idle connections hold none.
            *buf = BytesMut::new();
        }
        // Backpressure: while the client does not take its acknowledgements, stop reading.
        let paused = handler.session.control_backlog() > CONTROL_HIGH_WATER;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                return if core.shutdown.is_cancelled() {
                    DisconnectReason::Shutdown
                } else if write_failed.load(Ordering::Relaxed) {
                    DisconnectReason::NetworkError
                } else {
                    DisconnectReason::Takeover
                };
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(client_id = %handler.client.client_id, "keep-alive timeout; closing");
                return DisconnectReason::KeepAliveTimeout;
            }
            _ = written.notified(), if paused => {}
            r = read_more(reader, buf), if !paused => match r {
                Ok(0) | Err(_) => return DisconnectReason::NetworkError,
                Ok(n) => Metrics::add(&core.metrics.bytes_received, n as u64),
            },
        }
    }
}
