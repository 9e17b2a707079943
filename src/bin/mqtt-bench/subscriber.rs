//! The subscriber loop: receives, acknowledges (PUBACK, or PUBREC then PUBCOMP), tracks each
//! publisher's sequence numbers and records end-to-end latency from the payload stamps.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use mqtt_server::codec::{Ack, Packet};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Conn, sleep_until_opt};
use crate::stamp;
use crate::stats::{Latency, Live};
use crate::tracker::{Arrival, SeqTracker};

/// What one subscriber saw.
#[derive(Debug)]
pub struct SubResult {
    /// First copies received, summed over publishers.
    pub unique: u64,
    /// Copies received again.
    pub duplicates: u64,
    /// First copies that arrived after a later one of the same publisher.
    pub out_of_order: u64,
    /// Messages that were not from this run's publishers (no stamp, unknown publisher).
    pub foreign: u64,
    /// Last delivery, ns since the origin.
    pub last_ns: Option<u64>,
    /// End-to-end latency of first copies.
    pub latency: Latency,
    /// The error that ended it early, if any.
    pub error: Option<String>,
}

/// Receives until `stop` is cancelled. `publishers` are the publisher indexes whose messages
/// this subscriber expects; `sigfig` is the latency histogram's precision.
pub async fn run(
    mut conn: Conn,
    publishers: Range<u32>,
    origin: Instant,
    sigfig: u8,
    live: Arc<Live>,
    stop: CancellationToken,
) -> SubResult {
    let mut state = State {
        first: publishers.start,
        trackers: Vec::new(),
        result: SubResult {
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            last_ns: None,
            latency: Latency::new(sigfig),
            error: None,
        },
    };
    state.trackers.resize_with(publishers.len(), || None);
    if let Err(e) = receive_loop(&mut conn, &mut state, origin, &live, &stop).await {
        Live::add(&live.errors, 1);
        state.result.error = Some(e.to_string());
    }
    for t in state.trackers.iter().flatten() {
        state.result.unique += t.unique;
        state.result.duplicates += t.duplicates;
        state.result.out_of_order += t.out_of_order;
    }
    conn.disconnect().await;
    state.result
}

struct State {
    first: u32,
    /// One tracker per expected publisher, created on its first message.
    trackers: Vec<Option<SeqTracker>>,
    result: SubResult,
}

async fn receive_loop(
    conn: &mut Conn,
    s: &mut State,
    origin: Instant,
    live: &Live,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    loop {
        let ping_at = conn.ping_at().map(tokio::time::Instant::from_std);
        let want_write = conn.pending() > 0;
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            ready = conn.ready(want_write) => ready?,
            _ = sleep_until_opt(ping_at) => {}
        }
        conn.ping_if_due(Instant::now())?;
        conn.try_flush()?;
        if !conn.try_read()? {
            continue;
        }
        // every packet of one read arrived together: one clock reading serves them all
        let now_ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut new = 0;
        while let Some(packet) = conn.next_packet()? {
            match packet {
                Packet::Publish(publish) => {
                    conn.ack_incoming(&publish)?;
                    if s.record(&publish.payload, now_ns) {
                        new += 1;
                    }
                }
                // [MQTT-4.3.3-2] PUBREL is answered with PUBCOMP
                Packet::PubRel(ack) => conn.queue(&Packet::PubComp(Ack::new(ack.packet_id)))?,
                Packet::PingResp => {}
                other => return Err(ClientError::Unexpected(other.name())),
            }
        }
        if new > 0 {
            s.result.last_ns = Some(now_ns);
            Live::add(&live.delivered, new);
        }
        conn.try_flush()?;
    }
}

impl State {
    /// Records one payload; true if it is a first copy of one of the expected messages.
    fn record(&mut self, payload: &[u8], now_ns: u64) -> bool {
        let Some(st) = stamp::read(payload) else {
            self.result.foreign += 1;
            return false;
        };
        let slot = st
            .publisher
            .checked_sub(self.first)
            .and_then(|i| self.trackers.get_mut(usize::try_from(i).ok()?));
        let Some(slot) = slot else {
            self.result.foreign += 1;
            return false;
        };
        let tracker = slot.get_or_insert_with(SeqTracker::default);
        if tracker.record(st.seq) == Arrival::New {
            self.result
                .latency
                .record_ns(now_ns.saturating_sub(st.sent_ns));
            true
        } else {
            false
        }
    }
}
