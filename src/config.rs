//! Typed broker configuration, its defaults, and validation with errors that name the key.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The commented sample configuration shipped with the crate. Every option appears in it with
/// its default value, so it parses to exactly [`Config::default()`]; the daemon uses it when no
/// configuration file is given.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../mqtt-server.toml");

/// The IANA port for MQTT over TCP.
const DEFAULT_PORT: u16 = 1883;
/// Allowed range of `limits.max_packet_size`: the smallest MQTT packet (PINGREQ, DISCONNECT) is
/// 2 bytes, and MQTT 3.1.1 §2.2.3 caps the Remaining Length at 268,435,455 bytes.
const MAX_PACKET_SIZE_RANGE: (u32, u32) = (2, 268_435_455);
/// Allowed range of `limits.connect_timeout_secs`.
const CONNECT_TIMEOUT_RANGE: (u64, u64) = (1, 3600);
/// Longest accepted `mqtt.auto_id_prefix`, in bytes.
const MAX_AUTO_ID_PREFIX_LEN: usize = 32;

/// The whole broker configuration. Every field has a default; see `mqtt-server.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive).
    pub log_level: String,
    /// Listeners; `[[listener]]` tables in TOML. Default: one on 127.0.0.1:1883.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Resource limits.
    pub limits: Limits,
    /// Protocol behaviour.
    pub mqtt: MqttConfig,
    /// Authentication and authorization files.
    pub auth: AuthConfig,
    /// Durable storage of sessions, queued messages and retained messages.
    pub persistence: PersistenceConfig,
}

/// When a stored change is durable (`persistence.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A PUBACK, PUBREC, PUBCOMP or SUBACK that depends on a stored change is sent only after
    /// the change is on disk (fsync); many clients' changes share one fsync (group commit).
    #[default]
    Sync,
    /// Changes are written at once but made durable every `flush_interval_ms`: a crash of the
    /// broker or of the machine loses up to that window of acknowledged changes.
    Periodic,
}

/// `[persistence]`: what survives a restart, and how durably.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistenceConfig {
    /// Keep persistent sessions, their queued and in-flight messages, retained messages and
    /// delayed wills across restarts. Default false (everything lives in memory).
    pub enabled: bool,
    /// Directory of the store (created if missing; the store is `mqtt-server.redb` in it).
    /// Default `mqtt-server-data`.
    pub path: std::path::PathBuf,
    /// `sync` (default) or `periodic`.
    pub durability: Durability,
    /// With `periodic`: milliseconds between durable flushes (10 to 60000). Default 100.
    pub flush_interval_ms: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: false,
            path: std::path::PathBuf::from("mqtt-server-data"),
            durability: Durability::Sync,
            flush_interval_ms: 100,
        }
    }
}

/// Authentication and authorization files (Mosquitto formats), reloaded on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Password file in Mosquitto's `mosquitto_passwd` format (`user:$7$...` lines). When set,
    /// a client that sends a user name must match an entry.
    pub password_file: Option<std::path::PathBuf>,
    /// ACL file in Mosquitto's `acl_file` format. When set, every PUBLISH, SUBSCRIBE and
    /// delivery is checked against it, and what it does not grant is denied.
    pub acl_file: Option<std::path::PathBuf>,
    /// Milliseconds a connection that failed authentication waits before it is answered (slows
    /// password guessing down). Default 1000.
    pub failed_login_delay_ms: u64,
    /// After this many failed logins from one IP address within `ban_secs`, further connections
    /// from it are refused for `ban_secs`; 0 disables banning. Default 10.
    pub ban_after_failures: u32,
    /// Length of a ban and of the window failures are counted in, in seconds. Default 60.
    pub ban_secs: u64,
    /// SUBACK reason code for a subscription the ACL denies to an MQTT 5 client: 0x87 (Not
    /// authorized, the default) or 0x80 (Unspecified error, what MQTT 3.1.1 clients get and
    /// what some older test suites expect). Default 0x87.
    pub v5_subscribe_denied_code: u8,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            failed_login_delay_ms: 1000,
            ban_after_failures: 10,
            ban_secs: 60,
            v5_subscribe_denied_code: 0x87,
        }
    }
}

/// One network listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind, for example `127.0.0.1:1883` (port 0 picks a free port).
    #[serde(deserialize_with = "deserialize_socket_addr")]
    pub bind: SocketAddr,
    /// Whether clients without a user name may connect. Default: true on a loopback address,
    /// false otherwise.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Password file for clients of this listener, instead of `[auth] password_file`.
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    /// ACL file for clients of this listener, instead of `[auth] acl_file`.
    #[serde(default)]
    pub acl_file: Option<std::path::PathBuf>,
    /// MQTT over TLS on this listener (`[listener.tls]`); plain TCP without it.
    #[serde(default)]
    pub tls: Option<crate::transport::tls::TlsSettings>,
}

/// Limits that protect the broker from one client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest packet accepted from a client, fixed header included (bytes). Default 1 MiB.
    pub max_packet_size: u32,
    /// Maximum simultaneous client connections over all listeners. Default 10 000.
    pub max_connections: usize,
    /// Seconds a new connection has to send CONNECT. Default 10.
    pub connect_timeout_secs: u64,
    /// Outbound QoS 1/2 messages awaiting acknowledgement per client. Default 20.
    pub max_inflight_messages: u16,
    /// Messages queued per client beyond the in-flight window (online or offline). Default 1000.
    pub max_queued_messages: usize,
    /// Longest topic name or filter accepted, in bytes. Default 65535 (the protocol's limit).
    pub max_topic_length: u16,
    /// Most levels in a topic name or filter. Default 128.
    pub max_topic_levels: u16,
    /// Most subscriptions one client may hold; 0 = unlimited. Default 0.
    pub max_subscriptions_per_client: usize,
    /// PUBLISH packets per second one connection may send; 0 = unlimited. A client above the
    /// rate is slowed down (its socket is not read until it is back under), not dropped.
    /// Default 0.
    pub publish_rate_messages: u32,
    /// PUBLISH payload bytes per second one connection may send; 0 = unlimited. Same
    /// treatment. Default 0.
    pub publish_rate_bytes: u32,
}

/// Protocol options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Accept a zero-length client id with clean session and assign one. Default true.
    pub allow_zero_length_client_id: bool,
    /// Prefix of assigned client ids. Default `auto-`.
    pub auto_id_prefix: String,
    /// Queue QoS 0 messages for offline persistent sessions. Default false (as Mosquitto).
    pub queue_qos0_messages: bool,
    /// Store retained messages. Default true.
    pub retain_available: bool,
    /// Longest keep-alive a client may ask for, in seconds (1 to 65535). MQTT 5 clients asking
    /// for more, or for 0, are told this value as Server Keep Alive; MQTT 3.1/3.1.1 clients
    /// asking for more are refused (identifier rejected), as Mosquitto does. Default 65535.
    pub max_keepalive: u16,
    /// Session Expiry Interval in seconds: the default for MQTT 3.1.1 clients with Clean
    /// Session 0, and the maximum granted to MQTT 5 clients. 4294967295 means never.
    /// Default 4294967295 (sessions persist until the client cleans them, as in Mosquitto).
    pub session_expiry_interval: u32,
    /// Topic aliases an MQTT 5 client may use towards the broker (Topic Alias Maximum in
    /// CONNACK; 0 disables them). Default 10.
    pub topic_alias_maximum: u16,
    /// Assign topic aliases on messages sent to MQTT 5 clients that allow them. Default true.
    pub assign_topic_aliases: bool,
    /// QoS 1 and 2 messages an MQTT 5 client may have unacknowledged at once (Receive Maximum
    /// in CONNACK, 1 to 65535). QoS 1 is acknowledged at once, so in practice this bounds the
    /// QoS 2 messages awaiting PUBREL. Default 100.
    pub receive_maximum: u16,
    /// Highest QoS the broker accepts and grants (0, 1 or 2). Default 2.
    pub maximum_qos: u8,
    /// How a shared subscription picks the member that gets a message.
    pub shared_subscription_strategy: SharedStrategy,
    /// Response Information sent in CONNACK to MQTT 5 clients that ask for it (Request
    /// Response Information 1), with `%c` replaced by the client id — the basis of the client's
    /// response topics, for example `responses/%c`. Empty (the default): none is sent.
    pub response_information: String,
}

/// How a shared subscription (`$share/{group}/{filter}`) picks the member that receives a
/// message. Online members are always preferred over offline ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    /// Each member in turn (the default).
    #[default]
    RoundRobin,
    /// A member chosen at random.
    Random,
    /// The same member for every message of one publisher (hash of its client id).
    HashClientId,
    /// The same member for every message of one topic (hash of the topic name).
    HashTopic,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".to_owned(),
            listeners: vec![ListenerConfig {
                bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT),
                allow_anonymous: None,
                password_file: None,
                acl_file: None,
                tls: None,
            }],
            limits: Limits::default(),
            mqtt: MqttConfig::default(),
            auth: AuthConfig::default(),
            persistence: PersistenceConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: 1024 * 1024,
            max_connections: 10_000,
            connect_timeout_secs: 10,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_topic_length: u16::MAX,
            max_topic_levels: 128,
            max_subscriptions_per_client: 0,
            publish_rate_messages: 0,
            publish_rate_bytes: 0,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            allow_zero_length_client_id: true,
            auto_id_prefix: "auto-".to_owned(),
            queue_qos0_messages: false,
            retain_available: true,
            max_keepalive: u16::MAX,
            session_expiry_interval: u32::MAX,
            topic_alias_maximum: 10,
            assign_topic_aliases: true,
            receive_maximum: 100,
            maximum_qos: 2,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            response_information: String::new(),
        }
    }
}

impl ListenerConfig {
    /// Whether clients without a user name may connect on this listener: the explicit
    /// `allow_anonymous` setting if present, otherwise true only when the bind address is a
    /// loopback address (so only local processes can reach an unauthenticated broker, as
    /// Mosquitto 2 does when it runs without a configuration).
    pub fn anonymous_allowed(&self) -> bool {
        // `to_canonical` turns `::ffff:127.0.0.1` into `127.0.0.1`, which is loopback too.
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().to_canonical().is_loopback())
    }
}

impl Limits {
    /// [`Limits::connect_timeout_secs`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

/// A configuration that could not be loaded: names the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// `<origin>: key '<key>': <what>`.
    fn key(origin: &str, key: &str, what: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{origin}: key '{key}': {what}"))
    }
}

impl Config {
    /// Parses and validates a TOML document; `origin` names it in errors (a path or `<embedded>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer)
            .map_err(|err| parse_error(text, origin, &err))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError(format!("{origin}: cannot read the file: {err}")))?;
        Config::from_toml_str(&text, &origin)
    }

    /// Checks cross-field rules and ranges, naming the offending key.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        if self.log_level.trim().is_empty() {
            return Err(ConfigError::key(origin, "log_level", "must not be empty"));
        }
        self.validate_listeners(origin)?;
        self.limits.validate(origin)?;
        if !matches!(self.auth.v5_subscribe_denied_code, 0x80 | 0x87) {
            return Err(ConfigError::key(
                origin,
                "auth.v5_subscribe_denied_code",
                format!(
                    "must be 0x80 (128) or 0x87 (135), got {}",
                    self.auth.v5_subscribe_denied_code
                ),
            ));
        }
        if !(10..=60_000).contains(&self.persistence.flush_interval_ms) {
            return Err(ConfigError::key(
                origin,
                "persistence.flush_interval_ms",
                format!(
                    "must be between 10 and 60000, got {}",
                    self.persistence.flush_interval_ms
                ),
            ));
        }
        if self.persistence.enabled && self.persistence.path.as_os_str().is_empty() {
            return Err(ConfigError::key(
                origin,
                "persistence.path",
                "must not be empty when persistence is enabled",
            ));
        }
        self.mqtt.validate(origin)
    }

    fn validate_listeners(&self, origin: &str) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(ConfigError::key(
                origin,
                "listener",
                "at least one [[listener]] is required",
            ));
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            let earlier = self.listeners.iter().take(i).enumerate();
            for (j, other) in earlier {
                if binds_conflict(listener.bind, other.bind) {
                    return Err(ConfigError::key(
                        origin,
                        &format!("listener[{i}].bind"),
                        format!(
                            "{} conflicts with listener[{j}] bound to {}",
                            listener.bind, other.bind
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether two listeners cannot both bind: same port (not 0, which picks a free port each time)
/// and either the same IP or one of them the unspecified address of the same family.
fn binds_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    if a.ip() == b.ip() {
        return true;
    }
    a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Limits {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let (min, max) = MAX_PACKET_SIZE_RANGE;
        if !(min..=max).contains(&self.max_packet_size) {
            return Err(ConfigError::key(
                origin,
                "limits.max_packet_size",
                format!(
                    "must be between {min} and {max}, got {}",
                    self.max_packet_size
                ),
            ));
        }
        if self.max_connections < 1 {
            return Err(ConfigError::key(
                origin,
                "limits.max_connections",
                format!("must be at least 1, got {}", self.max_connections),
            ));
        }
        let (min, max) = CONNECT_TIMEOUT_RANGE;
        if !(min..=max).contains(&self.connect_timeout_secs) {
            return Err(ConfigError::key(
                origin,
                "limits.connect_timeout_secs",
                format!(
                    "must be between {min} and {max}, got {}",
                    self.connect_timeout_secs
                ),
            ));
        }
        // MQTT 5.0 §3.2.2.3.3 (Receive Maximum): the value 0 is a Protocol Error, so the
        // in-flight window the broker advertises must be at least 1.
        if self.max_inflight_messages < 1 {
            return Err(ConfigError::key(
                origin,
                "limits.max_inflight_messages",
                format!("must be at least 1, got {}", self.max_inflight_messages),
            ));
        }
        if self.max_topic_length < 1 || self.max_topic_levels < 1 {
            let key = if self.max_topic_length < 1 {
                "limits.max_topic_length"
            } else {
                "limits.max_topic_levels"
            };
            return Err(ConfigError::key(
                origin,
                key,
                "must be between 1 and 65535, got 0",
            ));
        }
        if self.max_queued_messages < 1 {
            return Err(ConfigError::key(
                origin,
                "limits.max_queued_messages",
                format!("must be at least 1, got {}", self.max_queued_messages),
            ));
        }
        Ok(())
    }
}

impl MqttConfig {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        const KEY: &str = "mqtt.auto_id_prefix";
        let prefix = &self.auto_id_prefix;
        if prefix.len() > MAX_AUTO_ID_PREFIX_LEN {
            return Err(ConfigError::key(
                origin,
                KEY,
                format!(
                    "must be at most {MAX_AUTO_ID_PREFIX_LEN} bytes, got {} bytes",
                    prefix.len()
                ),
            ));
        }
        // Assigned ids must be usable wherever a client id may appear in a topic or ACL pattern,
        // so they may not contain topic separators or wildcards.
        if let Some(c) = prefix.chars().find(|c| matches!(c, '/' | '+' | '#')) {
            return Err(ConfigError::key(
                origin,
                KEY,
                format!("must not contain '{c}', got {prefix:?}"),
            ));
        }
        // [MQTT-1.5.3-2] a UTF-8 encoded string MUST NOT include an encoding of U+0000.
        if prefix.contains('\0') {
            return Err(ConfigError::key(
                origin,
                KEY,
                format!("must not contain the character U+0000, got {prefix:?}"),
            ));
        }
        if self.max_keepalive < 1 {
            return Err(ConfigError::key(
                origin,
                "mqtt.max_keepalive",
                "must be between 1 and 65535, got 0",
            ));
        }
        // MQTT 5.0 §3.2.2.3.3: a Receive Maximum of 0 is a Protocol Error.
        if self.receive_maximum < 1 {
            return Err(ConfigError::key(
                origin,
                "mqtt.receive_maximum",
                "must be between 1 and 65535, got 0",
            ));
        }
        if self.maximum_qos > 2 {
            return Err(ConfigError::key(
                origin,
                "mqtt.maximum_qos",
                format!("must be 0, 1 or 2, got {}", self.maximum_qos),
            ));
        }
        Ok(())
    }
}

/// Parses `IP:port` with a message that shows the expected form and the offending value.
fn deserialize_socket_addr<'de, D>(deserializer: D) -> Result<SocketAddr, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "expected an IP address and port such as \"127.0.0.1:1883\" or \"[::1]:1883\", \
             got {text:?}"
        ))
    })
}

/// Formats a TOML syntax or type error as `<origin>: line L, column C: key 'a.b': <message>`.
fn parse_error(
    text: &str,
    origin: &str,
    err: &serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let inner = err.inner();
    let mut msg = format!("{origin}: ");
    if let Some((line, column)) = inner.span().and_then(|span| line_column(text, span.start)) {
        let _ = write!(msg, "line {line}, column {column}: ");
    }
    let path = err.path().to_string();
    if path != "." {
        let _ = write!(msg, "key '{path}': ");
    }
    // serde quotes names with backticks; plain quotes read better in a terminal. Syntax errors
    // come on several lines; keep the whole error on one.
    let message = inner.message().trim_end().replace('`', "'");
    msg.push_str(&message.lines().collect::<Vec<_>>().join("; "));
    ConfigError(msg)
}

/// 1-based line and column (in characters) of the byte offset `offset` in `text`.
fn line_column(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "mqtt-server.toml")
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn invalid(config: &Config) -> String {
        match config.validate("test.toml") {
            Ok(()) => panic!("expected a validation error for {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn listener(bind: &str) -> ListenerConfig {
        ListenerConfig {
            bind: bind.parse().unwrap(),
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            tls: None,
        }
    }

    fn with_listeners(binds: &[&str]) -> Config {
        Config {
            listeners: binds.iter().map(|bind| listener(bind)).collect(),
            ..Config::default()
        }
    }

    /// A unique path in the temporary directory (no `tempfile` crate in dev-dependencies).
    fn temp_path(name: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!(
            "mqtt-server-config-{}-{n}-{name}",
            std::process::id()
        ))
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let c = Config::default();
        assert_eq!(c.log_level, "info");
        assert_eq!(c.listeners, vec![listener("127.0.0.1:1883")]);
        assert_eq!(c.limits.max_packet_size, 1_048_576);
        assert_eq!(c.limits.max_connections, 10_000);
        assert_eq!(c.limits.connect_timeout_secs, 10);
        assert_eq!(c.limits.connect_timeout(), Duration::from_secs(10));
        assert_eq!(c.limits.max_inflight_messages, 20);
        assert_eq!(c.limits.max_queued_messages, 1000);
        assert!(c.mqtt.allow_zero_length_client_id);
        assert_eq!(c.mqtt.auto_id_prefix, "auto-");
        assert!(!c.mqtt.queue_qos0_messages);
        assert!(c.mqtt.retain_available);
        assert!(c.validate("<default>").is_ok());
    }

    #[test]
    fn persistence_settings_are_checked_and_named() {
        let c =
            parse("[persistence]\nenabled = true\npath = \"/tmp/x\"\ndurability = \"periodic\"\n")
                .expect("valid");
        assert_eq!(c.persistence.durability, Durability::Periodic);
        let e = parse_err("[persistence]\nflush_interval_ms = 5\n");
        assert!(e.contains("persistence.flush_interval_ms"), "{e}");
        let e = parse_err("[persistence]\ndurability = \"always\"\n");
        assert!(e.contains("durability"), "{e}");
        let e = parse_err("[persistence]\nenabled = true\npath = \"\"\n");
        assert!(e.contains("persistence.path"), "{e}");
    }

    #[test]
    fn readme_configuration_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("README has a TOML example") + 8;
        let len = readme[start..].find("```").expect("closed block");
        let config = Config::from_toml_str(&readme[start..start + len], "README.md")
            .expect("the README's example is a valid configuration");
        assert!(config.persistence.enabled);
    }

    #[test]
    fn embedded_sample_parses_to_exactly_the_default() {
        let parsed = Config::from_toml_str(DEFAULT_CONFIG_TOML, "<embedded>");
        assert_eq!(parsed.unwrap(), Config::default());
    }

    #[test]
    fn embedded_sample_sets_every_option_explicitly() {
        // "All options present": each key of the structs appears as `key = ` in the sample
        // (allow_anonymous only commented out, since its default is "unset").
        for key in [
            "log_level",
            "bind",
            "max_packet_size",
            "max_connections",
            "connect_timeout_secs",
            "max_inflight_messages",
            "max_queued_messages",
            "allow_zero_length_client_id",
            "auto_id_prefix",
            "queue_qos0_messages",
            "retain_available",
        ] {
            let set = DEFAULT_CONFIG_TOML
                .lines()
                .any(|line| line.starts_with(&format!("{key} = ")));
            assert!(set, "{key} is not set in mqtt-server.toml");
        }
        assert!(DEFAULT_CONFIG_TOML.contains("# allow_anonymous = true"));
        for table in ["[[listener]]", "[limits]", "[mqtt]"] {
            assert!(DEFAULT_CONFIG_TOML.lines().any(|l| l == table), "{table}");
        }
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_document_keeps_other_defaults() {
        let c = parse("[limits]\nmax_connections = 5\n[mqtt]\nretain_available = false\n").unwrap();
        assert_eq!(c.limits.max_connections, 5);
        assert!(!c.mqtt.retain_available);
        let expected = Config {
            limits: Limits {
                max_connections: 5,
                ..Limits::default()
            },
            mqtt: MqttConfig {
                retain_available: false,
                ..MqttConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn listeners_replace_the_default_listener() {
        let text = "[[listener]]\nbind = \"0.0.0.0:1883\"\nallow_anonymous = true\n\
                    [[listener]]\nbind = \"[::1]:8883\"\n";
        let c = parse(text).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].bind, "0.0.0.0:1883".parse().unwrap());
        assert_eq!(c.listeners[0].allow_anonymous, Some(true));
        assert_eq!(c.listeners[1].bind, "[::1]:8883".parse().unwrap());
        assert_eq!(c.listeners[1].allow_anonymous, None);
    }

    #[test]
    fn anonymous_allowed_defaults_to_loopback_only() {
        assert!(listener("127.0.0.1:1883").anonymous_allowed());
        assert!(listener("127.8.9.10:1883").anonymous_allowed());
        assert!(listener("[::1]:1883").anonymous_allowed());
        assert!(listener("[::ffff:127.0.0.1]:1883").anonymous_allowed());
        assert!(!listener("0.0.0.0:1883").anonymous_allowed());
        assert!(!listener("[::]:1883").anonymous_allowed());
        assert!(!listener("192.168.1.5:1883").anonymous_allowed());
        assert!(!listener("[::ffff:10.0.0.1]:1883").anonymous_allowed());
    }

    #[test]
    fn anonymous_allowed_explicit_setting_wins() {
        let mut open = listener("0.0.0.0:1883");
        open.allow_anonymous = Some(true);
        assert!(open.anonymous_allowed());
        let mut closed = listener("127.0.0.1:1883");
        closed.allow_anonymous = Some(false);
        assert!(!closed.anonymous_allowed());
    }

    #[test]
    fn unknown_key_names_file_line_column_and_path() {
        let text = "log_level = \"info\"\n\n[limits]\nmax_connections = 3\n\
                    connect_timeout_secs = 5\nmax_inflight_messages = 2\nmax_pakcet_size = 9\n";
        let err = parse_err(text);
        assert!(
            err.starts_with(
                "mqtt-server.toml: line 7, column 1: key 'limits.max_pakcet_size': \
                 unknown field 'max_pakcet_size', expected one of 'max_packet_size',"
            ),
            "{err}"
        );
        assert!(!err.contains('`'), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let err = parse_err("loglevel = \"debug\"\n");
        assert!(
            err.starts_with("mqtt-server.toml: line 1, column 1: key 'loglevel': unknown field"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_key_and_value_position() {
        let err = parse_err("[limits]\nmax_packet_size = \"big\"\n");
        assert_eq!(
            err,
            "mqtt-server.toml: line 2, column 19: key 'limits.max_packet_size': \
             invalid type: string \"big\", expected u32"
        );
        let err = parse_err("[limits]\nmax_inflight_messages = 70000\n");
        assert!(err.contains("key 'limits.max_inflight_messages'"), "{err}");
        assert!(err.contains("expected u16"), "{err}");
    }

    #[test]
    fn bad_listener_address_names_the_listener_index() {
        let text = "[[listener]]\nbind = \"127.0.0.1:1883\"\n[[listener]]\nbind = \"localhost\"\n";
        let err = parse_err(text);
        assert!(
            err.starts_with("mqtt-server.toml: line 4, column 8: key 'listener[1].bind': expected"),
            "{err}"
        );
        assert!(err.contains("got \"localhost\""), "{err}");
    }

    #[test]
    fn listener_without_bind_is_rejected() {
        let err = parse_err("[[listener]]\nallow_anonymous = true\n");
        assert!(
            err.contains("key 'listener[0]': missing field 'bind'"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_has_position_on_one_line() {
        let err = parse_err("log_level = \"info\"\n[mqtt\n");
        assert!(
            err.starts_with("mqtt-server.toml: line 2, column "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        assert!(!err.contains("key '"), "{err}");
    }

    #[test]
    fn line_column_counts_characters_not_bytes() {
        assert_eq!(line_column("ab\ncé\nx", 0), Some((1, 1)));
        assert_eq!(line_column("ab\ncé\nx", 3), Some((2, 1)));
        assert_eq!(line_column("ab\ncé\nx", 6), Some((2, 3)));
        assert_eq!(line_column("ab\ncé\nx", 7), Some((3, 1)));
        // Inside a multi-byte character or past the end: no position rather than a panic.
        assert_eq!(line_column("ab\ncé\nx", 5), None);
        assert_eq!(line_column("ab", 9), None);
    }

    #[test]
    fn max_packet_size_bounds() {
        let mut c = Config::default();
        for ok in [2, 3, 1_048_576, 268_435_455] {
            c.limits.max_packet_size = ok;
            assert!(c.validate("t").is_ok(), "{ok}");
        }
        c.limits.max_packet_size = 0;
        assert_eq!(
            invalid(&c),
            "test.toml: key 'limits.max_packet_size': must be between 2 and 268435455, got 0"
        );
        c.limits.max_packet_size = 1;
        assert!(invalid(&c).ends_with("got 1"));
        c.limits.max_packet_size = 268_435_456;
        assert!(invalid(&c).ends_with("got 268435456"));
    }

    #[test]
    fn parse_runs_validation_with_the_origin() {
        let err = parse_err("[limits]\nmax_packet_size = 0\n");
        assert_eq!(
            err,
            "mqtt-server.toml: key 'limits.max_packet_size': must be between 2 and 268435455, got 0"
        );
    }

    #[test]
    fn max_connections_at_least_one() {
        let mut c = Config::default();
        c.limits.max_connections = 0;
        assert_eq!(
            invalid(&c),
            "test.toml: key 'limits.max_connections': must be at least 1, got 0"
        );
        c.limits.max_connections = 1;
        assert!(c.validate("t").is_ok());
    }

    #[test]
    fn connect_timeout_bounds() {
        let mut c = Config::default();
        for ok in [1, 3600] {
            c.limits.connect_timeout_secs = ok;
            assert!(c.validate("t").is_ok(), "{ok}");
        }
        for bad in [0, 3601, u64::MAX] {
            c.limits.connect_timeout_secs = bad;
            assert_eq!(
                invalid(&c),
                format!(
                    "test.toml: key 'limits.connect_timeout_secs': \
                     must be between 1 and 3600, got {bad}"
                )
            );
        }
    }

    #[test]
    fn inflight_and_queue_at_least_one() {
        let mut c = Config::default();
        c.limits.max_inflight_messages = 0;
        assert!(invalid(&c).contains("key 'limits.max_inflight_messages': must be at least 1"));
        c.limits.max_inflight_messages = 1;
        c.limits.max_queued_messages = 0;
        assert!(invalid(&c).contains("key 'limits.max_queued_messages': must be at least 1"));
        c.limits.max_queued_messages = 1;
        assert!(c.validate("t").is_ok());
    }

    #[test]
    fn security_settings_are_validated() {
        let mut c = Config::default();
        c.limits.max_topic_levels = 0;
        assert!(invalid(&c).contains("key 'limits.max_topic_levels'"));
        c.limits.max_topic_levels = 1;
        c.limits.max_topic_length = 0;
        assert!(invalid(&c).contains("key 'limits.max_topic_length'"));
        c.limits.max_topic_length = 1;
        c.auth.v5_subscribe_denied_code = 0x81;
        assert!(invalid(&c).contains("key 'auth.v5_subscribe_denied_code'"));
        c.auth.v5_subscribe_denied_code = 0x80;
        c.mqtt.maximum_qos = 3;
        assert!(invalid(&c).contains("key 'mqtt.maximum_qos'"));
        c.mqtt.maximum_qos = 1;
        c.mqtt.receive_maximum = 0;
        assert!(invalid(&c).contains("key 'mqtt.receive_maximum'"));
        c.mqtt.receive_maximum = 1;
        assert!(c.validate("t").is_ok());
    }

    #[test]
    fn at_least_one_listener() {
        let err = parse_err("listener = []\n");
        assert_eq!(
            err,
            "mqtt-server.toml: key 'listener': at least one [[listener]] is required"
        );
    }

    #[test]
    fn duplicate_listener_addresses_are_rejected() {
        let c = with_listeners(&["127.0.0.1:1883", "127.0.0.1:1884", "127.0.0.1:1883"]);
        assert_eq!(
            invalid(&c),
            "test.toml: key 'listener[2].bind': 127.0.0.1:1883 conflicts with listener[0] \
             bound to 127.0.0.1:1883"
        );
    }

    #[test]
    fn unspecified_address_conflicts_with_same_family_and_port() {
        let c = with_listeners(&["127.0.0.1:1883", "0.0.0.0:1883"]);
        assert!(invalid(&c).contains("key 'listener[1].bind'"));
        let c = with_listeners(&["[::]:1883", "[::1]:1883"]);
        assert!(invalid(&c).contains("key 'listener[1].bind'"));
        // Different port, or a different address family: both can bind.
        let c = with_listeners(&["0.0.0.0:1883", "127.0.0.1:1884"]);
        assert!(c.validate("t").is_ok());
        let c = with_listeners(&["127.0.0.1:1883", "[::1]:1883"]);
        assert!(c.validate("t").is_ok());
    }

    #[test]
    fn port_zero_may_repeat() {
        let c = with_listeners(&["127.0.0.1:0", "127.0.0.1:0"]);
        assert!(c.validate("t").is_ok());
    }

    #[test]
    fn log_level_must_not_be_empty() {
        let mut c = Config::default();
        for bad in ["", "   "] {
            c.log_level = bad.to_owned();
            assert_eq!(invalid(&c), "test.toml: key 'log_level': must not be empty");
        }
        c.log_level = "warn,mqtt_server=trace".to_owned();
        assert!(c.validate("t").is_ok());
    }

    #[test]
    fn auto_id_prefix_rules() {
        let mut c = Config::default();
        for ok in ["", "auto-", "ÿ-client", &"a".repeat(32)] {
            c.mqtt.auto_id_prefix = ok.to_owned();
            assert!(c.validate("t").is_ok(), "{ok:?}");
        }
        for (bad, what) in [
            ("a/b", "must not contain '/'"),
            ("a+", "must not contain '+'"),
            ("#", "must not contain '#'"),
            ("a\0b", "must not contain the character U+0000"),
        ] {
            c.mqtt.auto_id_prefix = bad.to_owned();
            let err = invalid(&c);
            assert!(
                err.starts_with(&format!("test.toml: key 'mqtt.auto_id_prefix': {what}")),
                "{err}"
            );
        }
        c.mqtt.auto_id_prefix = "a".repeat(33);
        assert_eq!(
            invalid(&c),
            "test.toml: key 'mqtt.auto_id_prefix': must be at most 32 bytes, got 33 bytes"
        );
        // The limit counts bytes: 16 two-byte characters fit, 17 don't.
        c.mqtt.auto_id_prefix = "é".repeat(16);
        assert!(c.validate("t").is_ok());
        c.mqtt.auto_id_prefix = "é".repeat(17);
        assert!(invalid(&c).contains("got 34 bytes"));
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let path = temp_path("good.toml");
        std::fs::write(&path, "[limits]\nmax_connections = 7\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.limits.max_connections, 7);

        std::fs::write(&path, "[limits]\nmax_connections = 0\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: key 'limits.max_connections': must be at least 1, got 0",
                path.display()
            )
        );

        std::fs::write(&path, "[limits]\nmax_conections = 1\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: line 2, column 1: key 'limits.max_conections'",
                path.display()
            )),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn load_of_missing_file_names_path_and_os_error() {
        let path = temp_path("missing.toml");
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("No such file or directory"), "{err}");
    }

    #[test]
    fn load_of_non_utf8_file_is_an_error() {
        let path = temp_path("binary.toml");
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
