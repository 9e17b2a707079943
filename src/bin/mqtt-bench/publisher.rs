//! The publisher loop: open loop at a fixed rate or closed loop within an in-flight window,
//! QoS 0, 1 (PUBLISH/PUBACK) or 2 (PUBLISH/PUBREC/PUBREL/PUBCOMP).

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_server::QoS;
use mqtt_server::codec::{Ack, Packet, Publish};

use crate::client::{ClientError, Conn, sleep_until_opt};
use crate::stamp::{self, Stamp};
use crate::stats::Live;

/// Stop adding messages to the write buffer beyond this many bytes until it drains.
const HIGH_WATER: usize = 64 * 1024;

/// What every publisher of a run shares.
#[derive(Debug, Clone)]
pub struct PubParams {
    /// QoS of the publications.
    pub qos: QoS,
    /// Payload size in bytes (at least [`stamp::STAMP_LEN`]).
    pub payload_len: usize,
    /// Messages per second (open loop), or `None` for closed loop.
    pub rate: Option<f64>,
    /// Messages to publish at most.
    pub messages: Option<u64>,
    /// Unacknowledged QoS 1/2 messages allowed.
    pub inflight: u16,
    /// The run's time origin: stamps count nanoseconds from it.
    pub origin: Instant,
    /// When publishing starts (all publishers together).
    pub start: Instant,
    /// When publishing stops at the latest.
    pub stop: Instant,
    /// How long to wait for outstanding acknowledgements after publishing stops.
    pub drain: Duration,
    /// Shared counters.
    pub live: Arc<Live>,
}

/// What one publisher did.
#[derive(Debug, Default, Clone)]
pub struct PubResult {
    /// Messages published (handed to the socket).
    pub sent: u64,
    /// Acknowledged (PUBACK, or PUBCOMP at QoS 2).
    pub acked: u64,
    /// First publish, ns since the origin.
    pub first_ns: Option<u64>,
    /// Last publish, ns since the origin.
    pub last_ns: Option<u64>,
    /// When this publisher stopped publishing, ns since the origin.
    pub done_ns: u64,
    /// Largest delay behind the open-loop schedule, ns.
    pub max_lag_ns: u64,
    /// The error that ended it, if any.
    pub error: Option<String>,
    /// Protocol oddities that did not end it (unknown packet ids).
    pub soft_errors: u64,
}

/// The state of each packet id: free, awaiting PUBACK/PUBREC, or awaiting PUBCOMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    AwaitAck,
    AwaitComp,
}

/// Publishes to `topic` as publisher `index` until the bound is reached, then waits for the
/// outstanding acknowledgements, and disconnects.
pub async fn run(mut conn: Conn, index: u32, topic: ByteString, p: PubParams) -> PubResult {
    let mut result = PubResult::default();
    if let Err(e) = publish_loop(&mut conn, index, topic, &p, &mut result).await {
        Live::add(&p.live.errors, 1);
        result.error = Some(e.to_string());
    }
    conn.disconnect().await;
    result
}

fn ns_since(origin: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

async fn publish_loop(
    conn: &mut Conn,
    index: u32,
    topic: ByteString,
    p: &PubParams,
    r: &mut PubResult,
) -> Result<(), ClientError> {
    let window = if p.qos == QoS::AtMostOnce {
        u64::MAX
    } else {
        u64::from(p.inflight)
    };
    // Packet ids cycle through 1..=id_space: four times the window, so that an id comes round
    // again only long after its acknowledgement (a broker may ack out of order), and the
    // table stays small when there are thousands of publishers.
    let id_space = if p.qos == QoS::AtMostOnce {
        0
    } else {
        p.inflight.saturating_mul(4)
    };
    let mut slots = vec![Slot::Free; usize::from(id_space) + 1];
    let mut next_id: u16 = 1;
    let mut outstanding: u64 = 0;
    let mut packet = Packet::Publish(Publish {
        dup: false,
        qos: p.qos,
        retain: false,
        topic,
        packet_id: None,
        payload: Bytes::from(vec![0u8; p.payload_len]),
        properties: None,
    });
    let mut done_at: Option<Instant> = None;
    tokio::time::sleep_until(tokio::time::Instant::from_std(p.start)).await;

    loop {
        let now = Instant::now();
        if done_at.is_none() && (now >= p.stop || p.messages.is_some_and(|m| r.sent >= m)) {
            done_at = Some(now);
            r.done_ns = ns_since(p.origin, now);
        }

        // 1. queue what the window, the schedule and the buffer allow
        let mut next_due: Option<Instant> = None;
        if done_at.is_none() {
            let mut batch = 0u64;
            while conn.pending() < HIGH_WATER && outstanding < window {
                if p.messages.is_some_and(|m| r.sent >= m) {
                    break;
                }
                let now = Instant::now();
                if let Some(rate) = p.rate {
                    let due = p.start + Duration::from_secs_f64(r.sent as f64 / rate);
                    if due > now {
                        next_due = Some(due);
                        break;
                    }
                    r.max_lag_ns = r.max_lag_ns.max(ns_since(due, now));
                }
                let id = if p.qos == QoS::AtMostOnce {
                    None
                } else {
                    let Some(slot) = slots.get_mut(usize::from(next_id)) else {
                        break;
                    };
                    if *slot != Slot::Free {
                        // the id wrapped round to one still in flight: wait for its ack
                        break;
                    }
                    *slot = Slot::AwaitAck;
                    let id = NonZeroU16::new(next_id);
                    next_id = if next_id >= id_space { 1 } else { next_id + 1 };
                    id
                };
                if let Packet::Publish(publish) = &mut packet {
                    publish.packet_id = id;
                }
                let sent_ns = ns_since(p.origin, now);
                let seq = r.sent;
                conn.queue_publish(&packet, p.payload_len, |payload| {
                    stamp::write(
                        payload,
                        Stamp {
                            sent_ns,
                            publisher: index,
                            seq,
                        },
                    )
                })?;
                r.first_ns.get_or_insert(sent_ns);
                r.last_ns = Some(sent_ns);
                r.sent += 1;
                batch += 1;
                if id.is_some() {
                    outstanding += 1;
                }
            }
            Live::add(&p.live.sent, batch);
        }

        // 2. finished: everything written and acknowledged, or out of time
        if let Some(done) = done_at {
            if outstanding == 0 && conn.pending() == 0 {
                return Ok(());
            }
            if now >= done + p.drain {
                if conn.pending() > 0 {
                    r.soft_errors += 1;
                }
                return Ok(());
            }
        }

        // 3. write, then read acknowledgements
        conn.ping_if_due(now)?;
        conn.try_flush()?;
        let mut acked = 0;
        if conn.try_read()? {
            while let Some(packet) = conn.next_packet()? {
                match packet {
                    Packet::PubAck(ack) if p.qos == QoS::AtLeastOnce => {
                        if release(&mut slots, &ack, Slot::AwaitAck) {
                            acked += 1;
                        } else {
                            r.soft_errors += 1;
                        }
                    }
                    Packet::PubRec(ack) if p.qos == QoS::ExactlyOnce => {
                        match slots.get_mut(usize::from(ack.packet_id.get())) {
                            Some(slot) if *slot == Slot::AwaitAck => *slot = Slot::AwaitComp,
                            // a repeated PUBREC is answered again ([MQTT-4.3.3-1])
                            Some(slot) if *slot == Slot::AwaitComp => {}
                            _ => {
                                r.soft_errors += 1;
                                continue;
                            }
                        }
                        // [MQTT-4.3.3-1] PUBREC is answered with PUBREL
                        conn.queue(&Packet::PubRel(Ack::new(ack.packet_id)))?;
                    }
                    Packet::PubComp(ack) if p.qos == QoS::ExactlyOnce => {
                        if release(&mut slots, &ack, Slot::AwaitComp) {
                            acked += 1;
                        } else {
                            r.soft_errors += 1;
                        }
                    }
                    Packet::PingResp => {}
                    other => return Err(ClientError::Unexpected(other.name())),
                }
            }
            conn.try_flush()?;
        }
        outstanding -= acked;
        r.acked += acked;
        Live::add(&p.live.acked, acked);

        // 4. more can be queued right now: go round again (yielding to other tasks)
        let can_send = done_at.is_none()
            && next_due.is_none()
            && outstanding < window
            && conn.pending() < HIGH_WATER
            && p.messages.is_none_or(|m| r.sent < m);
        if can_send && conn.pending() == 0 {
            tokio::task::yield_now().await;
            continue;
        }

        // 5. otherwise wait for the socket, the schedule, a ping or the deadline
        let deadline = match done_at {
            Some(done) => done + p.drain,
            None => p.stop,
        };
        let mut wake = deadline;
        for t in [next_due, conn.ping_at()].into_iter().flatten() {
            wake = wake.min(t);
        }
        let want_write = conn.pending() > 0;
        tokio::select! {
            ready = conn.ready(want_write) => ready?,
            _ = sleep_until_opt(Some(tokio::time::Instant::from_std(wake))) => {}
        }
    }
}

/// Frees the slot of `ack` if it is in state `expected`.
fn release(slots: &mut [Slot], ack: &Ack, expected: Slot) -> bool {
    match slots.get_mut(usize::from(ack.packet_id.get())) {
        Some(slot) if *slot == expected => {
            *slot = Slot::Free;
            true
        }
        _ => false,
    }
}
