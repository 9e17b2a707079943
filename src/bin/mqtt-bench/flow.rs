//! Runs a message flow: publishers with their topics, subscribers with their filters and the
//! publishers whose messages each expects. Fan-in, fan-out, pairs and latency are all flows.
//!
//! Subscribers connect and subscribe first, then publishers connect; all publishers start
//! together, stop at the bound, and wait for their acknowledgements; then the subscribers drain
//! until everything expected arrived or `--drain` ran out.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use tokio_util::sync::CancellationToken;

use crate::ctx::{BenchError, ClientSpec, Ctx, connect_all};
use crate::proc::ProcSample;
use crate::progress::{Kind, Progress};
use crate::publisher::{self, PubParams, PubResult};
use crate::report::{BrokerProcess, MessageStats, Report, per_second, secs};
use crate::stats::LatencySummary;
use crate::stats::{Live, SharedLatency};
use crate::subscriber::{self, Sinks, SubResult};

/// Delay between the end of setup and the first publish, so all publishers start together.
const START_DELAY: Duration = Duration::from_millis(20);

/// Latency histograms the subscribers share (each behind a mutex).
const LATENCY_STRIPES: usize = 16;

/// Error messages kept in the report.
const MAX_ERROR_MESSAGES: usize = 5;

/// One subscriber of a flow.
#[derive(Debug, Clone)]
pub struct SubSpec {
    /// Filters it subscribes to.
    pub filters: Vec<ByteString>,
    /// Indexes of the publishers whose every message it should receive.
    pub publishers: Range<u32>,
}

/// A flow to run.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The topic of each publisher (publisher `i` publishes to `publishers[i]`).
    pub publishers: Vec<ByteString>,
    /// The subscribers.
    pub subscribers: Vec<SubSpec>,
    /// Messages per second per publisher, `None` for closed loop.
    pub rate: Option<f64>,
}

/// Runs `topo` and reports.
pub async fn run(ctx: &Ctx, topo: Topology) -> Result<Report, BenchError> {
    let n_pub = topo.publishers.len();
    let n_sub = topo.subscribers.len();
    ctx.check_fds(n_pub + n_sub)?;
    let broker_start = ctx.sample_broker();

    let sub_specs = topo
        .subscribers
        .iter()
        .enumerate()
        .map(|(i, s)| ClientSpec {
            id: ctx.client_id("sub", i),
            filters: s.filters.clone(),
        })
        .collect();
    let sub_conns = connect_all(ctx, sub_specs).await?;
    let pub_specs = (0..n_pub)
        .map(|i| ClientSpec {
            id: ctx.client_id("pub", i),
            filters: Vec::new(),
        })
        .collect();
    let pub_conns = connect_all(ctx, pub_specs).await?;

    let progress = Progress::start(
        ctx.live.clone(),
        Kind::Messages,
        ctx.origin,
        ctx.common.quiet,
        ctx.common.json,
    );
    let start = Instant::now() + START_DELAY;
    let drain = Duration::from_secs_f64(ctx.common.drain);
    let params = PubParams {
        qos: ctx.qos(),
        payload_len: ctx.common.payload,
        rate: topo.rate,
        messages: ctx.common.messages,
        inflight: ctx.common.inflight,
        origin: ctx.origin,
        start,
        stop: start + ctx.duration(),
        drain,
        live: ctx.live.clone(),
    };

    let stop = CancellationToken::new();
    let sinks = Sinks {
        origin: ctx.origin,
        live: ctx.live.clone(),
        latency: Arc::new(SharedLatency::new(LATENCY_STRIPES.min(n_sub))),
    };
    let sub_tasks: Vec<_> = sub_conns
        .into_iter()
        .zip(&topo.subscribers)
        .enumerate()
        .map(|(i, (conn, spec))| {
            tokio::spawn(subscriber::run(
                conn,
                i,
                spec.publishers.clone(),
                sinks.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let pub_tasks: Vec<_> = pub_conns
        .into_iter()
        .zip(&topo.publishers)
        .enumerate()
        .map(|(i, (conn, topic))| {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            tokio::spawn(publisher::run(conn, index, topic.clone(), params.clone()))
        })
        .collect();

    let mut pubs = Vec::with_capacity(n_pub);
    for task in pub_tasks {
        pubs.push(task.await.unwrap_or_else(|e| PubResult {
            error: Some(format!("publisher task failed: {e}")),
            ..PubResult::default()
        }));
    }

    // expected deliveries: each message once per subscriber that expects its publisher
    let copies = copies_per_publisher(n_pub, &topo.subscribers);
    let expected: u64 = pubs
        .iter()
        .zip(&copies)
        .map(|(p, &c)| p.sent.saturating_mul(c))
        .sum();
    let done_ns = pubs.iter().map(|p| p.done_ns).max().unwrap_or(0);
    let drain_until = ctx.origin + Duration::from_nanos(done_ns) + drain;
    while Live::get(&ctx.live.delivered) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let broker_end = ctx.sample_broker();
    stop.cancel();
    let mut subs = Vec::with_capacity(n_sub);
    for task in sub_tasks {
        match task.await {
            Ok(r) => subs.push(r),
            Err(e) => {
                Live::add(&ctx.live.errors, 1);
                subs.push(SubResult {
                    unique: 0,
                    duplicates: 0,
                    out_of_order: 0,
                    foreign: 0,
                    last_ns: None,
                    error: Some(format!("subscriber task failed: {e}")),
                });
            }
        }
    }
    progress.finish().await;

    let latency = sinks.latency.merged();
    Ok(build_report(
        ctx,
        &topo,
        &pubs,
        &subs,
        expected,
        latency.summary(),
        (broker_start, broker_end),
    ))
}

/// How many subscribers expect each publisher's messages.
fn copies_per_publisher(n_pub: usize, subscribers: &[SubSpec]) -> Vec<u64> {
    let mut copies = vec![0u64; n_pub];
    for s in subscribers {
        for p in s.publishers.clone() {
            if let Some(c) = usize::try_from(p).ok().and_then(|p| copies.get_mut(p)) {
                *c += 1;
            }
        }
    }
    copies
}

fn build_report(
    ctx: &Ctx,
    topo: &Topology,
    pubs: &[PubResult],
    subs: &[SubResult],
    expected: u64,
    latency: Option<LatencySummary>,
    (broker_start, broker_end): (Option<ProcSample>, Option<ProcSample>),
) -> Report {
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let acked: u64 = pubs.iter().map(|p| p.acked).sum();
    let delivered: u64 = subs.iter().map(|s| s.unique).sum();
    let lost = expected.saturating_sub(delivered);
    let first_ns = pubs.iter().filter_map(|p| p.first_ns).min();
    let last_pub_ns = pubs.iter().filter_map(|p| p.last_ns).max();
    let last_del_ns = subs.iter().filter_map(|s| s.last_ns).max();
    let publish_window = match (first_ns, last_pub_ns) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let delivery_window = match (first_ns, last_del_ns) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    };
    let soft: u64 = pubs.iter().map(|p| p.soft_errors).sum();
    let foreign: u64 = subs.iter().map(|s| s.foreign).sum();
    let mut error_messages: Vec<String> = Vec::new();
    let failures = pubs
        .iter()
        .filter_map(|p| p.error.as_deref())
        .chain(subs.iter().filter_map(|s| s.error.as_deref()));
    for e in failures {
        if error_messages.len() < MAX_ERROR_MESSAGES && !error_messages.iter().any(|m| m == e) {
            error_messages.push(e.to_string());
        }
    }
    if soft > 0 {
        error_messages.push(format!(
            "{soft} acknowledgement(s) for unknown packet ids, or writes left unflushed at the deadline"
        ));
    }
    if foreign > 0 {
        error_messages.push(format!(
            "{foreign} message(s) without a valid stamp of this run"
        ));
    }
    let failed_tasks = pubs.iter().filter(|p| p.error.is_some()).count()
        + subs.iter().filter(|s| s.error.is_some()).count();
    let qos = ctx.common.qos;
    let max_lag = topo
        .rate
        .map(|_| pubs.iter().map(|p| p.max_lag_ns).max().unwrap_or(0) as f64 / 1e6);
    Report {
        scenario: ctx.scenario,
        broker: ctx.endpoint.addr.to_string(),
        params: serde_json::Value::Null,
        elapsed_s: secs(ctx.now_ns()),
        errors: failed_tasks as u64 + soft + foreign,
        error_messages,
        messages: Some(MessageStats {
            publishers: pubs.len() as u64,
            subscribers: subs.len() as u64,
            qos,
            payload: ctx.common.payload,
            mode: if topo.rate.is_some() {
                "open-loop"
            } else {
                "closed-loop"
            },
            sent,
            acked: (qos > 0).then_some(acked),
            expected,
            delivered,
            lost,
            loss_pct: if expected > 0 {
                (lost as f64 * 100.0 / expected as f64 * 1000.0).round() / 1000.0
            } else {
                0.0
            },
            duplicates: subs.iter().map(|s| s.duplicates).sum(),
            out_of_order: subs.iter().map(|s| s.out_of_order).sum(),
            publish_window_s: secs(publish_window),
            delivery_window_s: secs(delivery_window),
            sent_per_s: per_second(sent, publish_window as f64 / 1e9),
            delivered_per_s: per_second(delivered, delivery_window as f64 / 1e9),
            max_schedule_lag_ms: max_lag.map(|ms| (ms * 1000.0).round() / 1000.0),
        }),
        latency_us: latency,
        connections: None,
        churn: None,
        overload: None,
        broker_process: broker_process(ctx, broker_start, None, broker_end),
        sessions: None,
    }
}

/// The broker section from its samples, when `--broker-pid` was given.
pub fn broker_process(
    ctx: &Ctx,
    start: Option<ProcSample>,
    connected: Option<ProcSample>,
    end: Option<ProcSample>,
) -> Option<BrokerProcess> {
    Some(BrokerProcess {
        pid: ctx.common.broker_pid?,
        start: start?,
        connected,
        end: end?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_follow_the_subscriber_ranges() {
        let sub = |r: Range<u32>| SubSpec {
            filters: vec![],
            publishers: r,
        };
        // fan-in: one subscriber of all
        assert_eq!(copies_per_publisher(3, &[sub(0..3)]), vec![1, 1, 1]);
        // fan-out: three subscribers of publisher 0
        assert_eq!(
            copies_per_publisher(1, &[sub(0..1), sub(0..1), sub(0..1)]),
            vec![3]
        );
        // pairs
        assert_eq!(copies_per_publisher(2, &[sub(0..1), sub(1..2)]), vec![1, 1]);
        // out-of-range publishers are ignored
        assert_eq!(copies_per_publisher(1, &[sub(0..5)]), vec![1]);
    }
}
