//! flood: connect/CONNECT/CONNACK/DISCONNECT churn at the highest rate the churners reach,
//! plus half-open TCP connections that never send CONNECT (the broker's connect timeout must
//! close them), while a bystander pair is measured. Afterwards the broker's RSS and open files
//! must return to their baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::FloodArgs;
use crate::ctx::{BenchError, Ctx};
use crate::overload::{self, Opening, finish};
use crate::probe::pause;
use crate::report::{Report, per_second};
use crate::stats::Live;

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &FloodArgs) -> Result<Report, BenchError> {
    let churners = args.churners as usize;
    let half_open = args.half_open as usize;
    ctx.check_fds(churners + half_open + 4)?;
    let Opening {
        sampler,
        mut o,
        mut by,
        before,
    } = overload::open(ctx, &args.probe).await?;
    let start = Instant::now();
    let until = start + ctx.duration();
    let ops = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut churn = JoinSet::new();
    for c in 0..churners {
        let endpoint = Arc::clone(&ctx.endpoint);
        let id = ctx.client_id("churn", c);
        let (ops, failures, live) = (Arc::clone(&ops), Arc::clone(&failures), ctx.live.clone());
        churn.spawn(async move {
            let mut first_error = None;
            while Instant::now() < until {
                match endpoint.connect(&id).await {
                    Ok(conn) => {
                        conn.disconnect().await;
                        ops.fetch_add(1, Ordering::Relaxed);
                        Live::add(&live.ops, 1);
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| format!("churner {id}: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            first_error
        });
    }

    // half-open sockets: TCP only, no CONNECT; each watcher reports when the broker closed it
    let stop = CancellationToken::new();
    let mut watchers = JoinSet::new();
    let mut open_failures = 0u64;
    let mut opened = 0u64;
    for _ in 0..half_open {
        if Instant::now() >= until {
            break;
        }
        let opened_at = Instant::now();
        match tokio::time::timeout(ctx.connect_timeout(), TcpStream::connect(ctx.endpoint.addr))
            .await
        {
            Ok(Ok(mut stream)) => {
                opened += 1;
                let stop = stop.clone();
                watchers.spawn(async move {
                    let mut buf = [0u8; 64];
                    tokio::select! {
                        _ = stop.cancelled() => None,
                        // 0 bytes (FIN) or an error (RST): the broker closed it
                        _ = stream.read(&mut buf) => Some(opened_at.elapsed()),
                    }
                });
            }
            _ => open_failures += 1,
        }
    }
    let opened_in = start.elapsed();

    let mut errors = Vec::new();
    while let Some(joined) = churn.join_next().await {
        match joined {
            Ok(Some(e)) => errors.push(e),
            Ok(None) => {}
            Err(e) => errors.push(format!("churner task: {e}")),
        }
    }
    let churn_secs = start.elapsed().as_secs_f64();
    let during = by.phase("during");
    o.sample("peak_during", sampler.take_peak());
    stop.cancel();
    let mut closed = Vec::new();
    while let Some(joined) = watchers.join_next().await {
        if let Ok(Some(after)) = joined {
            closed.push(after);
        }
    }
    drop(watchers);

    // settle, then the bystander's `after` phase
    pause(args.probe.phase).await;
    let _ = by.phase("settle");
    pause(args.probe.phase).await;
    let after = by.phase("after");
    o.sample("after", sampler.now());
    let (stream_errors, stream_msgs) = by.stop().await;
    errors.extend(stream_msgs);

    let n_ops = ops.load(Ordering::Relaxed);
    let n_fail = failures.load(Ordering::Relaxed);
    o.figure("churners", churners as f64);
    o.figure("churn_connections", n_ops as f64);
    o.figure("churn_failures", n_fail as f64);
    o.figure("churn_connections_per_s", per_second(n_ops, churn_secs));
    o.figure("half_open_requested", half_open as f64);
    o.figure("half_open_opened", opened as f64);
    o.figure("half_open_open_failures", open_failures as f64);
    o.figure("half_open_opened_in_s", round3(opened_in.as_secs_f64()));
    o.figure("half_open_closed_by_broker", closed.len() as f64);
    if let (Some(min), Some(max)) = (closed.iter().min(), closed.iter().max()) {
        o.figure("half_open_close_min_s", round3(min.as_secs_f64()));
        o.figure("half_open_close_max_s", round3(max.as_secs_f64()));
    }
    o.check_bystander(&before, &during, args.probe.min_bystander_pct);
    o.check(
        "churn connections all accepted",
        n_fail == 0 && n_ops > 0,
        format!("{n_ops} accepted, {n_fail} failed"),
    );
    if ctx.common.duration >= args.broker_connect_timeout + 2.0 {
        o.check(
            "every half-open socket closed by the broker's connect timeout",
            closed.len() as u64 == opened && open_failures == 0,
            format!(
                "{} of {opened} closed ({open_failures} could not be opened), timeout {} s",
                closed.len(),
                args.broker_connect_timeout
            ),
        );
    }
    o.check_returns(
        "with_bystander",
        "after",
        args.probe.rss_slack_kb(),
        args.probe.fd_slack,
    );
    o.phases = vec![before, during, after];
    finish(ctx, o, errors, stream_errors)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
