//! Publishing and subscribing from the embedding program itself, without a socket, side by
//! side with network clients.
//!
//! Run: `cargo run --example in_process_client`; then `mosquitto_pub -t cmd/echo -m ping`
//! gets answered on `reply/echo` (watch with `mosquitto_sub -t 'reply/#' -v`).

use mqtt_server::{Broker, Config, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::new(Config::default());
    broker.start().await?;

    let app = broker.local_client("echo-service");
    app.subscribe("cmd/+", QoS::AtLeastOnce)?;
    // Retained state any new subscriber sees at once.
    app.publish("service/echo/status", "online", QoS::AtLeastOnce, true)?;
    println!(
        "echo service on {:?}: publish to cmd/<name>",
        broker.local_addrs()
    );

    loop {
        tokio::select! {
            msg = app.recv() => {
                let Some(msg) = msg else { break };
                let name = msg.topic.rsplit('/').next().unwrap_or("unknown");
                app.publish(&format!("reply/{name}"), msg.payload, QoS::AtLeastOnce, false)?;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    broker.shutdown().await;
    Ok(())
}
