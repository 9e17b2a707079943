//! The smallest embedding: the default configuration (127.0.0.1:1883, anonymous clients
//! allowed), running until Ctrl-C.
//!
//! Run: `cargo run --example basic_broker`, then `mosquitto_sub -t '#' -v` and
//! `mosquitto_pub -t hello -m world` in two other terminals.

use mqtt_server::{Broker, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let broker = Broker::new(Config::default());
    broker.start().await?;
    println!(
        "broker listening on {:?}; Ctrl-C stops it",
        broker.local_addrs()
    );
    tokio::signal::ctrl_c().await?;
    broker.shutdown().await;
    Ok(())
}
