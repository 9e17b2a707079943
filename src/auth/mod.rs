//! Client authentication: user names and passwords checked against a Mosquitto-compatible store.

pub mod credentials;
