//! The write half of a connection: drains the session's outbound queue into one buffer and
//! writes it with one syscall per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerCore;
use crate::codec::{self, Packet, ProtocolVersion, Publish};
use crate::metrics::Metrics;
use crate::session::{Outbound, Session};

/// Most items taken from the session per batch, so that one busy connection does not hold its
/// session lock long or build huge buffers.
const MAX_BATCH_ITEMS: usize = 256;
/// A write buffer larger than this is released after its batch instead of being kept.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;
/// How long the final flush of control packets may take once the connection is closing.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Everything the writer needs, owned by its task.
pub(crate) struct Writer<W> {
    pub io: W,
    pub session: Arc<Session>,
    pub conn_id: u64,
    pub version: ProtocolVersion,
    pub cancel: CancellationToken,
    /// Set when a write fails, so the reader reports a network error rather than a takeover.
    pub failed: Arc<AtomicBool>,
    /// Notified after each batch is written (the reader may be waiting for the backlog to
    /// shrink).
    pub written: Arc<Notify>,
    pub core: Arc<BrokerCore>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Runs until the connection is cancelled, the session moves to another connection, or a
    /// write fails.
    pub async fn run(mut self) {
        let mut items = Vec::new();
        let mut buf = BytesMut::new();
        loop {
            if !self
                .session
                .take_outbound(self.conn_id, &mut items, MAX_BATCH_ITEMS)
            {
                break;
            }
            if items.is_empty() {
                // Going idle: give the write buffer back rather than keep it per connection.
                buf = BytesMut::new();
                items = Vec::new();
                tokio::select! {
                    biased;
                    _ = self.cancel.cancelled() => {
                        self.final_flush(&mut items, &mut buf).await;
                        break;
                    }
                    _ = self.session.notify.notified() => continue,
                }
            }
            self.encode(&mut items, &mut buf);
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                r = self.io.write_all(&buf) => r,
            };
            if result.is_err() {
                self.failed.store(true, Ordering::Relaxed);
                self.cancel.cancel();
                break;
            }
            Metrics::add(&self.metrics().bytes_sent, buf.len() as u64);
            self.written.notify_one();
            if buf.capacity() > KEEP_BUFFER_BYTES {
                buf = BytesMut::new();
            } else {
                buf.clear();
            }
            self.session.shrink_if_idle();
        }
        let _ = tokio::time::timeout(FINAL_FLUSH, self.io.shutdown()).await;
    }

    fn metrics(&self) -> &Metrics {
        &self.core.metrics
    }

    /// Sends what is still queued for this connection (for example a DISCONNECT the reader
    /// queued before closing), bounded in time.
    async fn final_flush(&mut self, items: &mut Vec<Outbound>, buf: &mut BytesMut) {
        if !self
            .session
            .take_outbound(self.conn_id, items, MAX_BATCH_ITEMS)
            || items.is_empty()
        {
            return;
        }
        self.encode(items, buf);
        let _ = tokio::time::timeout(FINAL_FLUSH, self.io.write_all(buf)).await;
    }

    fn encode(&self, items: &mut Vec<Outbound>, buf: &mut BytesMut) {
        let mut published = 0u64;
        for item in items.drain(..) {
            let packet = match item {
                Outbound::Packet(p) => p,
                Outbound::Publish {
                    message,
                    qos,
                    retain,
                    packet_id,
                    dup,
                } => {
                    published += 1;
                    Packet::Publish(Publish {
                        dup,
                        qos,
                        retain,
                        topic: message.topic.clone(),
                        packet_id,
                        payload: message.payload.clone(),
                        properties: if self.version.is_v5() {
                            message.properties.clone()
                        } else {
                            None
                        },
                    })
                }
            };
            if let Err(e) = codec::encode(&packet, self.version, buf) {
                // Only a packet that cannot exist on the wire fails here (a field over 64 KiB
                // that the decoder would never have produced); skip it rather than the batch.
                tracing::warn!(client_id = %self.session.client_id, error = %e, packet = packet.name(), "cannot encode packet; skipped");
            }
        }
        Metrics::add(&self.metrics().messages_sent, published);
    }
}
