//! One client connection: the CONNECT handshake (here and in `handshake`), the established
//! connection's loop (`driver`: reading, writing, keep-alive, all in one task), what each
//! packet does (`handler`), and the exit path (will message, session detach).
//!
//! The connection never knows what transport it runs on: it takes any [`Transport`].

mod driver;
mod handler;
mod handshake;
mod outbound;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::broker::BrokerCore;
use crate::codec::{self, ConnAck, Connect, DecodeError, LastWill, Packet, ProtocolVersion};
use crate::hooks::{ClientInfo, ConnectDecision, DisconnectReason};
use crate::metrics::Metrics;
use crate::session::{QueueLimits, Session};
use crate::transport::{ListenerContext, Transport};
use driver::{Driver, reserve};
use handler::Handler;

/// Serves one accepted connection until it ends.
pub(crate) async fn run<T: Transport>(
    core: Arc<BrokerCore>,
    listener: Arc<ListenerContext>,
    stream: T,
    remote_addr: Option<SocketAddr>,
) {
    // The handshake's state (the CONNECT packet, authentication, refusals) is large and
    // short-lived: boxed, so the future an established connection keeps for its whole life
    // carries only the driver's state. This is most of an idle connection's memory.
    if let Some(driver) = Box::pin(establish(core, listener, stream, remote_addr)).await {
        driver.run().await;
    }
}

/// Reads the CONNECT packet and runs the handshake; returns the established connection, or
/// `None` once a refused or failed connection has been answered and closed.
async fn establish<T: Transport>(
    core: Arc<BrokerCore>,
    listener: Arc<ListenerContext>,
    mut stream: T,
    remote_addr: Option<SocketAddr>,
) -> Option<Driver<T>> {
    let max_packet = core.config.limits.max_packet_size as usize;
    let mut buf = BytesMut::new();

    // [MQTT-3.1.0-1] the first packet must be CONNECT, and it must come within the connect
    // timeout (a socket that never sends one must not hold resources: slowloris).
    let deadline = Instant::now() + core.config.limits.connect_timeout();
    let first = tokio::select! {
        biased;
        _ = core.shutdown.cancelled() => return None,
        // Boxed, like every other short-lived await of the handshake: an established
        // connection's task then does not carry their state for its whole life.
        r = Box::pin(tokio::time::timeout_at(deadline, read_packet(&mut stream, &mut buf, ProtocolVersion::V3_1_1, max_packet))) => r,
    };
    let connect = match first {
        Err(_elapsed) => {
            tracing::debug!(
                ?remote_addr,
                "no CONNECT within the connect timeout; closing"
            );
            return None;
        }
        Ok(Err(ReadError::Closed)) => return None,
        Ok(Err(ReadError::Decode(e))) => {
            Metrics::inc(&core.metrics.protocol_errors);
            tracing::debug!(?remote_addr, error = %e, "bad CONNECT; closing");
            if let DecodeError::UnsupportedProtocolLevel(level) = e {
                // [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close.
                let version = (level == 5).then_some(ProtocolVersion::V5);
                let code = handshake::unsupported_version_code(version);
                Box::pin(send_refusal(&mut stream, code, ProtocolVersion::V3_1_1)).await;
            }
            return None;
        }
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(other)) => {
            Metrics::inc(&core.metrics.protocol_errors);
            tracing::debug!(
                ?remote_addr,
                packet = other.name(),
                "[MQTT-3.1.0-1] first packet is not CONNECT; closing"
            );
            return None;
        }
    };
    serve(core, listener, stream, buf, connect, remote_addr).await
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

async fn serve<T: Transport>(
    core: Arc<BrokerCore>,
    listener: Arc<ListenerContext>,
    mut stream: T,
    buf: BytesMut,
    mut connect: Box<Connect>,
    remote_addr: Option<SocketAddr>,
) -> Option<Driver<T>> {
    let version = connect.protocol;
    if version.is_v5() {
        // The codec speaks MQTT 5, but the session semantics (reason codes, properties,
        // expiry, aliases, flow control) arrive with issue 4: refuse cleanly until then
        // rather than half-serve a 5.0 client. 0x84 = Unsupported Protocol Version.
        let code = handshake::unsupported_version_code(Some(version));
        refuse(&core, &mut stream, code, version).await;
        return None;
    }
    let (client_id, _assigned) = match handshake::client_id(&core, &connect) {
        Ok(id) => id,
        Err(decision) => {
            let code = handshake::refusal_code(decision, version);
            refuse(&core, &mut stream, code, version).await;
            return None;
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
        refuse(&core, &mut stream, code, version).await;
        return None;
    }

    let conn_id = core.next_connection_id();
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
    session.attach(conn_id);

    // CONNACK is written before the driver starts, so it precedes everything queued.
    let connack = Packet::ConnAck(ConnAck {
        // [MQTT-3.2.2-1] Session Present is 0 with Clean Session 1; [MQTT-3.2.2-2] 1 when a
        // stored session was resumed.
        session_present: opened.present,
        code: 0,
        properties: None,
    });
    let mut out = BytesMut::new();
    let wrote = match codec::encode(&connack, version, &mut out) {
        Ok(()) => stream.write_all(&out).await.is_ok(),
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
    let will = connect.will.take().map(compact_will);
    drop(connect);
    Metrics::inc(&core.metrics.connections_current);
    if !wrote {
        finish(
            &core,
            &session,
            conn_id,
            &client,
            DisconnectReason::NetworkError,
            will,
        );
        return None;
    }
    tracing::debug!(%client_id, ?remote_addr, ?version, present = opened.present, "client connected");
    core.hooks.on_connected(&client);
    Some(Driver {
        core,
        session,
        client,
        conn_id,
        will,
        stream,
        rbuf: buf,
        version,
        // [MQTT-3.1.2-24] close after one and a half times the keep-alive without a packet.
        keep_alive: (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500)),
    })
}

/// A will whose topic and payload own their memory (see `serve`).
fn compact_will(will: LastWill) -> Box<LastWill> {
    Box::new(LastWill {
        topic: ByteString::from(&*will.topic),
        payload: Bytes::copy_from_slice(&will.payload),
        ..will
    })
}

/// The exit path shared by every way a connection ends.
pub(super) fn finish(
    core: &BrokerCore,
    session: &Arc<Session>,
    conn_id: u64,
    client: &ClientInfo,
    reason: DisconnectReason,
    will: Option<Box<LastWill>>,
) {
    Metrics::dec(&core.metrics.connections_current);
    tracing::debug!(client_id = %client.client_id, ?reason, "client disconnected");
    core.hooks.on_disconnect(client, reason);
    // [MQTT-3.1.2-8] the will is published when the connection closes for any reason other
    // than DISCONNECT: network errors, keep-alive timeout, protocol errors, takeover.
    if let Some(will) = will
        && reason != DisconnectReason::Shutdown
    {
        Handler::publish_will(core, client, *will);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    /// Every idle connection keeps this future (inside its task) for its whole life; it is the
    /// largest part of per-connection memory, so a change that grows it should be deliberate.
    #[tokio::test]
    async fn an_established_connection_future_stays_small() {
        let broker = crate::Broker::new(crate::Config::default());
        let core = broker.core_for_tests();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local_addr = listener.local_addr().expect("addr");
        let stream = tokio::net::TcpStream::connect(local_addr)
            .await
            .expect("connect");
        let context = Arc::new(crate::transport::ListenerContext {
            local_addr,
            allow_anonymous: true,
        });
        let future = super::run(core, context, stream, None);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 1400,
            "connection future grew to {size} bytes (was 1184)"
        );
    }
}
