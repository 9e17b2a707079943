//! The result of a run: a human table on stdout, or JSON with `--json`.

use serde::Serialize;

use crate::overload::OverloadStats;
use crate::proc::ProcSample;
use crate::sessions::SessionStats;
use crate::stats::LatencySummary;

/// Everything a run measured. Sections that a scenario does not produce are left out.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Broker address.
    pub broker: String,
    /// The options of the run (without the password).
    pub params: serde_json::Value,
    /// Wall time of the whole run, setup included, in seconds.
    pub elapsed_s: f64,
    /// Errors: broken connections, refused or unexpected packets, foreign messages.
    pub errors: u64,
    /// The first few distinct error messages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_messages: Vec<String>,
    /// Message counts and rates (fan-in, fan-out, pairs, latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageStats>,
    /// End-to-end latency of delivered messages, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencySummary>,
    /// Connection counts, rates and memory (connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<ConnStats>,
    /// Subscription churn (churn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnStats>,
    /// Overload scenarios: phases, broker samples, figures and checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overload: Option<OverloadStats>,
    /// The broker process, with `--broker-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_process: Option<BrokerProcess>,
    /// Persistent sessions and their discarding at the end (`--persistent-sessions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionStats>,
}

/// Message counts. `lost = expected - delivered`, where `expected = sent × subscribers per
/// message` and `delivered` counts first copies only (QoS 0 loss included).
#[derive(Debug, Serialize)]
pub struct MessageStats {
    /// Publishing clients.
    pub publishers: u64,
    /// Subscribing clients.
    pub subscribers: u64,
    /// QoS of publications and subscriptions.
    pub qos: u8,
    /// Payload bytes.
    pub payload: usize,
    /// `open-loop` (fixed rate) or `closed-loop`.
    pub mode: &'static str,
    /// Messages published.
    pub sent: u64,
    /// Publications acknowledged by the broker (QoS 1/2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked: Option<u64>,
    /// Deliveries expected.
    pub expected: u64,
    /// First copies delivered.
    pub delivered: u64,
    /// Deliveries expected but not received by the end of the drain.
    pub lost: u64,
    /// `lost / expected` in percent.
    pub loss_pct: f64,
    /// Copies received again.
    pub duplicates: u64,
    /// First copies received after a later message of the same publisher.
    pub out_of_order: u64,
    /// First publish to last publish, seconds.
    pub publish_window_s: f64,
    /// First publish to last delivery, seconds.
    pub delivery_window_s: f64,
    /// Messages published per second over the publish window.
    pub sent_per_s: f64,
    /// First copies delivered per second over the delivery window.
    pub delivered_per_s: f64,
    /// Open loop: the largest delay behind schedule of any publish, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_schedule_lag_ms: Option<f64>,
}

/// The connections scenario.
#[derive(Debug, Serialize)]
pub struct ConnStats {
    /// Connections requested.
    pub requested: u64,
    /// Connections accepted (CONNACK 0).
    pub connected: u64,
    /// Attempts that failed (refused, timed out, socket error).
    pub failed: u64,
    /// Accepted connections the broker closed before the end.
    pub dropped: u64,
    /// First attempt to last CONNACK, seconds.
    pub connect_window_s: f64,
    /// Accepted connections per second over the connect window.
    pub connects_per_s: f64,
    /// TCP connect + CONNACK time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_latency_us: Option<LatencySummary>,
    /// Seconds the connections were held idle.
    pub held_s: f64,
    /// `(broker RSS at the end of the hold − before connecting) / connected`, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_kb: Option<f64>,
}

/// The churn scenario.
#[derive(Debug, Serialize)]
pub struct ChurnStats {
    /// Subscriptions held during the churn.
    pub existing_subscriptions: u64,
    /// Clients holding them.
    pub holder_clients: u64,
    /// Clients doing subscribe/unsubscribe pairs.
    pub churners: u64,
    /// Retained messages matched by each churn SUBSCRIBE.
    pub retained: u64,
    /// SUBSCRIBE + UNSUBSCRIBE operations acknowledged.
    pub ops: u64,
    /// Seconds of churn.
    pub window_s: f64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// SUBSCRIBE → SUBACK time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suback_latency_us: Option<LatencySummary>,
    /// UNSUBSCRIBE → UNSUBACK time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsuback_latency_us: Option<LatencySummary>,
    /// Retained messages received by the churners.
    pub retained_received: u64,
}

/// Samples of the broker process.
#[derive(Debug, Serialize)]
pub struct BrokerProcess {
    /// Its process id.
    pub pid: u32,
    /// Before the run's clients connected.
    pub start: ProcSample,
    /// Once all connections were open (connections scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<ProcSample>,
    /// At the end, before the clients disconnected.
    pub end: ProcSample,
}

/// `n / secs`, or 0 over an empty window; rounded to 0.1.
pub fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Seconds from nanoseconds, rounded to the millisecond.
pub fn secs(ns: u64) -> f64 {
    (ns as f64 / 1e6).round() / 1e3
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize the report: {e}\"}}"))
    }

    /// The report as an aligned table.
    pub fn to_table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        row("scenario", format!("{} -> {}", self.scenario, self.broker));
        if let Some(m) = &self.messages {
            row(
                "shape",
                format!(
                    "{} publisher(s) -> {} subscriber(s), QoS {}, {} B payload, {}",
                    m.publishers, m.subscribers, m.qos, m.payload, m.mode
                ),
            );
            row(
                "sent",
                format!(
                    "{:>12}   {} msg/s over {:.3} s",
                    m.sent,
                    thousands(m.sent_per_s),
                    m.publish_window_s
                ),
            );
            if let Some(acked) = m.acked {
                row("acked", format!("{acked:>12}"));
            }
            row("expected", format!("{:>12}", m.expected));
            row(
                "delivered",
                format!(
                    "{:>12}   {} msg/s over {:.3} s",
                    m.delivered,
                    thousands(m.delivered_per_s),
                    m.delivery_window_s
                ),
            );
            row("lost", format!("{:>12}   ({:.3} %)", m.lost, m.loss_pct));
            row("duplicates", format!("{:>12}", m.duplicates));
            row("out of order", format!("{:>12}", m.out_of_order));
            if let Some(lag) = m.max_schedule_lag_ms {
                row("max schedule lag", format!("{lag:>12.3} ms"));
            }
        }
        if let Some(l) = &self.latency_us {
            row("latency (µs)", latency_line(l));
        }
        if let Some(c) = &self.connections {
            row(
                "connections",
                format!(
                    "{} of {} connected, {} failed, {} dropped while held",
                    c.connected, c.requested, c.failed, c.dropped
                ),
            );
            row(
                "connect rate",
                format!(
                    "{} conn/s over {:.3} s",
                    thousands(c.connects_per_s),
                    c.connect_window_s
                ),
            );
            if let Some(l) = &c.connect_latency_us {
                row("connect time (µs)", latency_line(l));
            }
            row("held", format!("{:.1} s", c.held_s));
            if let Some(kb) = c.rss_per_connection_kb {
                row("broker RSS/conn", format!("{kb:.2} KiB"));
            }
        }
        if let Some(c) = &self.churn {
            row(
                "existing subs",
                format!(
                    "{} over {} client(s), {} retained",
                    c.existing_subscriptions, c.holder_clients, c.retained
                ),
            );
            row(
                "churn ops",
                format!(
                    "{} (SUBSCRIBE+UNSUBSCRIBE) by {} churner(s): {} ops/s over {:.3} s",
                    c.ops,
                    c.churners,
                    thousands(c.ops_per_s),
                    c.window_s
                ),
            );
            if let Some(l) = &c.suback_latency_us {
                row("SUBACK (µs)", latency_line(l));
            }
            if let Some(l) = &c.unsuback_latency_us {
                row("UNSUBACK (µs)", latency_line(l));
            }
            if c.retained > 0 {
                row("retained received", c.retained_received.to_string());
            }
        }
        if let Some(o) = &self.overload {
            for (label, value) in o.rows() {
                row(&label, value);
            }
        }
        if let Some(b) = &self.broker_process {
            let mut rss = format!("{} -> ", kib(b.start.rss_kb));
            if let Some(c) = &b.connected {
                rss.push_str(&format!("{} (connected) -> ", kib(c.rss_kb)));
            }
            rss.push_str(&kib(b.end.rss_kb));
            row(&format!("broker {} RSS", b.pid), rss);
            row(
                &format!("broker {} fds", b.pid),
                format!("{} -> {}", opt(b.start.fds), opt(b.end.fds)),
            );
        }
        if let Some(s) = &self.sessions {
            let mut line = format!(
                "{} persistent, {} discarded at the end in {:.3} s",
                s.persistent, s.discarded, s.discard_s
            );
            if s.failed > 0 {
                line.push_str(&format!(", {} NOT discarded", s.failed));
            }
            row("sessions", line);
            if let Some(e) = &s.first_error {
                row("  warning", e.clone());
            }
        }
        row("errors", self.errors.to_string());
        for e in &self.error_messages {
            row("  error", e.clone());
        }
        row("elapsed", format!("{:.3} s", self.elapsed_s));

        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
        out
    }
}

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (min {}, mean {:.1}, n {})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.min, l.mean, l.count
    )
}

fn kib(kb: Option<u64>) -> String {
    match kb {
        Some(kb) if kb >= 10 * 1024 => format!("{:.1} MiB", kb as f64 / 1024.0),
        Some(kb) => format!("{kb} KiB"),
        None => "?".into(),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// `1234567.8` → `1,234,567.8`.
fn thousands(v: f64) -> String {
    let s = format!("{v:.1}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, "0"));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |rest| ("-", rest));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1_234_567.84), "1,234,567.8");
        assert_eq!(thousands(999.0), "999.0");
        assert_eq!(thousands(0.0), "0.0");
        assert_eq!(thousands(-1234.5), "-1,234.5");
    }

    #[test]
    fn rates_and_seconds() {
        assert_eq!(per_second(100, 0.0), 0.0);
        assert_eq!(per_second(100, 2.0), 50.0);
        assert_eq!(secs(1_500_000_000), 1.5);
    }

    #[test]
    fn json_leaves_out_absent_sections_and_table_shows_loss() {
        let report = Report {
            scenario: "pairs",
            broker: "127.0.0.1:1883".into(),
            params: serde_json::Value::Null,
            elapsed_s: 1.0,
            errors: 0,
            error_messages: vec![],
            messages: Some(MessageStats {
                publishers: 1,
                subscribers: 1,
                qos: 0,
                payload: 16,
                mode: "closed-loop",
                sent: 10,
                acked: None,
                expected: 10,
                delivered: 9,
                lost: 1,
                loss_pct: 10.0,
                duplicates: 0,
                out_of_order: 0,
                publish_window_s: 1.0,
                delivery_window_s: 1.0,
                sent_per_s: 10.0,
                delivered_per_s: 9.0,
                max_schedule_lag_ms: None,
            }),
            latency_us: None,
            connections: None,
            churn: None,
            overload: None,
            broker_process: None,
            sessions: None,
        };
        let json: serde_json::Value = match serde_json::from_str(&report.to_json()) {
            Ok(v) => v,
            Err(e) => panic!("invalid JSON: {e}"),
        };
        assert_eq!(json["messages"]["lost"], 1);
        assert!(json.get("connections").is_none());
        assert!(json["messages"].get("acked").is_none());
        let table = report.to_table();
        assert!(table.contains("(10.000 %)"), "{table}");
        assert!(!table.contains("sessions"), "{table}");
        assert!(json.get("sessions").is_none());
    }

    #[test]
    fn sessions_show_discards_and_failures() {
        let mut report = Report {
            scenario: "latency",
            broker: "127.0.0.1:1883".into(),
            params: serde_json::Value::Null,
            elapsed_s: 1.0,
            errors: 0,
            error_messages: vec![],
            messages: None,
            latency_us: None,
            connections: None,
            churn: None,
            overload: None,
            broker_process: None,
            sessions: Some(SessionStats {
                persistent: 2,
                discarded: 2,
                failed: 0,
                discard_s: 0.01,
                first_error: None,
            }),
        };
        let table = report.to_table();
        assert!(
            table.contains("2 persistent, 2 discarded at the end"),
            "{table}"
        );
        assert!(!table.contains("NOT discarded"), "{table}");
        report.sessions = Some(SessionStats {
            persistent: 2,
            discarded: 1,
            failed: 1,
            discard_s: 0.01,
            first_error: Some("discarding the session of x: timed out".into()),
        });
        let table = report.to_table();
        assert!(table.contains("1 NOT discarded"), "{table}");
        assert!(table.contains("timed out"), "{table}");
        let json: serde_json::Value = match serde_json::from_str(&report.to_json()) {
            Ok(v) => v,
            Err(e) => panic!("invalid JSON: {e}"),
        };
        assert_eq!(json["sessions"]["failed"], 1);
        assert_eq!(json["sessions"]["persistent"], 2);
    }
}
