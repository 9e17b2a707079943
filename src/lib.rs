//! mqtt-server: an MQTT 3.1.1 / 3.1 broker (MQTT 5 to come) that runs standalone or embedded in
//! your own tokio program.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mqtt_server::{Broker, Config, QoS};
//!
//! let broker = Broker::new(Config::default());
//! broker.start().await?;
//! let app = broker.local_client("app");
//! app.subscribe("sensors/+/temperature", QoS::AtLeastOnce)?;
//! while let Some(msg) = app.recv().await {
//!     println!("{}: {:?}", msg.topic, msg.payload);
//! }
//! # Ok(()) }
//! ```
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
pub mod router;
pub mod session;
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
