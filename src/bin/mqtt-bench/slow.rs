//! slow-consumer: a QoS 0 and a QoS 1 subscriber that never read their socket while
//! publishers flood their topic at QoS 1; a fast subscriber of the same topic and a bystander
//! pair on another topic are measured meanwhile. Afterwards the slow consumers read what the
//! broker still sends them: what they miss of what was published is what the broker dropped
//! for them (its queue limit), inferred from outside.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_server::QoS;
use mqtt_server::codec::{Packet, Publish};
use tokio_util::sync::CancellationToken;

use crate::cli::SlowConsumerArgs;
use crate::client::{ClientError, Conn};
use crate::ctx::{BenchError, Ctx};
use crate::overload::{self, Opening, finish};
use crate::probe::{self, Stream, connect, pause};
use crate::report::{Report, per_second};

/// A slow consumer's drain ends after this long without a packet.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &SlowConsumerArgs) -> Result<Report, BenchError> {
    let n_pub = args.publishers as usize;
    ctx.check_fds(n_pub + 6)?;
    let Opening {
        sampler,
        mut o,
        mut by,
        before,
    } = overload::open(ctx, &args.probe).await?;

    let topic = ctx.topic("flood");
    let mut slow = Vec::new();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce].into_iter().enumerate() {
        let id = ctx.client_id("slow", i);
        let mut conn = connect(ctx, &id).await?;
        conn.subscribe_all(std::slice::from_ref(&topic), qos, ctx.connect_timeout())
            .await
            .map_err(|source| BenchError::Client { who: id, source })?;
        slow.push(conn);
    }
    let fast = Arc::new(Stream::default());
    let fast_stop = CancellationToken::new();
    let fast_task = {
        let id = ctx.client_id("fast", 0);
        let mut conn = connect(ctx, &id).await?;
        conn.subscribe_all(
            std::slice::from_ref(&topic),
            QoS::AtLeastOnce,
            ctx.connect_timeout(),
        )
        .await
        .map_err(|source| BenchError::Client {
            who: id.clone(),
            source,
        })?;
        let (fast, stop, origin) = (Arc::clone(&fast), fast_stop.clone(), ctx.origin);
        tokio::spawn(async move {
            if let Err(e) = probe::count_deliveries(conn, origin, &fast, &stop).await {
                fast.fail(format!("{id}: {e}"));
            }
        })
    };
    // the slow consumers only send PINGREQ (so that keep-alive does not end them) and never read
    let slow_stop = CancellationToken::new();
    let mut slow_tasks = Vec::new();
    for mut conn in slow {
        let stop = slow_stop.clone();
        slow_tasks.push(tokio::spawn(async move {
            let outcome = never_read(&mut conn, &stop).await;
            (conn, outcome)
        }));
    }

    let mut publishers = Vec::new();
    for i in 0..n_pub {
        publishers.push(connect(ctx, &ctx.client_id("flood", i)).await?);
    }
    let _ = sampler.take_peak();
    let flood_start = Instant::now();
    let until = flood_start + ctx.duration();
    let payload = Bytes::from(vec![0u8; ctx.common.payload]);
    let mut pub_tasks = Vec::new();
    for conn in publishers {
        let (topic, payload) = (topic.clone(), payload.clone());
        let window = u64::from(ctx.common.inflight);
        pub_tasks.push(tokio::spawn(flood_publish(
            conn, topic, payload, window, until,
        )));
    }
    let mut errors = Vec::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    for t in pub_tasks {
        match t.await {
            Ok(r) => {
                sent += r.sent;
                acked += r.acked;
                if let Some(e) = r.error {
                    errors.push(format!("flooding publisher: {e}"));
                }
            }
            Err(e) => errors.push(format!("flooding publisher task: {e}")),
        }
    }
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let during = by.phase("during");
    o.sample("peak_during", sampler.take_peak());
    o.sample("end_of_flood", sampler.now());

    // the slow consumers now read what the broker kept for them
    slow_stop.cancel();
    let mut drained = Vec::new();
    for t in slow_tasks {
        match t.await {
            Ok((mut conn, outcome)) => {
                let closed_early = outcome.is_err();
                let deadline = Instant::now() + Duration::from_secs_f64(ctx.common.drain);
                let (got, closed) = drain(&mut conn, deadline).await;
                drained.push((got, closed_early || closed));
                conn.disconnect().await;
            }
            Err(e) => errors.push(format!("slow consumer task: {e}")),
        }
    }
    // the fast subscriber had the drain time too
    fast_stop.cancel();
    let _ = fast_task.await;
    let (_, fast_received) = fast.counts();

    pause(args.probe.phase).await;
    let after = by.phase("after");
    o.sample("after", sampler.now());
    let (stream_errors, stream_msgs) = by.stop().await;
    errors.extend(stream_msgs);
    let (fast_errors, fast_msg) = fast.errors();
    errors.extend(fast_msg);

    o.figure("flood_publishers", n_pub as f64);
    o.figure("flood_sent", sent as f64);
    o.figure("flood_acked", acked as f64);
    o.figure("flood_msgs_per_s", per_second(sent, flood_secs));
    o.figure("fast_subscriber_received", fast_received as f64);
    o.figure(
        "fast_subscriber_missed",
        sent.saturating_sub(fast_received) as f64,
    );
    for (i, (got, closed)) in drained.iter().enumerate() {
        let name = if i == 0 { "slow_qos0" } else { "slow_qos1" };
        o.figure(&format!("{name}_received"), *got as f64);
        o.figure(
            &format!("{name}_dropped_inferred"),
            sent.saturating_sub(*got) as f64,
        );
        o.figure(
            &format!("{name}_closed_by_broker"),
            if *closed { 1.0 } else { 0.0 },
        );
    }
    if let (Some(b), Some(p)) = (
        o.broker.get("baseline").and_then(|s| s.rss_kb),
        o.broker.get("peak_during").and_then(|s| s.rss_kb),
    ) {
        o.figure("rss_peak_growth_kb", p.saturating_sub(b) as f64);
    }
    o.check_bystander(&before, &during, args.probe.min_bystander_pct);
    o.check(
        "the fast subscriber of the flooded topic keeps up",
        sent > 0 && fast_received as f64 >= sent as f64 * args.probe.min_bystander_pct / 100.0,
        format!("{fast_received} of {sent} received"),
    );
    o.check_returns(
        "baseline",
        "after",
        args.probe.rss_slack_kb(),
        args.probe.fd_slack,
    );
    o.phases = vec![before, during, after];
    finish(ctx, o, errors, stream_errors + fast_errors)
}

/// Sends PINGREQ when due and never reads, until `stop`.
async fn never_read(conn: &mut Conn, stop: &CancellationToken) -> Result<(), ClientError> {
    loop {
        let at = conn
            .ping_at()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(at) => {}
        }
        conn.ping_if_due(Instant::now())?;
        conn.try_flush()?;
    }
}

/// Reads and acknowledges until `deadline` or [`DRAIN_IDLE`] without a packet; returns the
/// PUBLISH packets received and whether the broker closed the connection.
async fn drain(conn: &mut Conn, deadline: Instant) -> (u64, bool) {
    let mut got = 0u64;
    loop {
        let idle = (Instant::now() + DRAIN_IDLE).min(deadline);
        let packet = match tokio::time::timeout_at(idle.into(), conn.recv()).await {
            Err(_) => return (got, false),
            Ok(Err(_)) => return (got, true),
            Ok(Ok(p)) => p,
        };
        if let Packet::Publish(p) = &packet {
            got += 1;
            if conn.ack_incoming(p).is_err() || conn.flush().await.is_err() {
                return (got, true);
            }
        }
    }
}

/// What one flooding publisher did.
pub struct FloodResult {
    /// PUBLISH packets written.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Why it stopped early.
    pub error: Option<String>,
}

/// Publishes QoS 1 to `topic` as fast as `window` unacknowledged messages allow until
/// `until`, then waits up to 5 s for the outstanding PUBACKs.
pub async fn flood_publish(
    mut conn: Conn,
    topic: ByteString,
    payload: Bytes,
    window: u64,
    until: Instant,
) -> FloodResult {
    let mut r = FloodResult {
        sent: 0,
        acked: 0,
        error: None,
    };
    let mut next_id: u16 = 0;
    let outcome: Result<(), ClientError> = async {
        let mut end = until;
        loop {
            let now = Instant::now();
            let publishing = now < until;
            if !publishing && r.acked >= r.sent {
                break;
            }
            if !publishing && end == until {
                end = until + Duration::from_secs(5);
            }
            if now >= end {
                return Err(ClientError::Timeout("PUBACKs of the flood"));
            }
            while publishing && r.sent - r.acked < window && conn.pending() < 256 * 1024 {
                next_id = next_id.checked_add(1).unwrap_or(1);
                conn.queue(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: topic.clone(),
                    packet_id: NonZeroU16::new(next_id),
                    payload: payload.clone(),
                    properties: None,
                }))?;
                r.sent += 1;
            }
            conn.try_flush()?;
            let wake = if publishing { until } else { end };
            tokio::select! {
                res = conn.ready(conn.pending() > 0) => res?,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            conn.try_read()?;
            while let Some(packet) = conn.next_packet()? {
                match packet {
                    Packet::PubAck(_) => r.acked += 1,
                    Packet::PingResp => {}
                    other => return Err(ClientError::Unexpected(other.name())),
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        r.error = Some(e.to_string());
    }
    conn.disconnect().await;
    r
}
