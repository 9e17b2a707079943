//! The progress line on stderr, once per second: rewritten in place (`\r`) on a terminal, one
//! line per second otherwise, none with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::Live;

/// Which counters the line shows.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Messages sent and delivered.
    Messages,
    /// Connections opened out of `target`.
    Connections {
        /// Connections requested.
        target: u64,
    },
    /// Churn operations.
    Churn,
}

/// A running progress line.
#[derive(Debug)]
pub struct Progress {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    in_place: bool,
}

/// Counter values at one tick.
#[derive(Debug, Clone, Copy, Default)]
struct Tick {
    a: u64,
    b: u64,
}

impl Progress {
    /// Starts the line (nothing when `quiet`).
    pub fn start(live: Arc<Live>, kind: Kind, origin: Instant, quiet: bool, json: bool) -> Self {
        let stop = CancellationToken::new();
        let in_place = !json && std::io::stderr().is_terminal();
        let task = (!quiet).then(|| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                ticker.tick().await;
                let mut last = Tick::default();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    let (line, now) = render(&live, kind, origin, last);
                    last = now;
                    let mut err = std::io::stderr().lock();
                    let _ = if in_place {
                        write!(err, "\r{line:<100}")
                    } else {
                        writeln!(err, "{line}")
                    };
                    let _ = err.flush();
                }
            })
        });
        Progress {
            stop,
            task,
            in_place,
        }
    }

    /// Stops the line and ends it.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
            if self.in_place {
                eprintln!();
            }
        }
    }
}

fn render(live: &Live, kind: Kind, origin: Instant, last: Tick) -> (String, Tick) {
    let t = origin.elapsed().as_secs();
    let errors = Live::get(&live.errors);
    match kind {
        Kind::Messages => {
            let now = Tick {
                a: Live::get(&live.sent),
                b: Live::get(&live.delivered),
            };
            let line = format!(
                "[{t:>4}s] sent {} ({}/s)  delivered {} ({}/s)  errors {errors}",
                now.a,
                human(now.a.saturating_sub(last.a)),
                now.b,
                human(now.b.saturating_sub(last.b)),
            );
            (line, now)
        }
        Kind::Connections { target } => {
            let now = Tick {
                a: Live::get(&live.connected),
                b: 0,
            };
            let line = format!(
                "[{t:>4}s] connected {}/{target} ({}/s)  failed {}  dropped {}",
                now.a,
                human(now.a.saturating_sub(last.a)),
                Live::get(&live.failed),
                Live::get(&live.dropped),
            );
            (line, now)
        }
        Kind::Churn => {
            let now = Tick {
                a: Live::get(&live.ops),
                b: 0,
            };
            let line = format!(
                "[{t:>4}s] ops {} ({}/s)  errors {errors}",
                now.a,
                human(now.a.saturating_sub(last.a)),
            );
            (line, now)
        }
    }
}

/// `1234567` → `1.23M`.
fn human(n: u64) -> String {
    let v = n as f64;
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(human(999), "999");
        assert_eq!(human(12_345), "12.3k");
        assert_eq!(human(1_234_567), "1.23M");
    }

    #[test]
    fn renders_rates_from_the_previous_tick() {
        let live = Live::default();
        Live::add(&live.sent, 300);
        Live::add(&live.delivered, 250);
        let (line, tick) = render(
            &live,
            Kind::Messages,
            Instant::now(),
            Tick { a: 100, b: 50 },
        );
        assert!(line.contains("sent 300 (200/s)"), "{line}");
        assert!(line.contains("delivered 250 (200/s)"), "{line}");
        assert_eq!((tick.a, tick.b), (300, 250));
    }
}
