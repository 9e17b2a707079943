//! Fuzz target for the configuration parser.
//!
//! ```text
//! cargo +nightly fuzz run config fuzz/corpus/config fuzz/seeds/config
//! ```
//!
//! [`Config::from_toml_str`] must never panic: any text, valid TOML or not, is either a
//! configuration that passed validation or an error naming the origin. An accepted
//! configuration must pass [`Config::validate`] again (parsing validated it) and its derived
//! values must be computable without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_server::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, "<fuzz>") {
        Ok(config) => {
            assert!(
                config.validate("<fuzz>").is_ok(),
                "an accepted config fails validation"
            );
            let _ = config.limits.connect_timeout();
            for listener in &config.listeners {
                let _ = listener.anonymous_allowed();
            }
        }
        Err(err) => assert!(err.0.starts_with("<fuzz>"), "error without origin: {err}"),
    }
});
