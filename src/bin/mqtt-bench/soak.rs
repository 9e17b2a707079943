//! soak: mixed traffic for --duration — QoS 0, 1 and 2 streams at a fixed rate, a retained
//! worker (set, replace, clear retained messages; subscribe to all of them now and then),
//! session takeovers (a new connection with a client id in use), and reconnect storms (many
//! connections at once, then closed). The broker's RSS and open files, and the streams' p99
//! latency and rate, are taken over a start window and an end window; the checks compare them.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_server::QoS;
use mqtt_server::codec::{Packet, Publish, Subscribe, SubscriptionOptions, Unsubscribe};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::SoakArgs;
use crate::client::{ClientError, Conn};
use crate::ctx::{BenchError, ClientSpec, Ctx, connect_all};
use crate::overload::{OverloadStats, finish};
use crate::probe::{Phase, Sampler, Streams, connect, pause};
use crate::report::Report;

/// Counters of the soak's workers.
#[derive(Debug, Default)]
struct Counters {
    retained_published: AtomicU64,
    retained_received: AtomicU64,
    takeovers: AtomicU64,
    takeover_old_not_closed: AtomicU64,
    storms: AtomicU64,
    storm_connections: AtomicU64,
    errors: AtomicU64,
    first_errors: parking_lot::Mutex<Vec<String>>,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn fail(&self, msg: String) {
        Counters::add(&self.errors, 1);
        let mut first = self.first_errors.lock();
        if first.len() < 5 {
            first.push(msg);
        }
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &SoakArgs) -> Result<Report, BenchError> {
    let storm = args.storm_size as usize;
    ctx.check_fds(storm + 16)?;
    let window = args.window.min(ctx.common.duration / 2.0);
    let sampler = Sampler::start(ctx.common.broker_pid);
    let mut o = OverloadStats::default();
    o.sample("baseline", sampler.now());
    let mut streams = Streams::new();
    for (name, qos) in [
        ("qos0", QoS::AtMostOnce),
        ("qos1", QoS::AtLeastOnce),
        ("qos2", QoS::ExactlyOnce),
    ] {
        streams.add(ctx, name, qos, args.stream_rate).await?;
    }
    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    // held by a storm while its connections are open, and by the samples
    let quiet = Arc::new(tokio::sync::Mutex::new(()));
    let mut workers = JoinSet::new();
    {
        let conn = connect(ctx, &ctx.client_id("retain", 0)).await?;
        let topics: Vec<ByteString> = (0..args.retained_topics)
            .map(|i| ctx.topic(&format!("r/{i}")))
            .collect();
        let filter = ctx.topic("r/+");
        let (c, stop) = (Arc::clone(&counters), stop.clone());
        let rate = args.stream_rate;
        let timeout = ctx.connect_timeout();
        workers.spawn(async move {
            if let Err(e) = retained_worker(conn, &topics, filter, rate, &c, &stop, timeout).await {
                c.fail(format!("retained worker: {e}"));
            }
        });
    }
    {
        let endpoint = Arc::clone(&ctx.endpoint);
        let id = ctx.client_id("takeover", 0);
        let every = Duration::from_millis(args.takeover_every_ms);
        let (c, stop) = (Arc::clone(&counters), stop.clone());
        workers.spawn(async move {
            takeover_worker(&endpoint, &id, every, &c, &stop).await;
        });
    }
    // the storms need the run's context (connect_all), so they run on this task, joined
    // with the measurements below
    let storm_plan = StormPlan {
        specs: (0..storm)
            .map(|i| ClientSpec {
                id: ctx.client_id("storm", i),
                filters: vec![ctx.topic(&format!("storm/{i}"))],
            })
            .collect(),
        every: Duration::from_secs_f64(args.storm_every),
        counters: Arc::clone(&counters),
        stop: stop.clone(),
        quiet: Arc::clone(&quiet),
    };

    let begin = Instant::now();
    let end_at = begin + ctx.duration();
    let storms = storm_loop(ctx, storm_plan, end_at);
    let measure = async {
        pause(window).await;
        let start = streams.phase("start");
        let start_sample = {
            let _q = quiet.lock().await;
            sampler.now()
        };
        let middle_secs = (ctx.common.duration - 2.0 * window).max(0.0);
        pause(middle_secs).await;
        let middle = streams.phase("middle");
        pause(window).await;
        let end = streams.phase("end");
        let end_sample = {
            let _q = quiet.lock().await;
            sampler.now()
        };
        (start, middle, end, start_sample, end_sample)
    };
    let ((start, middle, end, start_sample, end_sample), ()) = tokio::join!(measure, storms);
    stop.cancel();
    while workers.join_next().await.is_some() {}
    let (stream_errors, stream_msgs) = streams.stop().await;
    o.sample("start", start_sample);
    o.sample("end", end_sample);
    o.sample("peak", sampler.take_peak());
    pause(2.0).await;
    o.sample("after_stop", sampler.now());

    let c = &counters;
    o.figure("duration_s", ctx.common.duration);
    o.figure("window_s", window);
    o.figure(
        "retained_published",
        Counters::get(&c.retained_published) as f64,
    );
    o.figure(
        "retained_received",
        Counters::get(&c.retained_received) as f64,
    );
    o.figure("takeovers", Counters::get(&c.takeovers) as f64);
    o.figure(
        "takeover_old_connection_not_closed",
        Counters::get(&c.takeover_old_not_closed) as f64,
    );
    o.figure("storms", Counters::get(&c.storms) as f64);
    o.figure(
        "storm_connections",
        Counters::get(&c.storm_connections) as f64,
    );
    let sent_total = start.sent + middle.sent + end.sent;
    let received_total = start.received + middle.received + end.received;
    o.figure("stream_messages_sent", sent_total as f64);
    o.figure("stream_messages_received", received_total as f64);
    check_soak(&mut o, args, &start, &end);
    o.check(
        "every session takeover closed the old connection ([MQTT-3.1.4-2])",
        Counters::get(&c.takeover_old_not_closed) == 0 && Counters::get(&c.takeovers) > 0,
        format!(
            "{} takeovers, {} old connections left open",
            Counters::get(&c.takeovers),
            Counters::get(&c.takeover_old_not_closed)
        ),
    );
    let mut errors: Vec<String> = c.first_errors.lock().clone();
    errors.extend(stream_msgs);
    o.phases = vec![start, middle, end];
    finish(ctx, o, errors, stream_errors)
}

/// The start/end comparisons: RSS, fds, p99 latency and delivery rate.
fn check_soak(o: &mut OverloadStats, args: &SoakArgs, start: &Phase, end: &Phase) {
    if let (Some(s), Some(e)) = (o.broker.get("start").copied(), o.broker.get("end").copied()) {
        if let (Some(s), Some(e)) = (s.rss_kb, e.rss_kb) {
            let bound = (s as f64 * (1.0 + args.rss_tolerance_pct / 100.0)) as u64
                + args.probe.rss_slack_kb();
            o.check(
                &format!(
                    "RSS at the end within {} % + {} MiB of the start",
                    args.rss_tolerance_pct, args.probe.rss_slack_mb
                ),
                e <= bound,
                format!("{s} KiB -> {e} KiB (bound {bound} KiB)"),
            );
        }
        if let (Some(s), Some(e)) = (s.fds, e.fds) {
            o.check(
                &format!("fds at the end within {} of the start", args.probe.fd_slack),
                e <= s + args.probe.fd_slack,
                format!("{s} -> {e}"),
            );
        }
    }
    if let (Some(s), Some(e)) = (&start.latency_us, &end.latency_us) {
        let bound = (s.p99 as f64 * args.latency_factor) as u64 + 1000;
        o.check(
            &format!(
                "p99 latency at the end within {} x the start + 1 ms",
                args.latency_factor
            ),
            e.p99 <= bound,
            format!("{} µs -> {} µs (bound {bound} µs)", s.p99, e.p99),
        );
    } else {
        o.check(
            "latency measured in both windows",
            false,
            "no deliveries".into(),
        );
    }
    o.check_bystander(start, end, args.probe.min_bystander_pct);
}

/// The reconnect storms of a soak.
struct StormPlan {
    /// The storm's clients, each subscribing to a topic of its own.
    specs: Vec<ClientSpec>,
    /// Time between two storms.
    every: Duration,
    counters: Arc<Counters>,
    stop: CancellationToken,
    /// Held while a storm's connections are open (the samples wait for it).
    quiet: Arc<tokio::sync::Mutex<()>>,
}

/// Every `every` until `end_at`: connects all the storm's clients (each subscribing to a topic
/// of its own), then disconnects them.
async fn storm_loop(ctx: &Ctx, plan: StormPlan, end_at: Instant) {
    let c = &plan.counters;
    loop {
        let next = Instant::now() + plan.every;
        if next >= end_at || plan.stop.is_cancelled() {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
        let _q = plan.quiet.lock().await;
        match connect_all(ctx, plan.specs.clone()).await {
            Ok(conns) => {
                Counters::add(&c.storms, 1);
                Counters::add(&c.storm_connections, conns.len() as u64);
                let mut closing = JoinSet::new();
                for conn in conns {
                    closing.spawn(conn.disconnect());
                }
                while closing.join_next().await.is_some() {}
            }
            Err(e) => c.fail(format!("reconnect storm: {e}")),
        }
    }
}

/// Every `every`, a new connection with `id` takes the session over; the old connection must
/// be closed by the broker within 2 s ([MQTT-3.1.4-2]).
async fn takeover_worker(
    endpoint: &crate::client::Endpoint,
    id: &str,
    every: Duration,
    c: &Counters,
    stop: &CancellationToken,
) {
    let mut current: Option<Conn> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let new = match endpoint.connect(id).await {
            Ok(conn) => conn,
            Err(e) => {
                c.fail(format!("takeover connect: {e}"));
                continue;
            }
        };
        if let Some(mut old) = current.take() {
            Counters::add(&c.takeovers, 1);
            let closed = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match old.recv().await {
                        Ok(Packet::PingResp) => {}
                        // MQTT 5 would send DISCONNECT 0x8E; 3.1.1 just closes
                        Ok(Packet::Disconnect(_)) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if closed.is_err() {
                Counters::add(&c.takeover_old_not_closed, 1);
            }
        }
        current = Some(new);
    }
    if let Some(conn) = current {
        conn.disconnect().await;
    }
}

/// Publishes retained QoS 1 messages round-robin over `topics` at `rate`/4 per second (every
/// 10th one empty: [MQTT-3.3.1-10] it clears the topic), and every 50 publishes subscribes to
/// `filter` (receiving every retained message, [MQTT-3.3.1-6]) and unsubscribes. Clears every
/// topic at the end.
async fn retained_worker(
    mut conn: Conn,
    topics: &[ByteString],
    filter: ByteString,
    rate: f64,
    c: &Counters,
    stop: &CancellationToken,
    timeout: Duration,
) -> Result<(), ClientError> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(4.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut id: u16 = 0;
    let mut next_id = move || {
        id = id.checked_add(1).unwrap_or(1);
        NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN)
    };
    let mut n: u64 = 0;
    let payload = Bytes::from_static(b"retained-payload");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(topic) = topics.get((n % topics.len().max(1) as u64) as usize) else {
            break;
        };
        let body = if n % 10 == 9 {
            Bytes::new()
        } else {
            payload.clone()
        };
        publish_retained(&mut conn, topic.clone(), body, next_id(), c, timeout).await?;
        Counters::add(&c.retained_published, 1);
        n += 1;
        if n.is_multiple_of(50) {
            let sub = next_id();
            conn.queue(&Packet::Subscribe(Subscribe {
                packet_id: sub,
                filters: vec![(filter.clone(), SubscriptionOptions::default())],
                properties: None,
            }))?;
            conn.flush().await?;
            conn.await_reply_with(sub, true, timeout, |_| {
                Counters::add(&c.retained_received, 1)
            })
            .await?;
            let unsub = next_id();
            conn.queue(&Packet::Unsubscribe(Unsubscribe {
                packet_id: unsub,
                filters: vec![filter.clone()],
                properties: None,
            }))?;
            conn.flush().await?;
            conn.await_reply_with(unsub, false, timeout, |_| {
                Counters::add(&c.retained_received, 1)
            })
            .await?;
        }
    }
    for topic in topics {
        publish_retained(
            &mut conn,
            topic.clone(),
            Bytes::new(),
            next_id(),
            c,
            timeout,
        )
        .await?;
    }
    conn.disconnect().await;
    Ok(())
}

/// One retained QoS 1 PUBLISH and its PUBACK (retained messages of an earlier SUBSCRIBE may
/// arrive meanwhile: counted).
async fn publish_retained(
    conn: &mut Conn,
    topic: ByteString,
    payload: Bytes,
    packet_id: NonZeroU16,
    c: &Counters,
    timeout: Duration,
) -> Result<(), ClientError> {
    conn.queue(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic,
        packet_id: Some(packet_id),
        payload,
        properties: None,
    }))?;
    conn.flush().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => return Err(ClientError::Timeout("PUBACK of a retained message")),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(Packet::PubAck(a))) if a.packet_id == packet_id => return Ok(()),
            Ok(Ok(Packet::Publish(p))) => {
                Counters::add(&c.retained_received, 1);
                conn.ack_incoming(&p)?;
            }
            Ok(Ok(Packet::PingResp)) => {}
            Ok(Ok(other)) => return Err(ClientError::Unexpected(other.name())),
        }
    }
}
