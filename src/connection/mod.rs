//! One client connection: the CONNECT handshake (here and in `handshake`), the established
//! connection's loop (`driver`: reading, writing, keep-alive, all in one task), what each
//! packet does (`handler`), and the exit path (will message, session detach).
//!
//! The connection never knows what transport it runs on: it takes any [`Transport`].

mod backpressure;
mod driver;
mod expiry;
mod handler;
mod handshake;
mod outbound;
mod rate;
mod v5;

pub(crate) use expiry::spawn_timer;
pub(crate) use handler::Handler;

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
use crate::session::{NEVER_EXPIRES, PendingWill, QueueLimits, Session};
use crate::transport::{ListenerContext, Transport};
use driver::{Driver, reserve};
use v5::{InboundV5, OutboundV5};

/// Serves one accepted connection until it ends.
pub(crate) async fn run<T: Transport>(
    core: Arc<BrokerCore>,
    listener: Arc<ListenerContext>,
    stream: T,
    remote_addr: Option<SocketAddr>,
    tls_user: Option<String>,
) {
    // The handshake's state (the CONNECT packet, authentication, refusals) is large and
    // short-lived: boxed, so the future an established connection keeps for its whole life
    // carries only the driver's state. This is most of an idle connection's memory.
    if let Some(driver) = Box::pin(establish(core, listener, stream, remote_addr, tls_user)).await {
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
    tls_user: Option<String>,
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
    serve(core, listener, stream, buf, connect, remote_addr, tls_user).await
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
    mut buf: BytesMut,
    mut connect: Box<Connect>,
    remote_addr: Option<SocketAddr>,
    tls_user: Option<String>,
) -> Option<Driver<T>> {
    let version = connect.protocol;
    let mqtt = &core.config.mqtt;
    let props = connect.properties.take().unwrap_or_default();
    let (client_id, assigned) = match handshake::client_id(&core, &connect) {
        Ok(id) => id,
        Err(decision) => {
            let code = handshake::refusal_code(decision, version);
            refuse(&core, &mut stream, code, version).await;
            return None;
        }
    };
    if let Some(code) = handshake::check_will(&core, &connect) {
        refuse(&core, &mut stream, code, version).await;
        return None;
    }
    // An address banned for repeated failed logins is refused before any credential check:
    // 0x8A Banned (MQTT 5), 0x05 Not authorized (3.1.1).
    if let Some(addr) = remote_addr
        && core.login_failures.is_banned(addr.ip())
    {
        tracing::debug!(%client_id, %addr, "connection from a banned address refused");
        let code = if version.is_v5() { 0x8A } else { 0x05 };
        refuse(&core, &mut stream, code, version).await;
        return None;
    }
    let Some((keep_alive, server_keep_alive)) = handshake::keep_alive(&core, &connect) else {
        tracing::info!(%client_id, keep_alive = connect.keep_alive, "keep-alive above max_keepalive; refused");
        refuse(&core, &mut stream, 0x02, version).await;
        return None;
    };
    let expiry = handshake::session_expiry(&core, &connect, &props);

    // Enhanced authentication (MQTT 5.0 section 4.12) when the CONNECT names a method.
    let mut auth_result = None;
    if let Some(method) = props.authentication_method.clone() {
        let exchange = handshake::enhanced_auth(
            &core,
            &mut stream,
            &mut buf,
            &connect,
            &client_id,
            &method,
            props.authentication_data.clone(),
        );
        match Box::pin(exchange).await {
            Ok(done) => auth_result = Some((method, done)),
            Err(Some(code)) => {
                login_failed(&core, &client_id, remote_addr).await;
                refuse(&core, &mut stream, code, version).await;
                return None;
            }
            Err(None) => return None,
        }
    }
    // A listener with `use_identity_as_username` takes the user name from the verified client
    // certificate (Mosquitto's option of that name); without one the client is refused.
    if listener.use_identity_as_username && tls_user.is_none() {
        tracing::info!(%client_id, ?remote_addr, "no usable identity in the client certificate");
        let code = handshake::refusal_code(ConnectDecision::NotAuthorized, version);
        refuse(&core, &mut stream, code, version).await;
        return None;
    }
    // The identity a certificate or enhanced authentication established, if any; otherwise
    // the user name the client sent (checked against the password store below).
    let identity: Option<String> = match (&tls_user, &auth_result) {
        (Some(user), _) => Some(user.clone()),
        (None, Some((_, done))) => done.username.clone(),
        (None, None) => None,
    };
    let username = match &identity {
        Some(user) => Some(ByteString::from(user.as_str())),
        None => connect.username.as_deref().map(ByteString::from),
    };
    // The application's on_connect hook may await (a user-store lookup): it is bounded by the
    // connect timeout too.
    let auth = handshake::authenticate(
        &core,
        &listener,
        &connect,
        &client_id,
        remote_addr,
        auth_result.is_some() || tls_user.is_some(),
        identity.as_deref(),
    );
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
        if matches!(
            decision,
            ConnectDecision::BadCredentials | ConnectDecision::NotAuthorized
        ) {
            login_failed(&core, &client_id, remote_addr).await;
        } else {
            tracing::info!(%client_id, ?remote_addr, ?decision, "connection refused");
        }
        let code = handshake::refusal_code(decision, version);
        refuse(&core, &mut stream, code, version).await;
        return None;
    }
    if let Some(addr) = remote_addr {
        core.login_failures.record_success(addr.ip());
    }

    let conn_id = core.next_connection_id();
    let limits = QueueLimits {
        max_inflight: usize::from(core.config.limits.max_inflight_messages),
        max_queued: core.config.limits.max_queued_messages,
        queue_qos0_offline: mqtt.queue_qos0_messages,
    };
    let opened = core
        .sessions
        .open(&client_id, connect.clean_start, expiry, limits);
    if let Some(old) = &opened.discarded {
        // The old session ends here: a will still waiting for its delay goes out now
        // (MQTT 5.0 section 3.1.3.2.2).
        if let Some(pending) = old.take_pending_will() {
            Handler::publish_will(&core, &pending.client, old, *pending.will);
        }
        core.router.remove_session(old);
    }
    let session = opened.session;
    session.attach(
        conn_id,
        props.receive_maximum.unwrap_or(u16::MAX),
        username.clone(),
        listener.auth.acl.clone(),
    );
    if opened.present {
        // The session may have been queued for another user (or under other rules): only what
        // this client may read is delivered.
        let dropped = session.refilter();
        if dropped > 0 {
            Metrics::add(&core.metrics.acl_denied, dropped as u64);
            tracing::debug!(%client_id, dropped, "queued messages this client may not read dropped");
        }
    }

    // CONNACK is written before the driver starts, so it precedes everything queued.
    let connack_props = version.is_v5().then(|| {
        handshake::connack_properties(
            &core,
            &props,
            assigned.then_some(&client_id),
            expiry,
            server_keep_alive,
            auth_result.as_ref().map(|(m, done)| (m, done.data.clone())),
            &client_id,
        )
    });
    let mut connack = Packet::ConnAck(ConnAck {
        // [MQTT-3.2.2-1] Session Present is 0 with Clean Session 1; [MQTT-3.2.2-2] 1 when a
        // stored session was resumed.
        session_present: opened.present,
        code: 0,
        properties: connack_props,
    });
    if let Some(max) = props.maximum_packet_size
        && codec::encoded_len(&connack, version) > max as usize
        && let Packet::ConnAck(c) = &mut connack
        && let Some(p) = c.properties.as_mut()
    {
        // [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet Size: keep only what
        // the client cannot do without (its assigned id, the keep-alive and expiry it must use,
        // the authentication result), dropping the capability announcements.
        **p = codec::Properties {
            assigned_client_identifier: p.assigned_client_identifier.take(),
            server_keep_alive: p.server_keep_alive,
            session_expiry_interval: p.session_expiry_interval,
            authentication_method: p.authentication_method.take(),
            authentication_data: p.authentication_data.take(),
            ..codec::Properties::default()
        };
    }
    let mut out = BytesMut::new();
    let wrote = match codec::encode(&connack, version, &mut out) {
        Ok(()) => stream.write_all(&out).await.is_ok(),
        Err(_) => false,
    };

    // What outlives the handshake is copied out of the CONNECT packet, whose fields are
    // slices of the first read buffer: an idle connection must not pin that buffer.
    let client = Arc::new(ClientInfo {
        client_id: client_id.clone(),
        username,
        remote_addr,
        protocol: version,
    });
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
    let (inbound, outbound) = if version.is_v5() {
        let inbound = InboundV5 {
            alias_max: mqtt.topic_alias_maximum,
            expiry_was_zero: expiry == 0 && props.session_expiry_interval.unwrap_or(0) == 0,
            auth_method: auth_result.map(|(method, _)| ByteString::from(&*method)),
            ..InboundV5::default()
        };
        let alias_max = if mqtt.assign_topic_aliases {
            props.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        };
        let outbound = OutboundV5::new(alias_max, props.maximum_packet_size.unwrap_or(u32::MAX));
        (Some(Box::new(inbound)), Some(Box::new(outbound)))
    } else {
        (None, None)
    };
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
        inbound,
        outbound,
        acl: listener.auth.acl.clone(),
    })
}

/// A failed login: logged with the client's address, counted towards a ban, and answered
/// only after `auth.failed_login_delay_ms` so that guessing passwords is slow.
async fn login_failed(core: &BrokerCore, client_id: &str, remote_addr: Option<SocketAddr>) {
    tracing::warn!(%client_id, ?remote_addr, "authentication failed");
    if let Some(addr) = remote_addr
        && core.login_failures.record_failure(addr.ip())
    {
        tracing::warn!(ip = %addr.ip(), secs = core.config.auth.ban_secs, "too many failed logins: address banned");
    }
    let delay = Duration::from_millis(core.config.auth.failed_login_delay_ms);
    if !delay.is_zero() {
        Box::pin(tokio::time::sleep(delay)).await;
    }
}

/// A will whose topic and payload own their memory (see `serve`).
fn compact_will(will: LastWill) -> Box<LastWill> {
    Box::new(LastWill {
        topic: ByteString::from(&*will.topic),
        payload: Bytes::copy_from_slice(&will.payload),
        ..will
    })
}

/// The exit path shared by every way a connection ends: hooks, will (now or after its delay),
/// shared-subscription redelivery, and the session's end or expiry timer.
pub(super) fn finish(
    core: &Arc<BrokerCore>,
    session: &Arc<Session>,
    conn_id: u64,
    client: &Arc<ClientInfo>,
    reason: DisconnectReason,
    will: Option<Box<LastWill>>,
) {
    Metrics::dec(&core.metrics.connections_current);
    tracing::debug!(client_id = %client.client_id, ?reason, "client disconnected");
    core.hooks.on_disconnect(client, reason);
    // Whether this connection still served the session (false after a takeover).
    let detached = session.detach(conn_id);
    let (expiry, discarded) = {
        let st = session.state.lock();
        (st.expiry_interval, st.discarded)
    };
    if detached && reason != DisconnectReason::Shutdown {
        // Section 4.8.2: what a share-group member leaves unacknowledged goes to another member.
        let mut journal = core.journal();
        core.router.redeliver_shared(
            session,
            &client.client_id,
            false,
            &core.metrics,
            &mut journal,
        );
        core.submit(journal);
    }
    let mut will_delay = None;
    // [MQTT-3.1.2-8] the will is published when the connection closes for any reason other
    // than DISCONNECT: network errors, keep-alive timeout, protocol errors, takeover.
    if let Some(will) = will
        && reason != DisconnectReason::Shutdown
    {
        let delay = will
            .properties
            .as_ref()
            .and_then(|p| p.will_delay_interval)
            .unwrap_or(0);
        if delay == 0 || (detached && expiry == 0) || (!detached && discarded) {
            Handler::publish_will(core, client, session, *will);
        } else if detached {
            // [MQTT-3.1.3-9] published when the delay runs out or the session ends, unless
            // the client reconnects first.
            let delay = delay.min(expiry);
            let due = crate::store::unix_millis().saturating_add(u64::from(delay) * 1000);
            session.set_pending_will(
                PendingWill {
                    will,
                    client: client.clone(),
                },
                due,
            );
            will_delay = Some(delay);
        }
        // Otherwise a new connection has resumed the session: no will ([MQTT-3.1.3-9]).
    }
    if !detached {
        return;
    }
    if expiry == 0 {
        // [MQTT-3.1.2-6] (3.1.1) / [MQTT-4.1.0-2] (5.0): the session ends with the
        // connection.
        core.sessions.remove_if_current(session);
        core.router.remove_session(session);
    } else if expiry != NEVER_EXPIRES || will_delay.is_some() {
        expiry::spawn_timer(core.clone(), session.clone(), will_delay, expiry);
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
        if buf.is_empty() {
            // Nothing buffered yet: wait for the first bytes in a small buffer inside this
            // (boxed, short-lived) future, so that a socket that never sends — half-open, a
            // connection flood — holds no 4 KiB heap read buffer while it waits. A CONNECT
            // usually fits in it whole.
            let mut first = [0u8; FIRST_READ];
            match reader.read(&mut first).await {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(n) => buf.extend_from_slice(first.get(..n).unwrap_or_default()),
            }
            continue;
        }
        reserve(buf);
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(_) => {}
        }
    }
}

/// Size of the first read of a connection (see `read_packet`).
const FIRST_READ: usize = 256;

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
            auth: crate::broker::ListenerAuth {
                credentials: std::sync::Arc::default(),
                password_file: false,
                acl: None,
            },
            allow_anonymous: true,
            use_identity_as_username: false,
        });
        let future = super::run(core, context, stream, None, None);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 1400,
            "connection future grew to {size} bytes (was 1184)"
        );
    }
}
