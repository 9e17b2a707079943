//! churn: M subscriptions held by K clients, while churners do SUBSCRIBE/SUBACK then
//! UNSUBSCRIBE/UNSUBACK pairs one at a time as fast as the broker answers. With --retained R,
//! R retained messages are stored first and every churn SUBSCRIBE matches all of them; they
//! arrive after the SUBACK, so the UNSUBACK time then includes receiving them.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use mqtt_server::QoS;
use mqtt_server::codec::{Packet, Publish, Subscribe, SubscriptionOptions, Unsubscribe};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ChurnArgs;
use crate::client::{ClientError, Conn};
use crate::ctx::{BenchError, ClientSpec, Ctx, connect_all};
use crate::flow::broker_process;
use crate::progress::{Kind, Progress};
use crate::report::{ChurnStats, Report, per_second, secs};
use crate::stats::{Latency, Live};

/// Retained messages published (or cleared) before waiting for their PUBACKs.
const RETAIN_BATCH: usize = 100;

/// What one churner did.
struct ChurnResult {
    ops: u64,
    suback: Latency,
    unsuback: Latency,
    retained_received: u64,
    finished: Instant,
    error: Option<String>,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &ChurnArgs) -> Result<Report, BenchError> {
    let m = args.subscriptions as usize;
    let k = (args.clients as usize).min(m);
    let churners = args.churners as usize;
    ctx.check_fds(k + churners + 1)?;
    let broker_start = ctx.sample_broker();
    let live = ctx.live.clone();

    // the existing subscriptions, spread round-robin over the holders
    let holders = connect_all(
        ctx,
        (0..k)
            .map(|j| ClientSpec {
                id: ctx.client_id("hold", j),
                filters: (j..m)
                    .step_by(k.max(1))
                    .map(|i| ctx.topic(&format!("s/{i}")))
                    .collect(),
            })
            .collect(),
    )
    .await?;
    let stop = CancellationToken::new();
    let mut holder_tasks = JoinSet::new();
    for mut conn in holders {
        let (stop, live) = (stop.clone(), live.clone());
        holder_tasks.spawn(async move {
            let result = conn.hold_idle(&stop).await;
            if result.is_err() {
                Live::add(&live.errors, 1);
            } else {
                conn.disconnect().await;
            }
            result.err().map(|e| format!("subscription holder: {e}"))
        });
    }

    let retained_topics: Vec<ByteString> = (0..args.retained)
        .map(|i| ctx.topic(&format!("r/{i}")))
        .collect();
    if !retained_topics.is_empty() {
        let who = ctx.client_id("retain", 0);
        let mut conn = ctx
            .endpoint
            .connect(&who)
            .await
            .map_err(|source| BenchError::Client {
                who: who.clone(),
                source,
            })?;
        let payload = Bytes::from(vec![0u8; ctx.common.payload]);
        publish_retained(&mut conn, &retained_topics, payload, ctx.connect_timeout())
            .await
            .map_err(|source| BenchError::Client { who, source })?;
        conn.disconnect().await;
    }

    let churn_conns = connect_all(
        ctx,
        (0..churners)
            .map(|c| ClientSpec {
                id: ctx.client_id("churn", c),
                filters: Vec::new(),
            })
            .collect(),
    )
    .await?;
    let progress = Progress::start(
        live.clone(),
        Kind::Churn,
        ctx.origin,
        ctx.common.quiet,
        ctx.common.json,
    );
    let begin = Instant::now();
    let until = begin + ctx.duration();
    let mut churn_tasks = Vec::new();
    for (c, conn) in churn_conns.into_iter().enumerate() {
        let filter_base = ctx.topic(&format!("c/{c}"));
        let retained_filter = (args.retained > 0).then(|| ctx.topic("r/+"));
        let plan = Plan {
            qos: ctx.qos(),
            until,
            ops: args.ops,
            timeout: ctx.connect_timeout(),
        };
        churn_tasks.push(tokio::spawn(churn(
            conn,
            filter_base,
            retained_filter,
            plan,
            live.clone(),
        )));
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for task in churn_tasks {
        match task.await {
            Ok(r) => results.push(r),
            Err(e) => errors.push(format!("churn task failed: {e}")),
        }
    }
    let broker_end = ctx.sample_broker();
    stop.cancel();
    while let Some(joined) = holder_tasks.join_next().await {
        if let Ok(Some(msg)) = joined {
            errors.push(msg);
        }
    }
    progress.finish().await;

    if !retained_topics.is_empty() {
        // [MQTT-3.3.1-10] a zero-byte retained message removes the retained message
        let who = ctx.client_id("retain", 1);
        match ctx.endpoint.connect(&who).await {
            Ok(mut conn) => {
                let cleared = publish_retained(
                    &mut conn,
                    &retained_topics,
                    Bytes::new(),
                    ctx.connect_timeout(),
                )
                .await;
                if let Err(e) = cleared {
                    errors.push(format!("clearing the retained messages: {e}"));
                }
                conn.disconnect().await;
            }
            Err(e) => errors.push(format!("clearing the retained messages: {e}")),
        }
    }

    let mut suback = Latency::new(3);
    let mut unsuback = Latency::new(3);
    let mut ops = 0;
    let mut retained_received = 0;
    let mut finished = begin;
    for r in &results {
        suback.merge(&r.suback);
        unsuback.merge(&r.unsuback);
        ops += r.ops;
        retained_received += r.retained_received;
        finished = finished.max(r.finished);
        if let Some(e) = &r.error {
            errors.push(e.clone());
        }
    }
    let window = finished.saturating_duration_since(begin);
    errors.truncate(5);
    Ok(Report {
        scenario: ctx.scenario,
        broker: ctx.endpoint.addr.to_string(),
        params: serde_json::Value::Null,
        elapsed_s: secs(ctx.now_ns()),
        errors: Live::get(&live.errors),
        error_messages: errors,
        messages: None,
        latency_us: None,
        connections: None,
        churn: Some(ChurnStats {
            existing_subscriptions: m as u64,
            holder_clients: k as u64,
            churners: churners as u64,
            retained: u64::from(args.retained),
            ops,
            window_s: secs(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX)),
            ops_per_s: per_second(ops, window.as_secs_f64()),
            suback_latency_us: suback.summary(),
            unsuback_latency_us: unsuback.summary(),
            retained_received,
        }),
        overload: None,
        broker_process: broker_process(ctx, broker_start, None, broker_end),
        sessions: None,
    })
}

/// The bounds and options of one churner.
struct Plan {
    qos: QoS,
    until: Instant,
    ops: Option<u64>,
    timeout: Duration,
}

/// Subscribe/unsubscribe pairs until `plan.until` or `plan.ops` pairs.
async fn churn(
    mut conn: Conn,
    filter_base: ByteString,
    retained_filter: Option<ByteString>,
    plan: Plan,
    live: std::sync::Arc<Live>,
) -> ChurnResult {
    let mut r = ChurnResult {
        ops: 0,
        suback: Latency::new(3),
        unsuback: Latency::new(3),
        retained_received: 0,
        finished: Instant::now(),
        error: None,
    };
    let mut next_id: u16 = 0;
    let mut id = || {
        next_id = next_id.checked_add(1).unwrap_or(1);
        NonZeroU16::new(next_id).unwrap_or(NonZeroU16::MIN)
    };
    let mut pairs = 0u64;
    let outcome: Result<(), ClientError> = async {
        while Instant::now() < plan.until && plan.ops.is_none_or(|n| pairs < n) {
            let filter = match &retained_filter {
                Some(f) => f.clone(),
                None => ByteString::from(format!("{filter_base}/{pairs}")),
            };
            let sub_id = id();
            conn.queue(&Packet::Subscribe(Subscribe {
                packet_id: sub_id,
                filters: vec![(
                    filter.clone(),
                    SubscriptionOptions {
                        qos: plan.qos,
                        ..Default::default()
                    },
                )],
                properties: None,
            }))?;
            let t0 = Instant::now();
            conn.flush().await?;
            let retained = &mut r.retained_received;
            let codes = conn
                .await_reply_with(sub_id, true, plan.timeout, |_| *retained += 1)
                .await?;
            r.suback.record(t0.elapsed());
            if let Some(&bad) = codes.iter().find(|&&c| c >= 0x80) {
                return Err(ClientError::SubscribeRefused(bad));
            }
            let unsub_id = id();
            conn.queue(&Packet::Unsubscribe(Unsubscribe {
                packet_id: unsub_id,
                filters: vec![filter],
                properties: None,
            }))?;
            let t1 = Instant::now();
            conn.flush().await?;
            // retained messages sent after the SUBACK arrive while this waits
            let retained = &mut r.retained_received;
            conn.await_reply_with(unsub_id, false, plan.timeout, |_| *retained += 1)
                .await?;
            r.unsuback.record(t1.elapsed());
            r.ops += 2;
            pairs += 1;
            Live::add(&live.ops, 2);
        }
        Ok(())
    }
    .await;
    r.finished = Instant::now();
    if let Err(e) = outcome {
        Live::add(&live.errors, 1);
        r.error = Some(format!("churner: {e}"));
    }
    conn.disconnect().await;
    r
}

/// Publishes one retained QoS 1 message per topic with `payload` and waits for the PUBACKs.
async fn publish_retained(
    conn: &mut Conn,
    topics: &[ByteString],
    payload: Bytes,
    timeout: Duration,
) -> Result<(), ClientError> {
    let mut next: u16 = 0;
    for batch in topics.chunks(RETAIN_BATCH) {
        let mut waiting = 0usize;
        for topic in batch {
            next = next.checked_add(1).unwrap_or(1);
            let packet_id = NonZeroU16::new(next);
            conn.queue(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: topic.clone(),
                packet_id,
                payload: payload.clone(),
                properties: None,
            }))?;
            waiting += 1;
        }
        conn.flush().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        while waiting > 0 {
            match tokio::time::timeout_at(deadline, conn.recv()).await {
                Err(_) => return Err(ClientError::Timeout("PUBACK of a retained message")),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Packet::PubAck(_))) => waiting -= 1,
                Ok(Ok(Packet::PingResp)) => {}
                Ok(Ok(other)) => return Err(ClientError::Unexpected(other.name())),
            }
        }
    }
    Ok(())
}
