//! Running `mqtt-bench`'s overload scenarios against a test broker and reading their JSON
//! reports (`tests/overload_smoke.rs`, `tests/soak.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Upper bound for one short run of the binary.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `mqtt-bench <scenario> <args> --port <broker port> --json --quiet`; returns the exit
/// status and the report, which must be there.
pub async fn bench(
    addr: SocketAddr,
    scenario: &str,
    args: &[&str],
    timeout: Duration,
) -> (i32, Value) {
    let run = super::mqtt_bench::run(addr, scenario, args, timeout).await;
    assert!(
        !run.json.is_null(),
        "no JSON report; stderr: {}",
        run.stderr
    );
    (run.code.unwrap_or(-1), run.json)
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
