//! Command line: one subcommand per scenario, each taking the common options.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::stamp;

/// Load generator for any MQTT 3.1.1 broker: throughput, loss, latency, connections, churn.
#[derive(Debug, Parser)]
#[command(
    name = "mqtt-bench",
    version,
    after_help = "Every run is bounded: publishing stops after --duration seconds (or --messages \
per publisher), then subscribers drain for at most --drain seconds. Exit status: 0 when every \
connection worked, 1 when one failed (the broker's CONNACK code is printed) or broke during the \
run, 2 for usage errors."
)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios, each with its own options besides the common ones.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N publishers -> 1 subscriber, on one shared topic or one topic per publisher.
    FanIn(FanInArgs),
    /// 1 publisher -> N subscribers of one topic.
    FanOut(FanOutArgs),
    /// N publishers, each to its own subscriber on its own topic.
    Pairs(PairsArgs),
    /// 1 publisher at a fixed rate -> 1 subscriber: end-to-end latency percentiles.
    Latency(LatencyArgs),
    /// Connect rate, then N idle connections held, with the broker's memory per connection.
    Connections(ConnectionsArgs),
    /// Subscribe/unsubscribe rate while M other subscriptions exist.
    Churn(ChurnArgs),
    /// Overload: a QoS 0 and a QoS 1 subscriber that never read while publishers flood their
    /// topic; a bystander pair's rate before/during/after, the broker's RSS, inferred drops.
    SlowConsumer(SlowConsumerArgs),
    /// Overload: connect/disconnect churn plus half-open sockets that never send CONNECT;
    /// a bystander pair's rate, and the broker's RSS and fds returning to baseline.
    Flood(FloodArgs),
    /// Overload: fixed headers announcing huge packets (up to 268,435,455 bytes) whose body is
    /// sent slowly, before and after CONNECT: closed without allocating the announced size?
    HugePacket(HugePacketArgs),
    /// Overload: mixed traffic (QoS 0/1/2 streams, retained churn, session takeovers,
    /// reconnect storms) for --duration; RSS, fds and p99 latency at the end against the start.
    Soak(SoakArgs),
}

impl Scenario {
    /// The options every scenario shares.
    pub fn common(&self) -> &Common {
        match self {
            Scenario::FanIn(a) => &a.common,
            Scenario::FanOut(a) => &a.common,
            Scenario::Pairs(a) => &a.common,
            Scenario::Latency(a) => &a.common,
            Scenario::Connections(a) => &a.common,
            Scenario::Churn(a) => &a.common,
            Scenario::Soak(a) => &a.common,
            Scenario::HugePacket(a) => &a.common,
            Scenario::Flood(a) => &a.common,
            Scenario::SlowConsumer(a) => &a.common,
        }
    }

    /// The subcommand's name, as reported.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::FanIn(_) => "fan-in",
            Scenario::FanOut(_) => "fan-out",
            Scenario::Pairs(_) => "pairs",
            Scenario::Latency(_) => "latency",
            Scenario::Connections(_) => "connections",
            Scenario::Churn(_) => "churn",
            Scenario::Soak(_) => "soak",
            Scenario::HugePacket(_) => "huge-packet",
            Scenario::Flood(_) => "flood",
            Scenario::SlowConsumer(_) => "slow-consumer",
        }
    }

    /// The scenario's options as JSON, echoed in the report (the password is left out).
    pub fn params(&self) -> serde_json::Value {
        let value = match self {
            Scenario::FanIn(a) => serde_json::to_value(a),
            Scenario::FanOut(a) => serde_json::to_value(a),
            Scenario::Pairs(a) => serde_json::to_value(a),
            Scenario::Latency(a) => serde_json::to_value(a),
            Scenario::Connections(a) => serde_json::to_value(a),
            Scenario::Churn(a) => serde_json::to_value(a),
            Scenario::Soak(a) => serde_json::to_value(a),
            Scenario::HugePacket(a) => serde_json::to_value(a),
            Scenario::Flood(a) => serde_json::to_value(a),
            Scenario::SlowConsumer(a) => serde_json::to_value(a),
        };
        value.unwrap_or(serde_json::Value::Null)
    }
}

/// Options common to all scenarios.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// Broker host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker TCP port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// User name sent in CONNECT.
    #[arg(long)]
    pub username: Option<String>,
    /// Password sent in CONNECT (MQTT 3.1.1 allows it only with a user name).
    #[arg(long, requires = "username")]
    #[serde(skip)]
    pub password: Option<String>,
    /// QoS of publications and subscriptions (0, 1 or 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least 16: send time and sequence number).
    #[arg(long, default_value_t = 64, value_parser = parse_payload)]
    pub payload: usize,
    /// Seconds of publishing (or of connecting / churning): a hard stop.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub duration: f64,
    /// Messages per publisher (stops earlier than --duration when reached).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Messages per second per publisher (open loop). Without it publishers run closed loop,
    /// as fast as the in-flight window (QoS 1/2) or the socket (QoS 0) allows.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// QoS 1/2 messages a publisher may have unacknowledged. Mosquitto 2.0 (default
    /// max_inflight_messages 20) silently discards incoming QoS 2 messages beyond 20 in flight
    /// from a 3.1.1 client: use --inflight 20 or less against it at QoS 2.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// Seconds to wait after publishing for outstanding deliveries and acknowledgements
    /// (ends early once everything expected arrived).
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds_or_zero)]
    pub drain: f64,
    /// Broker process id: its resident memory and open files are sampled at start and end.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep-alive sent in CONNECT, in seconds (idle clients send PINGREQ at half of it).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Prefix of client identifiers and topics [default: `mb-PID`].
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// Local source addresses for client sockets, used round-robin (comma-separated), e.g.
    /// 127.0.0.1,127.0.0.2: about 28 000 connections fit per source address.
    #[arg(long, value_delimiter = ',')]
    pub bind_addrs: Vec<IpAddr>,
    /// Seconds allowed for one TCP connect + CONNACK, and for each SUBACK during setup.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub connect_timeout: f64,
    /// Connect every client (publishers too) with Clean Session 0 instead of 1, so that the
    /// broker keeps a session for each, and stores it when it has persistence: subscriptions
    /// and the QoS 1/2 messages queued or in flight for them. Client identifiers are fixed for
    /// the run (`<prefix>-<role>-<i>`); a session the broker already held for one (an earlier
    /// run with the same --client-prefix) is discarded before the run. At the end every
    /// client's session is discarded (CONNECT with Clean Session 1, then DISCONNECT), so a
    /// broker's store does not grow from run to run; the report counts those discards.
    #[arg(long)]
    pub persistent_sessions: bool,
    /// Worker threads of the load generator [default: number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

/// `fan-in` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct FanInArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Number of publishers.
    #[arg(long, default_value_t = 10, value_parser = parse_count)]
    pub publishers: u32,
    /// One topic per publisher (the subscriber uses a `+` wildcard) instead of one shared topic.
    #[arg(long)]
    pub distinct_topics: bool,
}

/// `fan-out` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct FanOutArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Number of subscribers of the one topic.
    #[arg(long, default_value_t = 10, value_parser = parse_count)]
    pub subscribers: u32,
}

/// `pairs` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct PairsArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Number of publisher/subscriber pairs.
    #[arg(long, default_value_t = 10, value_parser = parse_count)]
    pub pairs: u32,
}

/// `latency` options (the publish rate is --rate, 1000 msg/s when absent).
#[derive(Debug, Clone, Args, Serialize)]
pub struct LatencyArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
}

/// The publish rate of the latency scenario when --rate is not given.
pub const DEFAULT_LATENCY_RATE: f64 = 1000.0;

/// `connections` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ConnectionsArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000, value_parser = parse_count)]
    pub connections: u32,
    /// New connections per second (unlimited when absent; --concurrency still applies).
    #[arg(long, value_parser = parse_rate)]
    pub connect_rate: Option<f64>,
    /// Connection handshakes (TCP + CONNECT/CONNACK) in progress at once. Keep it below the
    /// broker's listen backlog (128 for tokio/std listeners, 100 for Mosquitto): beyond it the
    /// kernel drops SYNs and those connects take a 1 s retransmission.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Seconds to hold the connections idle once all are open.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds_or_zero)]
    pub hold: f64,
}

/// `churn` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ChurnArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Subscriptions that exist during the churn.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=16_777_216))]
    pub subscriptions: u32,
    /// Clients holding those subscriptions (spread round-robin).
    #[arg(long, default_value_t = 10, value_parser = parse_count)]
    pub clients: u32,
    /// Clients doing subscribe/unsubscribe pairs concurrently, each one at a time.
    #[arg(long, default_value_t = 1, value_parser = parse_count)]
    pub churners: u32,
    /// Retained messages stored first; each churn SUBSCRIBE then matches all of them (`+`),
    /// so the broker delivers them every time. Cleared at the end.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub retained: u32,
    /// Subscribe/unsubscribe pairs per churner (stops earlier than --duration when reached).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,
}

/// Options of the overload scenarios: the bystander pair and the tolerances of the checks.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ProbeArgs {
    /// Messages per second of the bystander pair (QoS 1 publisher -> subscriber on a topic of
    /// its own), measured before, during and after the attack.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub bystander_rate: f64,
    /// Seconds of the bystander's `before` and `after` phases (and of settling before `after`).
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    pub phase: f64,
    /// Check: the bystander delivers at least this percentage of its `before` rate during the
    /// attack.
    #[arg(long, default_value_t = 90.0, value_parser = parse_pct)]
    pub min_bystander_pct: f64,
    /// Check: the broker's RSS after the attack is at most this many MiB above its baseline
    /// (allocators keep some freed memory).
    #[arg(long, default_value_t = 16.0, value_parser = parse_mib)]
    pub rss_slack_mb: f64,
    /// Check: the broker's open files after the attack are at most this many above baseline.
    #[arg(long, default_value_t = 10)]
    pub fd_slack: u64,
}

impl ProbeArgs {
    /// [`ProbeArgs::rss_slack_mb`] in KiB.
    pub fn rss_slack_kb(&self) -> u64 {
        (self.rss_slack_mb * 1024.0) as u64
    }
}

/// `slow-consumer` options (the flood lasts --duration; --inflight is each flooding
/// publisher's QoS 1 window, --payload its payload size).
#[derive(Debug, Clone, Args, Serialize)]
pub struct SlowConsumerArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Bystander and checks.
    #[command(flatten)]
    #[serde(flatten)]
    pub probe: ProbeArgs,
    /// Publishers flooding the slow consumers' topic (QoS 1, closed loop).
    #[arg(long, default_value_t = 4, value_parser = parse_count)]
    pub publishers: u32,
}

/// `flood` options (the flood lasts --duration).
#[derive(Debug, Clone, Args, Serialize)]
pub struct FloodArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Bystander and checks.
    #[command(flatten)]
    #[serde(flatten)]
    pub probe: ProbeArgs,
    /// Concurrent connect/CONNECT/CONNACK/DISCONNECT loops, each as fast as the broker answers.
    #[arg(long, default_value_t = 16, value_parser = parse_count)]
    pub churners: u32,
    /// TCP connections opened at the start that never send CONNECT (each one file descriptor
    /// here and on the broker: mind the open-file limits).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub half_open: u32,
    /// The broker's connect timeout (`limits.connect_timeout_secs`, Mosquitto: none by default)
    /// in seconds: with --duration at least 2 s longer, every half-open socket must have been
    /// closed by the broker.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub broker_connect_timeout: f64,
}

/// `huge-packet` options (the attack lasts at most --duration).
#[derive(Debug, Clone, Args, Serialize)]
pub struct HugePacketArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Bystander and checks.
    #[command(flatten)]
    #[serde(flatten)]
    pub probe: ProbeArgs,
    /// Attacking connections: even ones announce a huge CONNECT as their first packet, odd
    /// ones connect properly and then announce a huge PUBLISH.
    #[arg(long, default_value_t = 8, value_parser = parse_count)]
    pub attackers: u32,
    /// Remaining length announced in the fixed header (at most 268,435,455, MQTT 2.2.3).
    #[arg(long, default_value_t = 268_435_455, value_parser = clap::value_parser!(u32).range(2..=268_435_455))]
    pub announced: u32,
    /// Body bytes each attacker sends per --interval-ms.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub chunk: u32,
    /// Milliseconds between two body chunks.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub interval_ms: u64,
}

/// `soak` options (mixed traffic for --duration).
#[derive(Debug, Clone, Args, Serialize)]
pub struct SoakArgs {
    /// Common options.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,
    /// Bystander and checks (the bystander is the soak's QoS 1 stream; --phase is unused).
    #[command(flatten)]
    #[serde(flatten)]
    pub probe: ProbeArgs,
    /// Messages per second of each of the QoS 0, 1 and 2 streams.
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    pub stream_rate: f64,
    /// Seconds of the start and end measurement windows (latency, delivery rate).
    #[arg(long, default_value_t = 20.0, value_parser = parse_seconds)]
    pub window: f64,
    /// Seconds between reconnect storms.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub storm_every: f64,
    /// Connections of one reconnect storm (opened at once, then closed).
    #[arg(long, default_value_t = 200, value_parser = parse_count)]
    pub storm_size: u32,
    /// Milliseconds between session takeovers (a new connection with the same client id).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub takeover_every_ms: u64,
    /// Retained topics churned (set, replaced, cleared) by the retained worker.
    #[arg(long, default_value_t = 100, value_parser = parse_count)]
    pub retained_topics: u32,
    /// Check: RSS at the end is at most this percentage above the start (plus --rss-slack-mb).
    #[arg(long, default_value_t = 25.0, value_parser = parse_pct)]
    pub rss_tolerance_pct: f64,
    /// Check: p99 latency of the end window is at most this factor times the start's, plus 1 ms.
    #[arg(long, default_value_t = 2.0, value_parser = parse_rate)]
    pub latency_factor: f64,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || !(0.0..=1000.0).contains(&v) {
        return Err("must be 0 to 1000 (percent)".into());
    }
    Ok(v)
}

fn parse_mib(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || !(0.0..=1_048_576.0).contains(&v) {
        return Err("must be 0 to 1048576 MiB".into());
    }
    Ok(v)
}

fn parse_payload(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    // 268 435 455 is the largest remaining length; leave room for the topic and header
    if !(stamp::STAMP_LEN..=256 * 1024 * 1024).contains(&n) {
        return Err(format!(
            "payload must be {} to 268435456 bytes (it carries a {}-byte timestamp and sequence)",
            stamp::STAMP_LEN,
            stamp::STAMP_LEN
        ));
    }
    Ok(n)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v = parse_seconds_or_zero(s)?;
    if v <= 0.0 {
        return Err("must be more than 0 seconds".into());
    }
    Ok(v)
}

fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || !(0.0..=31_536_000.0).contains(&v) {
        return Err("must be 0 to 31536000 seconds".into());
    }
    Ok(v)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err("must be more than 0 and at most 1e9 per second".into());
    }
    Ok(v)
}

/// A count of clients: 1 up to the number of publishers a sequence number can name.
fn parse_count(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n == 0 || n > stamp::MAX_PUBLISHERS {
        return Err(format!("must be 1 to {}", stamp::MAX_PUBLISHERS));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_common_options_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "mqtt-bench",
            "fan-in",
            "--publishers",
            "3",
            "--qos",
            "2",
            "--bind-addrs",
            "127.0.0.1,127.0.0.2",
            "--rate",
            "100",
        ]);
        let Ok(cli) = cli else {
            panic!("parse failed: {cli:?}");
        };
        let Scenario::FanIn(a) = &cli.scenario else {
            panic!("wrong scenario");
        };
        assert_eq!(a.publishers, 3);
        assert_eq!(a.common.qos, 2);
        assert_eq!(a.common.bind_addrs.len(), 2);
        assert_eq!(a.common.rate, Some(100.0));
        assert_eq!(cli.scenario.name(), "fan-in");
    }

    #[test]
    fn persistent_sessions_is_off_unless_asked_for_and_echoed_in_params() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => panic!("parse failed: {e}"),
        };
        let plain = parse(&["mqtt-bench", "pairs", "--qos", "1"]);
        assert!(!plain.scenario.common().persistent_sessions);
        let persistent = parse(&[
            "mqtt-bench",
            "latency",
            "--qos",
            "1",
            "--persistent-sessions",
        ]);
        assert!(persistent.scenario.common().persistent_sessions);
        let params = persistent.scenario.params();
        assert_eq!(params["persistent_sessions"], serde_json::Value::Bool(true));
    }

    #[test]
    fn rejects_small_payload_qos3_and_password_alone() {
        for args in [
            ["mqtt-bench", "pairs", "--payload", "15"],
            ["mqtt-bench", "pairs", "--qos", "3"],
            ["mqtt-bench", "pairs", "--password", "x"],
            ["mqtt-bench", "pairs", "--rate", "0"],
            ["mqtt-bench", "pairs", "--pairs", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn params_leave_the_password_out() {
        let cli = Cli::try_parse_from([
            "mqtt-bench",
            "latency",
            "--username",
            "u",
            "--password",
            "secret",
        ]);
        let Ok(cli) = cli else {
            panic!("parse failed");
        };
        let params = cli.scenario.params().to_string();
        assert!(params.contains("\"username\":\"u\""), "{params}");
        assert!(!params.contains("secret"), "{params}");
    }
}
