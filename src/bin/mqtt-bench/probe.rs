//! Instruments of the overload scenarios: message streams at a fixed rate whose deliveries and
//! latency are counted phase by phase (the bystander pair, the soak's QoS 0/1/2 streams), and a
//! sampler of the broker's resident memory and open files that keeps the peaks.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_server::QoS;
use mqtt_server::codec::{Ack, Packet, Publish};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Conn, sleep_until_opt};
use crate::ctx::{BenchError, Ctx};
use crate::proc::{self, ProcSample};
use crate::report::per_second;
use crate::stats::{Latency, LatencySummary};

/// Messages a rate publisher may have unacknowledged before it skips ticks.
const RATE_WINDOW: u64 = 1000;

/// Payload bytes of stream messages: an 8-byte send time, then padding.
pub const STREAM_PAYLOAD: usize = 16;

/// How often the sampler reads `/proc/<pid>`.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Counters of one stream since the last phase mark.
#[derive(Debug)]
pub struct Stream {
    sent: AtomicU64,
    received: AtomicU64,
    latency: Mutex<Latency>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            latency: Mutex::new(Latency::new(3)),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }
}

impl Stream {
    /// Records a failure of one of the stream's clients.
    pub fn fail(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(what);
        }
    }

    /// Messages sent and received since the last mark.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// Failures so far and the first one's message.
    pub fn errors(&self) -> (u64, Option<String>) {
        (
            self.errors.load(Ordering::Relaxed),
            self.first_error.lock().clone(),
        )
    }

    /// The counts since the last mark, which they are reset to: sent, received, latency.
    fn take(&self) -> (u64, u64, Latency) {
        let sent = self.sent.swap(0, Ordering::Relaxed);
        let received = self.received.swap(0, Ordering::Relaxed);
        let latency = std::mem::replace(&mut *self.latency.lock(), Latency::new(3));
        (sent, received, latency)
    }
}

/// What one stream did during one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Phase name (`before`, `during`, `after`, `start`, `end`, ...).
    pub name: String,
    /// Its length in seconds.
    pub secs: f64,
    /// Messages published in the phase.
    pub sent: u64,
    /// Messages delivered in the phase.
    pub received: u64,
    /// Deliveries per second.
    pub received_per_s: f64,
    /// Publish-to-delivery time of the phase's deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencySummary>,
}

/// Streams (one publisher at a fixed rate, one subscriber each) measured phase by phase.
pub struct Streams {
    streams: Vec<(String, Arc<Stream>)>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    mark: Instant,
}

impl Streams {
    /// No streams yet.
    pub fn new() -> Streams {
        Streams {
            streams: Vec::new(),
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            mark: Instant::now(),
        }
    }

    /// Connects a subscriber (QoS 2 subscription: it gets each message at the publisher's QoS)
    /// and a publisher of `qos` sending `rate` messages per second on the run's topic
    /// `stream/<name>`.
    pub async fn add(
        &mut self,
        ctx: &Ctx,
        name: &str,
        qos: QoS,
        rate: f64,
    ) -> Result<(), BenchError> {
        let topic = ctx.topic(&format!("stream/{name}"));
        let sub_id = ctx.client_id(&format!("{name}-sub"), 0);
        let pub_id = ctx.client_id(&format!("{name}-pub"), 0);
        let mut sub = connect(ctx, &sub_id).await?;
        sub.subscribe_all(
            std::slice::from_ref(&topic),
            QoS::ExactlyOnce,
            ctx.connect_timeout(),
        )
        .await
        .map_err(|source| BenchError::Client {
            who: sub_id.clone(),
            source,
        })?;
        let publisher = connect(ctx, &pub_id).await?;
        let stream = Arc::new(Stream::default());
        self.register(name, Arc::clone(&stream));
        let origin = ctx.origin;
        let (s, stop) = (Arc::clone(&stream), self.stop.clone());
        self.tasks.spawn(async move {
            if let Err(e) = count_deliveries(sub, origin, &s, &stop).await {
                s.fail(format!("{sub_id}: {e}"));
            }
        });
        let (s, stop) = (Arc::clone(&stream), self.stop.clone());
        self.tasks.spawn(async move {
            let plan = RatePlan {
                topic,
                qos,
                rate,
                origin,
            };
            if let Err(e) = publish_at_rate(publisher, &plan, &s, &stop).await {
                s.fail(format!("{pub_id}: {e}"));
            }
        });
        self.mark = Instant::now();
        Ok(())
    }

    /// Ends a phase: every stream's figures since the previous mark, merged.
    pub fn phase(&mut self, name: &str) -> Phase {
        let secs = self.mark.elapsed().as_secs_f64();
        self.mark = Instant::now();
        let mut merged = Phase {
            name: name.to_string(),
            secs: (secs * 1000.0).round() / 1000.0,
            sent: 0,
            received: 0,
            received_per_s: 0.0,
            latency_us: None,
        };
        let mut latency = Latency::new(3);
        for (_, s) in &self.streams {
            let (sent, received, l) = s.take();
            merged.sent += sent;
            merged.received += received;
            latency.merge(&l);
        }
        merged.received_per_s = per_second(merged.received, secs);
        merged.latency_us = latency.summary();
        merged
    }

    /// Registers a stream's counters under `name` (done by [`Streams::add`]).
    fn register(&mut self, name: &str, stream: Arc<Stream>) {
        self.streams.push((name.to_string(), stream));
    }

    /// Failures of the streams' clients and the first messages.
    pub fn errors(&self) -> (u64, Vec<String>) {
        let mut n = 0;
        let mut msgs = Vec::new();
        for (_, s) in &self.streams {
            let (e, first) = s.errors();
            n += e;
            msgs.extend(first);
        }
        (n, msgs)
    }

    /// Stops every stream's clients.
    pub async fn stop(mut self) -> (u64, Vec<String>) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.errors()
    }
}

/// Connects `id` or fails the setup.
pub async fn connect(ctx: &Ctx, id: &str) -> Result<Conn, BenchError> {
    ctx.endpoint
        .connect(id)
        .await
        .map_err(|source| BenchError::Client {
            who: id.to_string(),
            source,
        })
}

/// What a rate publisher publishes.
pub struct RatePlan {
    /// Topic.
    pub topic: ByteString,
    /// QoS.
    pub qos: QoS,
    /// Messages per second.
    pub rate: f64,
    /// Time origin of the stamps.
    pub origin: Instant,
}

/// A stamped payload: nanoseconds since `origin`, then zeros.
fn stamped(origin: Instant) -> Bytes {
    let ns = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut p = vec![0u8; STREAM_PAYLOAD];
    if let Some(head) = p.get_mut(..8) {
        head.copy_from_slice(&ns.to_be_bytes());
    }
    Bytes::from(p)
}

/// Publishes at `plan.rate` until `stop`, completing the QoS 1 ([MQTT-4.3.2]) and QoS 2
/// ([MQTT-4.3.3]) flows; a tick is skipped while [`RATE_WINDOW`] messages are unacknowledged.
pub async fn publish_at_rate(
    mut conn: Conn,
    plan: &RatePlan,
    stream: &Stream,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_id: u16 = 0;
    let mut inflight: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                if inflight < RATE_WINDOW {
                    let packet_id = if plan.qos == QoS::AtMostOnce {
                        None
                    } else {
                        next_id = next_id.checked_add(1).unwrap_or(1);
                        inflight += 1;
                        NonZeroU16::new(next_id)
                    };
                    conn.queue(&Packet::Publish(Publish {
                        dup: false,
                        qos: plan.qos,
                        retain: false,
                        topic: plan.topic.clone(),
                        packet_id,
                        payload: stamped(plan.origin),
                        properties: None,
                    }))?;
                    stream.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            r = conn.ready(conn.pending() > 0) => r?,
        }
        conn.try_flush()?;
        conn.try_read()?;
        while let Some(packet) = conn.next_packet()? {
            match packet {
                Packet::PubAck(_) | Packet::PubComp(_) => inflight = inflight.saturating_sub(1),
                // [MQTT-4.3.3-1] the sender answers PUBREC with PUBREL
                Packet::PubRec(a) => conn.queue(&Packet::PubRel(Ack::new(a.packet_id)))?,
                Packet::PingResp => {}
                other => return Err(ClientError::Unexpected(other.name())),
            }
        }
        conn.ping_if_due(Instant::now())?;
        conn.try_flush()?;
    }
    conn.disconnect().await;
    Ok(())
}

/// Receives until `stop`, acknowledging every QoS, counting deliveries and their latency.
pub async fn count_deliveries(
    mut conn: Conn,
    origin: Instant,
    stream: &Stream,
    stop: &CancellationToken,
) -> Result<(), ClientError> {
    loop {
        let ping_at = conn.ping_at().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.cancelled() => break,
            r = conn.ready(conn.pending() > 0) => r?,
            _ = sleep_until_opt(ping_at) => {}
        }
        conn.try_flush()?;
        conn.try_read()?;
        let now = origin.elapsed().as_nanos();
        let mut batch = Vec::new();
        while let Some(packet) = conn.next_packet()? {
            match packet {
                Packet::Publish(p) => {
                    conn.ack_incoming(&p)?;
                    if let Some(head) = p.payload.get(..8) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(head);
                        let sent = u128::from(u64::from_be_bytes(b));
                        batch.push(u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX));
                    }
                }
                // [MQTT-4.3.3-2] the receiver answers PUBREL with PUBCOMP
                Packet::PubRel(a) => conn.queue(&Packet::PubComp(Ack::new(a.packet_id)))?,
                Packet::PingResp => {}
                other => return Err(ClientError::Unexpected(other.name())),
            }
        }
        if !batch.is_empty() {
            stream
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut latency = stream.latency.lock();
            for ns in batch {
                latency.record_ns(ns);
            }
        }
        conn.ping_if_due(Instant::now())?;
        conn.try_flush()?;
    }
    conn.disconnect().await;
    Ok(())
}

/// Samples the broker process every [`SAMPLE_EVERY`], keeping the peaks since the last reset.
pub struct Sampler {
    pid: Option<u32>,
    peak: Arc<Mutex<ProcSample>>,
    stop: CancellationToken,
}

impl Sampler {
    /// Starts sampling `pid` (nothing happens without one).
    pub fn start(pid: Option<u32>) -> Sampler {
        let peak = Arc::new(Mutex::new(ProcSample::default()));
        let stop = CancellationToken::new();
        if let Some(pid) = pid {
            let (peak, stop) = (Arc::clone(&peak), stop.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => {}
                    }
                    let s = proc::sample(pid);
                    let mut p = peak.lock();
                    p.rss_kb = max_opt(p.rss_kb, s.rss_kb);
                    p.fds = max_opt(p.fds, s.fds);
                }
            });
        }
        Sampler { pid, peak, stop }
    }

    /// One sample now.
    pub fn now(&self) -> Option<ProcSample> {
        self.pid.map(proc::sample)
    }

    /// The peaks since the last reset (or start), then resets them to the current values.
    pub fn take_peak(&self) -> Option<ProcSample> {
        let pid = self.pid?;
        let now = proc::sample(pid);
        let mut p = self.peak.lock();
        let peak = ProcSample {
            rss_kb: max_opt(p.rss_kb, now.rss_kb),
            fds: max_opt(p.fds, now.fds),
        };
        *p = now;
        Some(peak)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Waits `secs` seconds.
pub async fn pause(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_carry_the_time_since_origin() {
        let origin = Instant::now() - Duration::from_millis(5);
        let p = stamped(origin);
        assert_eq!(p.len(), STREAM_PAYLOAD);
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[..8]);
        let ns = u64::from_be_bytes(b);
        assert!(ns >= 5_000_000, "{ns}");
        assert!(ns < 5_000_000_000, "{ns}");
    }

    #[test]
    fn a_phase_takes_and_resets_the_counts() {
        let s = Stream::default();
        s.sent.fetch_add(10, Ordering::Relaxed);
        s.received.fetch_add(8, Ordering::Relaxed);
        s.latency.lock().record_ns(1_000_000);
        let (sent, received, l) = s.take();
        assert_eq!((sent, received), (10, 8));
        assert!(l.summary().is_some());
        let (sent, received, l) = s.take();
        assert_eq!((sent, received), (0, 0));
        assert!(l.summary().is_none());
    }

    #[test]
    fn peaks_keep_the_larger_value() {
        assert_eq!(max_opt(Some(3), Some(5)), Some(5));
        assert_eq!(max_opt(None, Some(5)), Some(5));
        assert_eq!(max_opt(Some(3), None), Some(3));
    }
}
