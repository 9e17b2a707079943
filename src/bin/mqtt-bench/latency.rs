//! latency: 1 publisher at a fixed rate (--rate, default 1000 msg/s) -> 1 subscriber; the
//! report's latency percentiles are the result. Each payload carries its send time; the
//! subscriber reads the clock once per socket read, so the figure is publisher write to
//! subscriber read, broker and both TCP hops included.

use crate::cli::{DEFAULT_LATENCY_RATE, LatencyArgs};
use crate::ctx::{BenchError, Ctx};
use crate::flow::{self, SubSpec, Topology};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(ctx: &Ctx, _args: &LatencyArgs) -> Result<Report, BenchError> {
    let topic = ctx.topic("0");
    let topo = Topology {
        publishers: vec![topic.clone()],
        subscribers: vec![SubSpec {
            filters: vec![topic],
            publishers: 0..1,
        }],
        rate: Some(ctx.common.rate.unwrap_or(DEFAULT_LATENCY_RATE)),
    };
    flow::run(ctx, topo).await
}
