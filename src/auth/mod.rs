//! Client authentication: user names and passwords checked against a Mosquitto-compatible
//! store, and MQTT 5 enhanced authentication (pluggable methods; SCRAM-SHA-256 built in).

pub mod acl;
pub mod ban;
pub mod credentials;
pub mod enhanced;
pub mod password_file;
pub mod scram;
