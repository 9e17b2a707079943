//! The life of an established connection, in one task: read and handle packets, write what the
//! session queues for the client, enforce the keep-alive, stop on takeover or shutdown.
//!
//! One task (not a reader and a writer task) keeps the per-connection footprint small: an idle
//! connection is this future waiting on readability, its session's `Notify`, a timer and a
//! cancellation token, and holds neither a read nor a write buffer.

use std::time::Duration;

use bytes::BytesMut;
use std::future::{Future, poll_fn};
use std::io::ErrorKind;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use std::sync::Arc;

use super::backpressure::PauseBudget;
use super::finish;
use super::handler::{Close, Handler};
use super::outbound::encode_batch;
use super::v5::{InboundV5, OutboundV5};
use crate::broker::BrokerCore;
use bytestring::ByteString;

use crate::codec::{self, DecodeError, Disconnect, LastWill, Packet, Properties, ProtocolVersion};
use crate::hooks::{ClientInfo, DisconnectReason};
use crate::metrics::Metrics;
use crate::session::{Outbound, Session};
use crate::transport::Transport;

/// Free space kept in the read buffer before each read.
pub(crate) const READ_CHUNK: usize = 4096;
/// Control packets (acknowledgements) allowed to wait for the socket before reading stops: a
/// client that publishes but never reads its socket must not grow our memory.
const CONTROL_HIGH_WATER: usize = 1024;
/// Most items taken from the session per batch, so one busy connection neither holds its
/// session lock long nor builds huge buffers.
const MAX_BATCH_ITEMS: usize = 256;
/// How long the last write may take once the connection is closing.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// An established connection: everything it keeps for its whole life.
pub(crate) struct Driver<T> {
    pub core: Arc<BrokerCore>,
    pub session: Arc<Session>,
    pub client: Arc<ClientInfo>,
    pub conn_id: u64,
    /// The will, published if the connection ends without DISCONNECT.
    pub will: Option<Box<LastWill>>,
    pub stream: T,
    /// Bytes read and not yet decoded (a partial packet); empty and unallocated when idle.
    pub rbuf: BytesMut,
    pub version: ProtocolVersion,
    /// 1.5 × the client's keep-alive, `None` when it is 0.
    pub keep_alive: Option<Duration>,
    /// MQTT 5 reading state (topic aliases, re-authentication); `None` before 5.0.
    pub inbound: Option<Box<InboundV5>>,
    /// MQTT 5 writing state (topic aliases, the client's maximum packet size).
    pub outbound: Option<Box<OutboundV5>>,
    /// The ACL of the listener this client came through, if any.
    pub acl: Option<Arc<crate::auth::AclSlot>>,
}

impl<T: Transport> Driver<T> {
    /// Runs until the connection ends, then takes the exit path (will, session detach).
    pub async fn run(mut self) {
        let reason = self.serve().await.reason;
        let will = if reason == DisconnectReason::ClientDisconnect {
            // [MQTT-3.14.4-3] DISCONNECT discards the will without publishing it.
            None
        } else {
            self.will.take()
        };
        finish(
            &self.core,
            &self.session,
            self.conn_id,
            &self.client,
            reason,
            will,
        );
    }

    /// Reads, handles and writes until the connection ends; returns why.
    async fn serve(&mut self) -> Close {
        let session = &*self.session;
        let conn_id = self.conn_id;
        let core = &*self.core;
        let mut handler = Handler {
            core,
            session: &self.session,
            client: &self.client,
            version: self.version,
            conn_id,
            congested: None,
            v5: self.inbound.take(),
            rate: super::rate::RateLimiter::new(
                core.config.limits.publish_rate_messages,
                core.config.limits.publish_rate_bytes,
            ),
            throttle: None,
            acl: self.acl.as_deref(),
        };
        let mut outbound = self.outbound.take();
        // While set, reading is paused until a congested subscriber drains (boxed: rare, and
        // an idle connection should not carry its state).
        // Its output: whether a congested subscriber drained (see `PauseBudget::end`).
        let mut pause: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
        // How much more this connection may be paused for congested subscribers.
        let mut budget = PauseBudget::new(Instant::now());
        let max_packet = core.config.limits.max_packet_size as usize;
        let mut wbuf = BytesMut::new();
        let mut wpos = 0usize;
        let mut items: Vec<Outbound> = Vec::new();
        // The keep-alive timer is armed once and only re-armed when it fires early, rather than
        // reset on every packet: `last_seen` moves, the timer catches up lazily.
        let mut last_seen = Instant::now();
        let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let timer = tokio::time::sleep_until(self.keep_alive.map_or(far_future, |k| last_seen + k));
        tokio::pin!(timer);

        let reason = loop {
            // Armed before the checks below, so a takeover or shutdown that wakes the session's
            // waiters between the check and the select is not missed.
            let notified = session.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if core.shutdown.is_cancelled() {
                // 0x8B Server shutting down.
                break Close {
                    reason: DisconnectReason::Shutdown,
                    code: 0x8B,
                };
            }
            // Handle everything already buffered (clients may pipeline packets).
            let mut handled = false;
            let mut ended = None;
            while pause.is_none() {
                match codec::decode(&mut self.rbuf, self.version, max_packet) {
                    Ok(Some(packet)) => {
                        handled = true;
                        if let Err(reason) = handler.handle(packet) {
                            ended = Some(reason);
                            break;
                        }
                        if handler.throttle.is_some() {
                            // Over the publish rate: leave the rest of the buffer (below).
                            break;
                        }
                        if let Some(congested) = handler.congested.take() {
                            // Backpressure towards the publisher: leave the rest of the buffer
                            // until the subscriber it congested catches up, within this
                            // publisher's pause budget. Past the budget, carry on: the
                            // subscriber's overflow is dropped, so one slow subscriber cannot
                            // stall publishers (nor make this buffer grow while they wait).
                            if let Some(limit) = budget.begin(Instant::now()) {
                                pause = Some(Box::pin(congested.wait_drained(limit)));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        Metrics::inc(&core.metrics.protocol_errors);
                        tracing::debug!(client_id = %handler.client.client_id, error = %e, "malformed packet; closing");
                        // [MQTT-4.13.1-1] a malformed packet or protocol error closes the
                        // connection, after a DISCONNECT with its reason code in MQTT 5.
                        ended = Some(Close {
                            reason: DisconnectReason::ProtocolError,
                            code: disconnect_code(&e),
                        });
                        break;
                    }
                }
            }
            if let Some(reason) = ended {
                break reason;
            }
            if handled {
                // [MQTT-3.1.2-24] any control packet keeps the connection alive.
                last_seen = Instant::now();
            }
            if pause.is_none()
                && let Some(wait) = handler.throttle.take()
            {
                // Over the publish rate: stop reading until the debt is repaid.
                let sleep = tokio::time::sleep(wait);
                pause = Some(Box::pin(async move {
                    sleep.await;
                    false
                }));
            }
            if self.rbuf.is_empty() {
                // Nothing partial is buffered: release the buffer (decoded packets keep what
                // they need) and wait for readability without one.
                self.rbuf = BytesMut::new();
            }

            // Refill the write buffer from the session once the previous batch is out.
            if wpos == wbuf.len() {
                wpos = 0;
                wbuf.clear();
                if !session.take_outbound(conn_id, &mut items, MAX_BATCH_ITEMS) {
                    // The session is served by another connection now.
                    break TAKEOVER;
                }
                if items.is_empty() {
                    // Going idle: give the buffers back rather than keep them per connection.
                    wbuf = BytesMut::new();
                    items = Vec::new();
                } else {
                    let published = encode_batch(
                        &mut items,
                        self.version,
                        &mut wbuf,
                        session,
                        outbound.as_deref_mut(),
                    );
                    Metrics::add(&core.metrics.messages_sent, published);
                    if wbuf.is_empty() {
                        // Everything taken was discarded (too large for the client, which
                        // freed in-flight room): take again at once rather than wait.
                        continue;
                    }
                }
            }
            let writing = wpos < wbuf.len();
            if writing && !session.serves(conn_id) {
                break TAKEOVER;
            }
            // Backpressure: while the client does not take what we write, stop reading once its
            // acknowledgements pile up.
            let paused =
                pause.is_some() || (writing && session.control_backlog() > CONTROL_HIGH_WATER);

            tokio::select! {
                biased;
                _ = &mut timer, if self.keep_alive.is_some() => {
                    let due = self.keep_alive.map_or(far_future, |k| last_seen + k);
                    if Instant::now() >= due {
                        tracing::debug!(client_id = %handler.client.client_id, "keep-alive timeout; closing");
                        // 0x8D Keep Alive timeout.
                        break Close { reason: DisconnectReason::KeepAliveTimeout, code: 0x8D };
                    }
                    timer.as_mut().reset(due);
                }
                r = poll_fn(|cx| self.stream.poll_write_ready(cx)), if writing => {
                    if r.is_err() {
                        break NETWORK_ERROR;
                    }
                    match self.stream.try_write(&wbuf[wpos..]) {
                        Ok(0) => break NETWORK_ERROR,
                        Ok(n) => {
                            wpos += n;
                            Metrics::add(&core.metrics.bytes_sent, n as u64);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => break NETWORK_ERROR,
                    }
                }
                // New work, a takeover or shutdown: the checks at the top of the loop tell.
                _ = &mut notified => {}
                drained = poll_fn(|cx| match pause.as_mut() {
                    Some(p) => p.as_mut().poll(cx),
                    None => Poll::Pending,
                }), if pause.is_some() => {
                    pause = None;
                    budget.end(Instant::now(), drained);
                }
                r = poll_fn(|cx| self.stream.poll_read_ready(cx)), if !paused => {
                    if r.is_err() {
                        break NETWORK_ERROR;
                    }
                    // Only now, with bytes waiting, does the connection take a read buffer.
                    reserve(&mut self.rbuf);
                    match self.stream.try_read_buf(&mut self.rbuf) {
                        Ok(0) => break NETWORK_ERROR,
                        Ok(n) => Metrics::add(&core.metrics.bytes_received, n as u64),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => break NETWORK_ERROR,
                    }
                }
            }
        };

        if reason.reason == DisconnectReason::Takeover {
            // A wake-up for new work may have reached this connection rather than the one
            // that took over: pass it on.
            session.notify.notify_one();
        }
        if matches!(
            reason.reason,
            DisconnectReason::ProtocolError
                | DisconnectReason::KeepAliveTimeout
                | DisconnectReason::Shutdown
        ) {
            // Send what is already encoded or queued for this connection (acknowledgements of
            // what it sent before closing), bounded in time.
            if session.take_outbound(conn_id, &mut items, MAX_BATCH_ITEMS) && !items.is_empty() {
                encode_batch(
                    &mut items,
                    self.version,
                    &mut wbuf,
                    session,
                    outbound.as_deref_mut(),
                );
            }
        }
        let max_packet = outbound.as_ref().map_or(u32::MAX, |o| o.max_packet) as usize;
        // Boxed: the closing writes are rare, and an idle connection's future should not carry
        // their state.
        Box::pin(close(
            &mut self.stream,
            self.version,
            reason,
            wbuf,
            wpos,
            max_packet,
        ))
        .await;
        reason
    }
}

/// The last writes of a connection the server ends: what remains of the packet being written
/// (or, after a protocol error, keep-alive timeout or shutdown, of the whole batch), the MQTT 5
/// DISCONNECT, and a lingering close.
async fn close<T: Transport>(
    stream: &mut T,
    version: ProtocolVersion,
    reason: Close,
    mut wbuf: BytesMut,
    wpos: usize,
    max_packet: usize,
) {
    let mut closing = BytesMut::new();
    if version.is_v5() && reason.code >= 0x80 {
        // [MQTT-4.13.1-1] the server sends DISCONNECT with the reason before it closes
        // ([MQTT-3.14.4-1]: and nothing after it), with a Reason String (which also makes the
        // Property Length explicit, which some clients need) unless it would exceed the
        // client's Maximum Packet Size ([MQTT-3.14.2-3]).
        let with_text = Packet::Disconnect(Disconnect {
            reason: reason.code,
            properties: Some(Box::new(Properties {
                reason_string: Some(ByteString::from_static(reason_text(reason.code))),
                ..Properties::default()
            })),
        });
        let disconnect = if codec::encoded_len(&with_text, version) <= max_packet {
            with_text
        } else {
            Packet::Disconnect(Disconnect {
                reason: reason.code,
                properties: None,
            })
        };
        let _ = codec::encode(&disconnect, version, &mut closing);
    }
    if wpos < wbuf.len() || !closing.is_empty() {
        if !matches!(
            reason.reason,
            DisconnectReason::ProtocolError
                | DisconnectReason::KeepAliveTimeout
                | DisconnectReason::Shutdown
        ) {
            // Only finish the packet being written (a takeover): nothing more of the old
            // connection's queue.
            wbuf.truncate(packet_end(&wbuf, wpos));
        }
        wbuf.extend_from_slice(&closing);
        let rest = wbuf.get(wpos..).unwrap_or_default();
        let _ = tokio::time::timeout(FINAL_FLUSH, stream.write_all(rest)).await;
    }
    let _ = tokio::time::timeout(FINAL_FLUSH, stream.shutdown()).await;
    if !closing.is_empty() {
        // A lingering close: read (and discard) what the client still sends until it closes
        // too, briefly. Closing a socket with unread input resets the connection, and a reset
        // can destroy the DISCONNECT before the client has read it.
        let mut scratch = [0u8; 1024];
        let _ = tokio::time::timeout(FINAL_FLUSH, async {
            while matches!(stream.read(&mut scratch).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// The DISCONNECT reason code for a packet that failed to decode on an established connection.
///
/// A CONNECT refused for its protocol name or level is still a second CONNECT: a Protocol
/// Error, 0x82 ([MQTT-3.1.0-2]). [`DecodeError::reason_code`] gives 0x84 Unsupported Protocol
/// Version for it, a CONNACK-only code that DISCONNECT must not carry ([MQTT-3.14.2-1]).
fn disconnect_code(e: &DecodeError) -> u8 {
    match e {
        DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName => 0x82,
        _ => e.reason_code(),
    }
}

/// The Reason String of a server DISCONNECT with reason `code` (MQTT 5.0 table 3-10).
fn reason_text(code: u8) -> &'static str {
    match code {
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x87 => "not authorized",
        0x8B => "server shutting down",
        0x8D => "keep alive timeout",
        0x8E => "session taken over",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        _ => "disconnected by the server",
    }
}

/// A takeover: 0x8E Session taken over ([MQTT-3.1.4-3]).
const TAKEOVER: Close = Close {
    reason: DisconnectReason::Takeover,
    code: 0x8E,
};
/// The connection failed: nothing can be sent any more.
const NETWORK_ERROR: Close = Close {
    reason: DisconnectReason::NetworkError,
    code: 0,
};

/// The end of the packet that byte `pos` of `buf` belongs to (`pos` itself when it starts a
/// packet), so that a connection cut short still ends on a packet boundary.
fn packet_end(buf: &[u8], pos: usize) -> usize {
    let mut at = 0usize;
    while at < pos {
        let Some(len) = codec::frame_len(buf.get(at..).unwrap_or_default()) else {
            return buf.len();
        };
        at += len;
    }
    at.min(buf.len())
}

/// Makes room for the next read.
pub(crate) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}
