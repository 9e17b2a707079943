//! fan-in: N publishers -> 1 subscriber, on one shared topic or one topic per publisher (the
//! subscriber then subscribes to `bench/<prefix>/fan-in/+`).

use crate::cli::FanInArgs;
use crate::ctx::{BenchError, Ctx};
use crate::flow::{self, SubSpec, Topology};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &FanInArgs) -> Result<Report, BenchError> {
    let n = args.publishers;
    let (publishers, filter) = if args.distinct_topics {
        let topics = (0..n).map(|i| ctx.topic(&i.to_string())).collect();
        (topics, ctx.topic("+"))
    } else {
        let topic = ctx.topic("all");
        (vec![topic.clone(); n as usize], topic)
    };
    let topo = Topology {
        publishers,
        subscribers: vec![SubSpec {
            filters: vec![filter],
            publishers: 0..n,
        }],
        rate: ctx.common.rate,
    };
    flow::run(ctx, topo).await
}
