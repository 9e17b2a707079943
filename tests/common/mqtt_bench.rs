//! Running the `mqtt-bench` binary against a test broker and reading its JSON report.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// The outcome of one run.
pub struct Run {
    /// Exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The JSON report (`Null` when it printed none).
    pub json: Value,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Runs `mqtt-bench <scenario> <args> --port <broker port> --json --quiet`, failing the test if
/// it runs longer than `timeout`.
pub async fn run(addr: SocketAddr, scenario: &str, args: &[&str], timeout: Duration) -> Run {
    let port = addr.port().to_string();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqtt-bench"))
        .arg(scenario)
        .args(args)
        .args(["--host", "127.0.0.1", "--port", &port, "--json", "--quiet"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .expect("mqtt-bench finishes within its bounds")
        .expect("mqtt-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}\nstderr: {stderr}"))
    };
    Run {
        code: output.status.code(),
        json,
        stderr,
    }
}
