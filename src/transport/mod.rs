//! Transports: where client byte streams come from. Each listener turns accepted connections
//! into a pair of async byte-stream halves for [`crate::connection`], which never knows
//! whether it reads TCP, TLS or WebSocket frames.

pub(crate) mod tcp;

use std::net::SocketAddr;

/// What a connection needs to know about the listener that accepted it.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    /// Address the listener is bound to.
    pub local_addr: SocketAddr,
    /// Whether clients without a user name are admitted.
    pub allow_anonymous: bool,
}
