//! The report section of the overload scenarios (slow-consumer, flood, huge-packet, soak):
//! the bystander's figures phase by phase, named samples of the broker process, the
//! scenario's own figures, and checks with a verdict each (a failed check is a run error).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cli::ProbeArgs;
use crate::ctx::{BenchError, Ctx};
use crate::probe::{Phase, Sampler, Streams, pause};
use crate::proc::ProcSample;
use crate::report::{Report, secs};

/// The common opening of an attack scenario, before the attack itself.
pub struct Opening {
    /// Samples the broker process (RSS, open files, peak).
    pub sampler: Sampler,
    /// The report section, with the samples `baseline` (before any client of ours) and
    /// `with_bystander` (after the `before` phase); the sampler's peak starts from there.
    pub o: OverloadStats,
    /// The bystander pair, still running.
    pub by: Streams,
    /// The bystander's `before` phase.
    pub before: Phase,
}

/// Opens an attack scenario: samples the broker's baseline, starts the bystander pair and
/// measures its `before` phase.
pub async fn open(ctx: &Ctx, probe: &ProbeArgs) -> Result<Opening, BenchError> {
    let sampler = Sampler::start(ctx.common.broker_pid);
    let mut o = OverloadStats::default();
    o.sample("baseline", sampler.now());
    let mut by = Streams::new();
    by.add(
        ctx,
        "bystander",
        mqtt_server::QoS::AtLeastOnce,
        probe.bystander_rate,
    )
    .await?;
    pause(probe.phase).await;
    let before = by.phase("before");
    o.sample("with_bystander", sampler.now());
    let _ = sampler.take_peak();
    Ok(Opening {
        sampler,
        o,
        by,
        before,
    })
}

/// What an overload scenario measured.
#[derive(Debug, Default, Serialize)]
pub struct OverloadStats {
    /// Bystander (or soak stream) deliveries per phase.
    pub phases: Vec<Phase>,
    /// Broker process samples by name (`baseline`, `peak_during`, `after`, ...).
    pub broker: BTreeMap<String, ProcSample>,
    /// The scenario's own figures.
    pub figures: BTreeMap<String, f64>,
    /// Checks and their verdicts.
    pub checks: Vec<Check>,
}

/// One check of a scenario's expectation.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The figures behind the verdict.
    pub detail: String,
}

impl OverloadStats {
    /// Records a figure.
    pub fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_string(), value);
    }

    /// Records a broker sample, if there is one.
    pub fn sample(&mut self, name: &str, sample: Option<ProcSample>) {
        if let Some(s) = sample {
            self.broker.insert(name.to_string(), s);
        }
    }

    /// Records a check.
    pub fn check(&mut self, name: &str, ok: bool, detail: String) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
        });
    }

    /// Checks that the bystander's delivery rate in phase `during` stayed at least `pct` % of
    /// its rate in phase `before`.
    pub fn check_bystander(&mut self, before: &Phase, during: &Phase, pct: f64) {
        let floor = before.received_per_s * pct / 100.0;
        self.check(
            &format!(
                "bystander keeps >= {pct} % of its rate during '{}'",
                during.name
            ),
            before.received > 0 && during.received_per_s >= floor,
            format!(
                "{:.1} msg/s before, {:.1} msg/s during (floor {floor:.1})",
                before.received_per_s, during.received_per_s
            ),
        );
    }

    /// Checks that the broker's RSS in sample `later` is at most `slack_kb` above `base`, and
    /// its fd count at most `fd_slack` above (when both samples exist).
    pub fn check_returns(&mut self, base: &str, later: &str, slack_kb: u64, fd_slack: u64) {
        let (Some(b), Some(l)) = (
            self.broker.get(base).copied(),
            self.broker.get(later).copied(),
        ) else {
            return;
        };
        if let (Some(b), Some(l)) = (b.rss_kb, l.rss_kb) {
            self.check(
                &format!("RSS '{later}' within {slack_kb} KiB of '{base}'"),
                l <= b.saturating_add(slack_kb),
                format!("{b} KiB -> {l} KiB ({:+} KiB)", signed(l, b)),
            );
        }
        if let (Some(b), Some(l)) = (b.fds, l.fds) {
            self.check(
                &format!("fds '{later}' within {fd_slack} of '{base}'"),
                l <= b.saturating_add(fd_slack),
                format!("{b} -> {l} ({:+})", signed(l, b)),
            );
        }
    }

    /// The failed checks, as error messages.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("check failed: {}: {}", c.name, c.detail))
            .collect()
    }

    /// Table lines: `(label, value)`.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        for p in &self.phases {
            let latency = p.latency_us.as_ref().map_or(String::new(), |l| {
                format!(", latency p50 {} p99 {} max {} µs", l.p50, l.p99, l.max)
            });
            rows.push((
                format!("phase {}", p.name),
                format!(
                    "{:.1} s: {} sent, {} delivered ({:.1} msg/s){latency}",
                    p.secs, p.sent, p.received, p.received_per_s
                ),
            ));
        }
        for (name, s) in &self.broker {
            let rss = s.rss_kb.map_or("?".into(), |kb| format!("{kb} KiB"));
            let fds = s.fds.map_or("?".into(), |n| n.to_string());
            rows.push((format!("broker {name}"), format!("RSS {rss}, {fds} fds")));
        }
        for (name, v) in &self.figures {
            rows.push((name.clone(), format!("{v}")));
        }
        for c in &self.checks {
            let verdict = if c.ok { "ok" } else { "FAILED" };
            rows.push((
                format!("check {verdict}"),
                format!("{}: {}", c.name, c.detail),
            ));
        }
        rows
    }
}

/// Builds the report of an overload scenario: every failed check and client failure is an
/// error.
pub fn finish(
    ctx: &Ctx,
    o: OverloadStats,
    mut errors: Vec<String>,
    client_errors: u64,
) -> Result<Report, BenchError> {
    let failures = o.failures();
    let n = client_errors + failures.len() as u64 + errors.len() as u64;
    let mut messages = failures;
    messages.append(&mut errors);
    messages.truncate(8);
    Ok(Report {
        scenario: ctx.scenario,
        broker: ctx.endpoint.addr.to_string(),
        params: serde_json::Value::Null,
        elapsed_s: secs(ctx.now_ns()),
        errors: n,
        error_messages: messages,
        messages: None,
        latency_us: None,
        connections: None,
        churn: None,
        overload: Some(o),
        broker_process: None,
        sessions: None,
    })
}

/// `a - b` as a signed number.
fn signed(a: u64, b: u64) -> i128 {
    i128::from(a) - i128::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, received: u64, per_s: f64) -> Phase {
        Phase {
            name: name.into(),
            secs: 1.0,
            sent: received,
            received,
            received_per_s: per_s,
            latency_us: None,
        }
    }

    #[test]
    fn bystander_check_compares_rates() {
        let mut o = OverloadStats::default();
        o.check_bystander(
            &phase("before", 100, 100.0),
            &phase("during", 95, 95.0),
            90.0,
        );
        o.check_bystander(
            &phase("before", 100, 100.0),
            &phase("during", 50, 50.0),
            90.0,
        );
        o.check_bystander(&phase("before", 0, 0.0), &phase("during", 0, 0.0), 90.0);
        let ok: Vec<bool> = o.checks.iter().map(|c| c.ok).collect();
        assert_eq!(ok, vec![true, false, false]);
        assert_eq!(o.failures().len(), 2);
    }

    #[test]
    fn return_check_uses_the_slack() {
        let mut o = OverloadStats::default();
        let s = |rss, fds| {
            Some(ProcSample {
                rss_kb: Some(rss),
                fds: Some(fds),
            })
        };
        o.sample("baseline", s(10_000, 20));
        o.sample("after", s(12_000, 31));
        o.check_returns("baseline", "after", 4096, 10);
        let ok: Vec<bool> = o.checks.iter().map(|c| c.ok).collect();
        assert_eq!(ok, vec![true, false]);
        assert!(
            o.failures()[0].contains("20 -> 31 (+11)"),
            "{:?}",
            o.failures()
        );
        o.check_returns("baseline", "missing", 0, 0);
        assert_eq!(o.checks.len(), 2);
    }
}
