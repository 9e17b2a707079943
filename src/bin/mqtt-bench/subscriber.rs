//! The subscriber loop: receives, acknowledges (PUBACK, or PUBREC then PUBCOMP), tracks each
//! publisher's sequence numbers and records end-to-end latency from the payload stamps.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use mqtt_server::codec::{Ack, Packet};
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Conn, sleep_until_opt};
use crate::stamp;
use crate::stats::{Live, SharedLatency};
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
    /// The error that ended it early, if any.
    pub error: Option<String>,
}

/// Where a subscriber records what it sees.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// The run's time origin (stamps count from it).
    pub origin: Instant,
    /// Live counters.
    pub live: Arc<Live>,
    /// End-to-end latency of first copies.
    pub latency: Arc<SharedLatency>,
}

/// Receives until `stop` is cancelled. Subscriber `index` expects every message of the
/// publishers in `publishers`.
pub async fn run(
    mut conn: Conn,
    index: usize,
    publishers: Range<u32>,
    sinks: Sinks,
    stop: CancellationToken,
) -> SubResult {
    let mut state = State {
        first: publishers.start,
        trackers: Vec::new(),
        batch: Vec::new(),
        result: SubResult {
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            last_ns: None,
            error: None,
        },
    };
    state.trackers.resize_with(publishers.len(), || None);
    if let Err(e) = receive_loop(&mut conn, &mut state, index, &sinks, &stop).await {
        Live::add(&sinks.live.errors, 1);
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
    /// Latencies (ns) of the current read, recorded together.
    batch: Vec<u64>,
    result: SubResult,
}

async fn receive_loop(
    conn: &mut Conn,
    s: &mut State,
    index: usize,
    sinks: &Sinks,
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
        let now_ns = u64::try_from(sinks.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
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
            Live::add(&sinks.live.delivered, new);
            sinks.latency.record_batch(index, &s.batch);
            s.batch.clear();
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
            self.batch.push(now_ns.saturating_sub(st.sent_ns));
            true
        } else {
            false
        }
    }
}
