//! Client authentication: user names and passwords checked against a Mosquitto-compatible
//! store, and MQTT 5 enhanced authentication (pluggable methods; SCRAM-SHA-256 built in).

pub mod acl;
pub mod ban;
pub mod credentials;
pub mod enhanced;
pub mod password_file;
pub mod scram;

/// Where the ACL in force lives: replaced as a whole on reload, read on every check. A slot
/// exists only where an ACL file is configured (an empty ACL, which denies everything, until
/// the file is loaded at start-up).
pub type AclSlot = parking_lot::RwLock<std::sync::Arc<acl::Acl>>;
