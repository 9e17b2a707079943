//! Custom packet handling with hooks: authenticate against the application's own user list,
//! refuse subscriptions to `admin/#`, tag every payload, and log disconnects.
//!
//! Run: `cargo run --example hooks`, then
//! `mosquitto_sub -u alice -P wonderland -t 'news/#' -v` and
//! `mosquitto_pub -u alice -P wonderland -t news/x -m hello` (arrives as `[alice] hello`).

use async_trait::async_trait;
use mqtt_server::{
    Broker, ClientInfo, Config, ConnectDecision, ConnectRequest, Decision, DisconnectReason, Hooks,
    PublishDraft, QoS,
};

struct AppHooks;

#[async_trait]
impl Hooks for AppHooks {
    async fn on_connect(
        &self,
        req: &ConnectRequest<'_>,
        _builtin: ConnectDecision,
    ) -> ConnectDecision {
        // Look the user up in the application's own store (a database call could await here).
        match (req.username, req.password) {
            (Some("alice"), Some(b"wonderland")) => ConnectDecision::Accept,
            (Some(_), _) => ConnectDecision::BadCredentials,
            (None, _) => ConnectDecision::NotAuthorized,
        }
    }

    fn on_publish(&self, client: &ClientInfo, publish: &mut PublishDraft) -> Decision {
        let user = client.username.as_deref().unwrap_or("?");
        let mut tagged = format!("[{user}] ").into_bytes();
        tagged.extend_from_slice(&publish.payload);
        publish.payload = tagged.into();
        Decision::Allow
    }

    fn on_subscribe(&self, _client: &ClientInfo, filter: &str, qos: &mut QoS) -> Decision {
        if filter.starts_with("admin/") {
            return Decision::Deny; // SUBACK 0x80
        }
        *qos = (*qos).min(QoS::AtLeastOnce); // never grant QoS 2
        Decision::Allow
    }

    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        println!("{} left: {reason:?}", client.client_id);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::with_hooks(Config::default(), AppHooks);
    broker.start().await?;
    println!("listening on {:?}; Ctrl-C stops it", broker.local_addrs());
    tokio::signal::ctrl_c().await?;
    broker.shutdown().await;
    Ok(())
}
