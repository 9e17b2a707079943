//! mqtt-server: an MQTT broker you can embed.
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod router;
pub mod topic;
