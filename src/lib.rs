#![doc = include_str!("../README.md")]
//!
//! ## Code map
//!
//! The path of one PUBLISH: [`transport`] accepts the byte stream → `connection` reads and
//! decodes it with [`codec`] → the session does the QoS bookkeeping → [`router`] matches the
//! topic and queues the shared message on each subscriber's session → each subscriber's
//! connection writes its queue in batches. See `docs/architecture.md`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
mod broker;
pub mod codec;
pub mod config;
mod connection;
pub mod hooks;
mod local_client;
pub mod message;
pub mod metrics;
mod recovery;
pub mod router;
pub mod session;
pub mod store;
pub mod topic;
pub mod transport;

pub use broker::{Broker, BrokerError};
pub use codec::{ProtocolVersion, QoS};
pub use config::{Config, ConfigError};
pub use hooks::{
    ClientInfo, ConnectDecision, ConnectRequest, Decision, DisconnectReason, Hooks, PublishDraft,
};
pub use local_client::{LocalClient, ReceivedMessage};
pub use message::Message;
pub use metrics::MetricsSnapshot;
