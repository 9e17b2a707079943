//! Hooks: how an embedding application observes and decides on CONNECT, PUBLISH and SUBSCRIBE.
//!
//! Every method has a default that changes nothing, so an implementation overrides only what it
//! needs. `on_connect` is async (checking credentials against an external store may await); the
//! others run on the hot path of every packet and are plain functions: keep them fast and never
//! block in them.

use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{ProtocolVersion, QoS};

/// Who a client is, as the hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client identifier (the assigned one if the client sent an empty one).
    pub client_id: ByteString,
    /// User name from CONNECT, if any.
    pub username: Option<ByteString>,
    /// Peer address; `None` for in-process clients.
    pub remote_addr: Option<SocketAddr>,
    /// Negotiated protocol level.
    pub protocol: ProtocolVersion,
}

/// What the hooks see of a CONNECT packet before it is accepted.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// Client identifier (already assigned if the client sent an empty one).
    pub client_id: &'a str,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Password, if any.
    pub password: Option<&'a [u8]>,
    /// Peer address.
    pub remote_addr: Option<SocketAddr>,
    /// Requested protocol level.
    pub protocol: ProtocolVersion,
    /// Clean Session / Clean Start flag.
    pub clean_start: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
}

/// Outcome of authenticating a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectDecision {
    /// Accept the connection.
    Accept,
    /// Refuse: bad user name or password (CONNACK 0x04 in 3.1.1, 0x86 in 5.0).
    BadCredentials,
    /// Refuse: not authorized (CONNACK 0x05 in 3.1.1, 0x87 in 5.0).
    NotAuthorized,
    /// Refuse: client identifier not allowed (CONNACK 0x02 in 3.1.1, 0x85 in 5.0).
    IdentifierRejected,
}

/// A decision on a PUBLISH or SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead (with whatever the hook modified).
    Allow,
    /// Refuse: a PUBLISH is acknowledged as the protocol requires and dropped; a subscription
    /// gets the failure return code 0x80.
    Deny,
}

/// A PUBLISH as a hook may inspect and modify it before it is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDraft {
    /// Topic name; a hook may rewrite it (the result must still be a valid topic name, or the
    /// message is dropped).
    pub topic: ByteString,
    /// Payload; a hook may replace it.
    pub payload: Bytes,
    /// QoS the message is routed with.
    pub qos: QoS,
    /// Whether the message is retained.
    pub retain: bool,
}

/// Why a client's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientDisconnect,
    /// The client sent DISCONNECT with reason 0x04, asking for its will to be published
    /// (MQTT 5).
    ClientDisconnectWithWill,
    /// The connection dropped or failed.
    NetworkError,
    /// Nothing was received within 1.5 × keep-alive.
    KeepAliveTimeout,
    /// The client broke the protocol or sent a malformed packet.
    ProtocolError,
    /// Another connection took over the client id.
    Takeover,
    /// The broker is shutting down.
    Shutdown,
}

/// Application callbacks. Install with [`crate::Broker::with_hooks`].
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Decides on a CONNECT. `builtin` is what the broker's own checks (password file,
    /// `allow_anonymous`) concluded; return it to keep them, or decide otherwise.
    async fn on_connect(
        &self,
        request: &ConnectRequest<'_>,
        builtin: ConnectDecision,
    ) -> ConnectDecision {
        let _ = request;
        builtin
    }

    /// Called once a client is connected and its CONNACK is queued.
    fn on_connected(&self, client: &ClientInfo) {
        let _ = client;
    }

    /// Decides on a PUBLISH from a client, and may modify it.
    fn on_publish(&self, client: &ClientInfo, publish: &mut PublishDraft) -> Decision {
        let _ = (client, publish);
        Decision::Allow
    }

    /// Decides on one SUBSCRIBE entry, and may lower the QoS to grant.
    fn on_subscribe(&self, client: &ClientInfo, filter: &str, qos: &mut QoS) -> Decision {
        let _ = (client, filter, qos);
        Decision::Allow
    }

    /// Called for each UNSUBSCRIBE entry.
    fn on_unsubscribe(&self, client: &ClientInfo, filter: &str) {
        let _ = (client, filter);
    }

    /// Called when a client's connection ends.
    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        let _ = (client, reason);
    }
}

/// The hooks used when the application installs none.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {}

/// Hooks shared with the application (to read state they collect, for example).
#[async_trait]
impl<T: Hooks + ?Sized> Hooks for std::sync::Arc<T> {
    async fn on_connect(
        &self,
        request: &ConnectRequest<'_>,
        builtin: ConnectDecision,
    ) -> ConnectDecision {
        (**self).on_connect(request, builtin).await
    }
    fn on_connected(&self, client: &ClientInfo) {
        (**self).on_connected(client)
    }
    fn on_publish(&self, client: &ClientInfo, publish: &mut PublishDraft) -> Decision {
        (**self).on_publish(client, publish)
    }
    fn on_subscribe(&self, client: &ClientInfo, filter: &str, qos: &mut QoS) -> Decision {
        (**self).on_subscribe(client, filter, qos)
    }
    fn on_unsubscribe(&self, client: &ClientInfo, filter: &str) {
        (**self).on_unsubscribe(client, filter)
    }
    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        (**self).on_disconnect(client, reason)
    }
}
