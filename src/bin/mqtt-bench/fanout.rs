//! fan-out: 1 publisher -> N subscribers of its topic.

use crate::cli::FanOutArgs;
use crate::ctx::{BenchError, Ctx};
use crate::flow::{self, SubSpec, Topology};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &FanOutArgs) -> Result<Report, BenchError> {
    let topic = ctx.topic("all");
    let sub = SubSpec {
        filters: vec![topic.clone()],
        publishers: 0..1,
    };
    let topo = Topology {
        publishers: vec![topic],
        subscribers: vec![sub; args.subscribers as usize],
        rate: ctx.common.rate,
    };
    flow::run(ctx, topo).await
}
