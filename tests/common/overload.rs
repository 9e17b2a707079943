//! Running `mqtt-bench`'s overload scenarios against a test broker and reading their JSON
//! reports (`tests/overload_smoke.rs`, `tests/soak.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Upper bound for one short run of the binary.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `mqtt-bench <scenario> <args> --port <broker port> --json --quiet`; returns the exit
/// status and the report.
pub async fn bench(
    addr: SocketAddr,
    scenario: &str,
    args: &[&str],
    timeout: Duration,
) -> (i32, Value) {
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
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (output.status.code().unwrap_or(-1), json)
}

/// A figure of the report's overload section.
pub fn figure(r: &Value, name: &str) -> f64 {
    r["overload"]["figures"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name} in {r:#}"))
}

/// Asserts that the run exited 0 and every check of the report held.
pub fn assert_clean(code: i32, r: &Value) {
    let checks = r["overload"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {r:#}"));
    assert!(!checks.is_empty(), "{r:#}");
    for c in checks {
        assert_eq!(
            c["ok"],
            Value::Bool(true),
            "check failed: {c:#}\nreport: {r:#}"
        );
    }
    assert_eq!(r["errors"], 0, "{r:#}");
    assert_eq!(code, 0, "{r:#}");
}
