//! `mqtt-bench`: a load generator for any MQTT 3.1.1 broker, built on this crate's codec, so
//! the same tool measures `mqtt-server` and its peers (Mosquitto, rumqttd, ...).
//!
//! Scenarios: fan-in, fan-out, pairs, latency, connections, churn (see `--help`), and the
//! overload scenarios slow-consumer, flood, huge-packet and soak, which attack the broker while
//! a bystander pair is measured and check what they find (a failed check is an error). Each reports
//! messages sent, delivered, lost and errors (or connections, or churn operations) as a table,
//! or as JSON with `--json`, and stops by itself within its time bounds. With
//! `--persistent-sessions` every client keeps a session on the broker (Clean Session 0), and
//! those sessions are discarded at the end of the run (see `sessions`).

mod churn;
mod cli;
mod client;
mod connections;
mod ctx;
mod fanin;
mod fanout;
mod fdlimit;
mod flood;
mod flow;
mod huge;
mod latency;
mod overload;
mod pairs;
mod probe;
mod proc;
mod progress;
mod publisher;
mod report;
mod sessions;
mod slow;
mod soak;
mod stamp;
mod stats;
mod subscriber;
mod tracker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cli::{Cli, Scenario};
use crate::client::Endpoint;
use crate::ctx::{BenchError, Ctx};
use crate::report::Report;
use crate::stats::Live;

/// Connections one loopback source address serves comfortably (the ephemeral port range has
/// about 28 000 ports).
const CONNECTIONS_PER_SOURCE: u32 = 25_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let origin = Instant::now();
    let nofile = match fdlimit::raise() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("mqtt-bench: cannot read or raise the open-file limit: {e}");
            rlimit::Resource::NOFILE.get_soft().unwrap_or(1024)
        }
    };
    let common = cli.scenario.common();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = common.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = common.json;
    match runtime.block_on(run(&cli.scenario, origin, nofile)) {
        Ok(mut report) => {
            report.params = cli.scenario.params();
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if report.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("mqtt-bench: {e}");
            match e {
                BenchError::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(scenario: &Scenario, origin: Instant, nofile: u64) -> Result<Report, BenchError> {
    let common = scenario.common().clone();
    let addr = resolve(&common.host, common.port).await?;
    let mut bind_addrs = common.bind_addrs.clone();
    if let Scenario::Connections(args) = scenario
        && bind_addrs.is_empty()
        && addr.ip().is_loopback()
        && addr.is_ipv4()
    {
        bind_addrs = loopback_sources(args.connections);
        if bind_addrs.len() > 1 && !common.quiet {
            eprintln!(
                "mqtt-bench: using {} loopback source addresses 127.0.0.1..127.0.0.{}",
                bind_addrs.len(),
                bind_addrs.len()
            );
        }
    }
    let endpoint = Endpoint::new(
        addr,
        common.username.clone(),
        common.password.clone(),
        common.keep_alive,
        Duration::from_secs_f64(common.connect_timeout),
        bind_addrs,
        common.persistent_sessions,
    );
    let prefix = common
        .client_prefix
        .clone()
        .unwrap_or_else(|| format!("mb-{}", std::process::id()));
    if prefix.is_empty() || prefix.contains(['+', '#', '/']) {
        return Err(BenchError::Usage(
            "--client-prefix must be non-empty, without '+', '#' or '/'".into(),
        ));
    }
    let ctx = Ctx {
        common,
        scenario: scenario.name(),
        endpoint: Arc::new(endpoint),
        origin,
        live: Arc::new(Live::default()),
        prefix,
        nofile,
    };
    let result = match scenario {
        Scenario::FanIn(a) => fanin::run(&ctx, a).await,
        Scenario::FanOut(a) => fanout::run(&ctx, a).await,
        Scenario::Pairs(a) => pairs::run(&ctx, a).await,
        Scenario::Latency(a) => latency::run(&ctx, a).await,
        Scenario::Connections(a) => connections::run(&ctx, a).await,
        Scenario::Churn(a) => churn::run(&ctx, a).await,
        Scenario::SlowConsumer(a) => slow::run(&ctx, a).await,
        Scenario::Flood(a) => flood::run(&ctx, a).await,
        Scenario::HugePacket(a) => huge::run(&ctx, a).await,
        Scenario::Soak(a) => soak::run(&ctx, a).await,
    };
    // after a failed setup too: the sessions created before the failure are discarded
    let sessions = sessions::discard_all(&ctx.endpoint).await;
    if let Some(s) = &sessions
        && let Some(e) = &s.first_error
    {
        eprintln!(
            "mqtt-bench: warning: {} of {} persistent session(s) not discarded, the broker may \
             still hold them; first error: {e}",
            s.failed, s.persistent
        );
    }
    let mut report = result?;
    report.sessions = sessions;
    Ok(report)
}

/// The first address `host:port` resolves to.
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, BenchError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| BenchError::Failed(format!("cannot resolve {host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| BenchError::Failed(format!("{host} resolves to no address")))
}

/// Source addresses 127.0.0.1, 127.0.0.2, ... enough for `connections` (none needed for one).
fn loopback_sources(connections: u32) -> Vec<IpAddr> {
    let n = connections.div_ceil(CONNECTIONS_PER_SOURCE).clamp(1, 254);
    if n == 1 {
        return Vec::new();
    }
    (1..=n)
        .filter_map(|i| u8::try_from(i).ok())
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_sources_scale_with_connections() {
        assert!(loopback_sources(1000).is_empty());
        assert!(loopback_sources(25_000).is_empty());
        let three = loopback_sources(60_000);
        assert_eq!(three.len(), 3);
        assert_eq!(three.last(), Some(&IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))));
    }
}
