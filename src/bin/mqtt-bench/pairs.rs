//! pairs: N publishers, publisher i to topic i, subscribed by subscriber i only.

use crate::cli::PairsArgs;
use crate::ctx::{BenchError, Ctx};
use crate::flow::{self, SubSpec, Topology};
use crate::report::Report;

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &PairsArgs) -> Result<Report, BenchError> {
    let topics: Vec<_> = (0..args.pairs).map(|i| ctx.topic(&i.to_string())).collect();
    let subscribers = topics
        .iter()
        .zip(0..args.pairs)
        .map(|(topic, i)| SubSpec {
            filters: vec![topic.clone()],
            publishers: i..i + 1,
        })
        .collect();
    let topo = Topology {
        publishers: topics,
        subscribers,
        rate: ctx.common.rate,
    };
    flow::run(ctx, topo).await
}
