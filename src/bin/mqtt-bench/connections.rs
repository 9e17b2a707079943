//! connections: opens N connections (at --connect-rate, --concurrency handshakes at a time,
//! from the --bind-addrs source addresses), reports the connect rate, then holds them idle for
//! --hold seconds and reports the broker's resident memory before, with the connections open,
//! and at the end of the hold (with --broker-pid).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::ConnectionsArgs;
use crate::ctx::{BenchError, Ctx};
use crate::flow::broker_process;
use crate::progress::{Kind, Progress};
use crate::report::{ConnStats, Report, per_second, secs};
use crate::stats::{Latency, Live};

/// Time allowed for all connections to close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one connection attempt.
enum Attempt {
    /// Accepted after this long, at this instant.
    Connected(Duration, Instant),
    /// Failed with this message.
    Failed(String),
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &ConnectionsArgs) -> Result<Report, BenchError> {
    let n = args.connections as usize;
    ctx.check_fds(n)?;
    let live = ctx.live.clone();
    let broker_start = ctx.sample_broker();
    let progress = Progress::start(
        live.clone(),
        Kind::Connections { target: n as u64 },
        ctx.origin,
        ctx.common.quiet,
        ctx.common.json,
    );

    let stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    let (tx, mut rx) = mpsc::unbounded_channel::<Attempt>();
    let mut tasks = JoinSet::new();
    let begin = Instant::now();
    let deadline = begin + ctx.duration();
    let mut attempted = 0usize;
    for i in 0..n {
        if let Some(rate) = args.connect_rate {
            let at = begin + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(at.min(deadline))).await;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => break,
        };
        let Ok(permit) = permit else { break };
        if Instant::now() >= deadline {
            break;
        }
        attempted += 1;
        let endpoint = ctx.endpoint.clone();
        let id = ctx.client_id("conn", i);
        let (tx, live, stop) = (tx.clone(), live.clone(), stop.clone());
        tasks.spawn(async move {
            let t0 = Instant::now();
            match endpoint.connect(&id).await {
                Ok(mut conn) => {
                    drop(permit);
                    Live::add(&live.connected, 1);
                    let _ = tx.send(Attempt::Connected(t0.elapsed(), Instant::now()));
                    match conn.hold_idle(&stop).await {
                        Ok(()) => {
                            conn.disconnect().await;
                            None
                        }
                        Err(e) => {
                            Live::add(&live.dropped, 1);
                            Some(format!("client {id} dropped: {e}"))
                        }
                    }
                }
                Err(e) => {
                    drop(permit);
                    Live::add(&live.failed, 1);
                    let _ = tx.send(Attempt::Failed(format!("client {id}: {e}")));
                    None
                }
            }
        });
    }
    drop(tx);

    // every attempt reports within the connect timeout
    let mut connect_time = Latency::new(3);
    let mut last_connack = begin;
    let mut errors: Vec<String> = Vec::new();
    for _ in 0..attempted {
        match rx.recv().await {
            Some(Attempt::Connected(took, at)) => {
                connect_time.record(took);
                last_connack = last_connack.max(at);
            }
            Some(Attempt::Failed(msg)) => {
                if errors.len() < 5 {
                    errors.push(msg);
                }
            }
            None => break,
        }
    }
    let connected = Live::get(&live.connected);
    let connect_window = last_connack.saturating_duration_since(begin);
    let broker_connected = ctx.sample_broker();

    let hold = Duration::from_secs_f64(args.hold);
    let hold_start = Instant::now();
    if connected > 0 {
        tokio::time::sleep(hold).await;
    }
    let held = hold_start.elapsed();
    let broker_end = ctx.sample_broker();
    stop.cancel();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Some(msg)) = joined
                && errors.len() < 5
            {
                errors.push(msg);
            }
        }
    })
    .await;
    tasks.abort_all();
    progress.finish().await;

    let failed = Live::get(&live.failed);
    let dropped = Live::get(&live.dropped);
    let not_attempted = (n - attempted) as u64;
    if not_attempted > 0 {
        errors.push(format!(
            "{not_attempted} connection(s) not attempted within --duration {} s",
            ctx.common.duration
        ));
    }
    let rss_per_connection_kb = match (broker_start, broker_end) {
        (Some(a), Some(b)) if connected > 0 => match (a.rss_kb, b.rss_kb) {
            (Some(a), Some(b)) => {
                let delta = b as f64 - a as f64;
                Some((delta / connected as f64 * 100.0).round() / 100.0)
            }
            _ => None,
        },
        _ => None,
    };
    let window_ns = u64::try_from(connect_window.as_nanos()).unwrap_or(u64::MAX);
    Ok(Report {
        scenario: ctx.scenario,
        broker: ctx.endpoint.addr.to_string(),
        params: serde_json::Value::Null,
        elapsed_s: secs(ctx.now_ns()),
        errors: failed + dropped + not_attempted,
        error_messages: errors,
        messages: None,
        latency_us: None,
        connections: Some(ConnStats {
            requested: n as u64,
            connected,
            failed,
            dropped,
            connect_window_s: secs(window_ns),
            connects_per_s: per_second(connected, connect_window.as_secs_f64()),
            connect_latency_us: connect_time.summary(),
            held_s: (held.as_secs_f64() * 1000.0).round() / 1000.0,
            rss_per_connection_kb,
        }),
        churn: None,
        overload: None,
        broker_process: broker_process(ctx, broker_start, broker_connected, broker_end),
        sessions: None,
    })
}
