//! A broker configured in code (or from a TOML string): two listeners, tighter limits, and a
//! user.
//!
//! Run: `cargo run --example custom_config`, then
//! `mosquitto_pub -p 18830 -u sensor -P s3cret -t t -m hi`.

use mqtt_server::config::ListenerConfig;
use mqtt_server::{Broker, Config};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Either parse TOML (errors name the key and what is wrong)...
    let mut config = Config::from_toml_str(
        r#"
        log_level = "debug"
        [[listener]]
        bind = "127.0.0.1:18830"
        allow_anonymous = false
        [limits]
        max_packet_size = 65536
        max_inflight_messages = 50
        "#,
        "<example>",
    )?;
    // ...or change fields in code.
    config.listeners.push(ListenerConfig {
        bind: "127.0.0.1:0".parse()?,
        allow_anonymous: Some(true),
        password_file: None,
        acl_file: None,
        tls: None,
    });
    config.validate("<example>")?;

    tracing_subscriber::fmt()
        .with_env_filter(config.log_level.as_str())
        .init();
    let broker = Broker::new(config);
    broker.add_credentials("sensor", "s3cret");
    broker.start().await?;
    println!("listening on {:?}; Ctrl-C stops it", broker.local_addrs());
    tokio::signal::ctrl_c().await?;
    broker.shutdown().await;
    Ok(())
}
