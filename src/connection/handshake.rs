//! CONNECT handling up to the decision: client identifier rules, authentication, the
//! application's `on_connect` hook, and the CONNACK code of a refusal.

use bytestring::ByteString;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::broker::BrokerCore;
use crate::codec::{Connect, ProtocolVersion};
use crate::hooks::{ConnectDecision, ConnectRequest};
use crate::transport::ListenerContext;

/// CONNACK return code 0x01 (3.1.1) / reason 0x84 (5.0): unacceptable protocol version.
pub(crate) fn unsupported_version_code(version: Option<ProtocolVersion>) -> u8 {
    if version == Some(ProtocolVersion::V5) {
        0x84
    } else {
        0x01
    }
}

/// The CONNACK code for a refusal, in the connection's protocol level.
pub(crate) fn refusal_code(decision: ConnectDecision, version: ProtocolVersion) -> u8 {
    let v5 = version.is_v5();
    match decision {
        ConnectDecision::Accept => 0,
        ConnectDecision::IdentifierRejected => {
            if v5 {
                0x85
            } else {
                0x02
            }
        }
        ConnectDecision::BadCredentials => {
            if v5 {
                0x86
            } else {
                0x04
            }
        }
        ConnectDecision::NotAuthorized => {
            if v5 {
                0x87
            } else {
                0x05
            }
        }
    }
}

/// The client identifier this connection will use, or the refusal.
///
/// [MQTT-3.1.3-6] a zero-length client id with Clean Session 1 gets a unique id assigned;
/// [MQTT-3.1.3-8] with Clean Session 0 it is refused with return code 0x02. MQTT 3.1 (MQIsdp)
/// requires 1 to 23 characters: an empty id is refused there, longer ids are accepted as
/// every current broker does.
pub(crate) fn client_id(
    core: &BrokerCore,
    connect: &Connect,
) -> Result<(ByteString, bool), ConnectDecision> {
    if !connect.client_id.is_empty() {
        // A copy: the packet's fields are slices of the read buffer, which must not stay
        // pinned for the life of the session.
        return Ok((ByteString::from(&*connect.client_id), false));
    }
    let allowed = connect.clean_start
        && core.config.mqtt.allow_zero_length_client_id
        && connect.protocol != ProtocolVersion::V3_1;
    // MQTT 5 allows an empty id with Clean Start 0 too: the server assigns one
    // ([MQTT-3.1.3-6] in 5.0 numbering); the session then simply cannot be resumed.
    let allowed =
        allowed || (connect.protocol.is_v5() && core.config.mqtt.allow_zero_length_client_id);
    if !allowed {
        return Err(ConnectDecision::IdentifierRejected);
    }
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    Ok((
        ByteString::from(format!("{}{}", core.config.mqtt.auto_id_prefix, suffix)),
        true,
    ))
}

/// Runs the built-in checks (password store, `allow_anonymous`) and then the application's
/// `on_connect` hook, which has the last word.
pub(crate) async fn authenticate(
    core: &BrokerCore,
    listener: &ListenerContext,
    connect: &Connect,
    client_id: &str,
    remote_addr: Option<std::net::SocketAddr>,
) -> ConnectDecision {
    let password = connect.password.as_deref();
    let builtin = match connect.username.as_deref() {
        None => {
            if listener.allow_anonymous {
                ConnectDecision::Accept
            } else {
                ConnectDecision::NotAuthorized
            }
        }
        Some(user) => match core.credentials.verify(user, password.unwrap_or_default()) {
            Some(true) => ConnectDecision::Accept,
            Some(false) => ConnectDecision::BadCredentials,
            // Without a password store, a user name is just a label (as in Mosquitto when no
            // password_file is set) on a listener that admits anonymous clients.
            None if core.credentials.is_empty() && listener.allow_anonymous => {
                ConnectDecision::Accept
            }
            None => ConnectDecision::BadCredentials,
        },
    };
    let request = ConnectRequest {
        client_id,
        username: connect.username.as_deref(),
        password,
        remote_addr,
        protocol: connect.protocol,
        clean_start: connect.clean_start,
        keep_alive: connect.keep_alive,
    };
    core.hooks.on_connect(&request, builtin).await
}
