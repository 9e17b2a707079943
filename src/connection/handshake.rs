//! CONNECT handling up to the decision: client identifier rules, authentication, the
//! application's `on_connect` hook, and the CONNACK code of a refusal.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rand::Rng;
use rand::distributions::Alphanumeric;
use tokio::io::AsyncWriteExt;

use super::handler::{auth_packet, reason};
use super::{ReadError, read_packet};
use crate::auth::enhanced::AuthStep;
use crate::broker::BrokerCore;
use crate::codec::{self, Connect, Packet, Properties, ProtocolVersion};
use crate::hooks::{ConnectDecision, ConnectRequest};
use crate::transport::{ListenerContext, Transport};

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
/// `on_connect` hook, which has the last word. `enhanced` is set when a client certificate or
/// enhanced authentication (section 4.12) already authenticated the client, `identity` is the
/// user name it established, if any.
pub(crate) async fn authenticate(
    core: &BrokerCore,
    listener: &ListenerContext,
    connect: &Connect,
    client_id: &str,
    remote_addr: Option<std::net::SocketAddr>,
    enhanced: bool,
    identity: Option<&str>,
) -> ConnectDecision {
    let password = connect.password.as_deref();
    let builtin = match connect.username.as_deref() {
        _ if enhanced => ConnectDecision::Accept,
        None => {
            if listener.allow_anonymous {
                ConnectDecision::Accept
            } else {
                ConnectDecision::NotAuthorized
            }
        }
        Some(user) => match listener
            .auth
            .credentials
            .verify(user, password.unwrap_or_default())
        {
            Some(true) => ConnectDecision::Accept,
            Some(false) => ConnectDecision::BadCredentials,
            // Without a password store, a user name is just a label (as in Mosquitto when no
            // password_file is set) on a listener that admits anonymous clients.
            // (Not when a password file is configured: an empty one still means "no user is
            // known", as in Mosquitto.)
            None if listener.auth.credentials.is_empty()
                && !listener.auth.password_file
                && listener.allow_anonymous =>
            {
                ConnectDecision::Accept
            }
            None => ConnectDecision::BadCredentials,
        },
    };
    let request = ConnectRequest {
        client_id,
        // The identity established (certificate or enhanced authentication) when there is one:
        // the hook must not be fooled by a user name the client merely claims.
        username: identity.or(connect.username.as_deref()),
        password,
        remote_addr,
        protocol: connect.protocol,
        clean_start: connect.clean_start,
        keep_alive: connect.keep_alive,
    };
    core.hooks.on_connect(&request, builtin).await
}

/// Checks the will against what the server supports (MQTT 5 only; older levels have no code
/// for it): the CONNACK reason code of a refusal.
pub(crate) fn check_will(core: &BrokerCore, connect: &Connect) -> Option<u8> {
    let will = connect.will.as_ref()?;
    if !connect.protocol.is_v5() {
        return None;
    }
    let mqtt = &core.config.mqtt;
    // [MQTT-3.2.2-12] a will QoS above the Maximum QoS: 0x9B.
    if will.qos as u8 > mqtt.maximum_qos {
        return Some(reason::QOS_NOT_SUPPORTED);
    }
    // [MQTT-3.2.2-13] a retained will when Retain Available is 0: 0x9A.
    if will.retain && !mqtt.retain_available {
        return Some(reason::RETAIN_NOT_SUPPORTED);
    }
    // Section 3.1.3.2.3: a will payload declared UTF-8 must be UTF-8 (0x99).
    let utf8 = will
        .properties
        .as_ref()
        .is_some_and(|p| p.payload_format_indicator == Some(1));
    if utf8 && std::str::from_utf8(&will.payload).is_err() {
        return Some(reason::PAYLOAD_FORMAT_INVALID);
    }
    None
}

/// What a successful enhanced authentication established.
pub(crate) struct EnhancedAuth {
    /// Authentication Data for the CONNACK.
    pub data: Option<Bytes>,
    /// The identity the method established.
    pub username: Option<String>,
}

/// Runs an enhanced-authentication exchange (MQTT 5.0 section 4.12): AUTH packets with reason
/// 0x18 until the authenticator decides. `Err(Some(code))` refuses with CONNACK `code`;
/// `Err(None)` means the connection is gone.
pub(crate) async fn enhanced_auth<T: Transport>(
    core: &BrokerCore,
    stream: &mut T,
    buf: &mut BytesMut,
    connect: &Connect,
    client_id: &str,
    method: &ByteString,
    data: Option<Bytes>,
) -> Result<EnhancedAuth, Option<u8>> {
    let Some(authenticator) = core.authenticator(method) else {
        // [MQTT-4.12.0-1] an unsupported Authentication Method: CONNACK 0x8C.
        tracing::debug!(%client_id, %method, "unsupported authentication method");
        return Err(Some(reason::BAD_AUTHENTICATION_METHOD));
    };
    let deadline = tokio::time::Instant::now() + core.config.limits.connect_timeout();
    let max_packet = core.config.limits.max_packet_size as usize;
    let mut step = authenticator.start(client_id, connect.username.as_deref(), data.as_deref());
    loop {
        match step {
            AuthStep::Success { data, username } => return Ok(EnhancedAuth { data, username }),
            AuthStep::Failure { reason } => {
                tracing::info!(%client_id, %method, "enhanced authentication failed");
                return Err(Some(reason));
            }
            AuthStep::Continue { data, next } => {
                // [MQTT-4.12.0-2] AUTH 0x18 carries the method and the data.
                let mut out = BytesMut::new();
                let packet = auth_packet(reason::CONTINUE_AUTHENTICATION, method, Some(data));
                if codec::encode(&packet, ProtocolVersion::V5, &mut out).is_err()
                    || stream.write_all(&out).await.is_err()
                {
                    return Err(None);
                }
                let read = read_packet(stream, buf, ProtocolVersion::V5, max_packet);
                let answer = match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(packet)) => packet,
                    Ok(Err(ReadError::Decode(e))) => return Err(Some(e.reason_code())),
                    Ok(Err(ReadError::Closed)) | Err(_) => return Err(None),
                };
                let Packet::Auth(auth) = answer else {
                    // Section 4.12: anything but AUTH during the exchange is a Protocol Error.
                    return Err(Some(reason::PROTOCOL_ERROR));
                };
                let props = auth.properties.unwrap_or_default();
                // [MQTT-4.12.0-5] the client's AUTH must carry the same method, with reason 0x18.
                if auth.reason != reason::CONTINUE_AUTHENTICATION
                    || props.authentication_method.as_deref() != Some(&**method)
                {
                    return Err(Some(reason::PROTOCOL_ERROR));
                }
                step = next.step(props.authentication_data.as_deref());
            }
        }
    }
}

/// The properties of a successful MQTT 5 CONNACK: what the server supports and what it decided
/// differently from the client's request.
pub(crate) fn connack_properties(
    core: &BrokerCore,
    requested: &Properties,
    assigned_id: Option<&ByteString>,
    expiry: u32,
    server_keep_alive: Option<u16>,
    auth: Option<(&ByteString, Option<Bytes>)>,
    client_id: &str,
) -> Box<Properties> {
    let mqtt = &core.config.mqtt;
    let limits = &core.config.limits;
    let mut p = Properties {
        // [MQTT-3.1.3-7], [MQTT-3.2.2-16] the identifier the server assigned.
        assigned_client_identifier: assigned_id.cloned(),
        // [MQTT-3.2.2-21] the keep-alive the client must use instead of its own.
        server_keep_alive,
        // Receive Maximum: QoS 2 messages the client may have awaiting PUBREL.
        receive_maximum: (mqtt.receive_maximum < u16::MAX).then_some(mqtt.receive_maximum),
        topic_alias_maximum: (mqtt.topic_alias_maximum > 0).then_some(mqtt.topic_alias_maximum),
        maximum_qos: (mqtt.maximum_qos < 2).then_some(mqtt.maximum_qos),
        retain_available: (!mqtt.retain_available).then_some(0),
        maximum_packet_size: Some(limits.max_packet_size),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(1),
        shared_subscription_available: Some(1),
        ..Properties::default()
    };
    // Section 3.2.2.3.2: the server's Session Expiry Interval when it differs from the request.
    if requested.session_expiry_interval.unwrap_or(0) != expiry {
        p.session_expiry_interval = Some(expiry);
    }
    if let Some((method, data)) = auth {
        p.authentication_method = Some(method.clone());
        p.authentication_data = data;
    }
    // [MQTT-3.1.2-28] Response Information only when the client asked for it (and one is
    // configured: the server MAY send it).
    if requested.request_response_information == Some(1) && !mqtt.response_information.is_empty() {
        let info = mqtt.response_information.replace("%c", client_id);
        p.response_information = Some(ByteString::from(info));
    }
    Box::new(p)
}

/// The keep-alive the connection runs with and the Server Keep Alive to announce: at most
/// `mqtt.max_keepalive`. MQTT 5 clients asking for more, or for 0 while a maximum is set, are
/// told the maximum ([MQTT-3.2.2-22]: otherwise the client's value is used); `None` refuses an
/// MQTT 3.1/3.1.1 client asking for more, which cannot be told (as Mosquitto does).
pub(crate) fn keep_alive(core: &BrokerCore, connect: &Connect) -> Option<(u16, Option<u16>)> {
    let max = core.config.mqtt.max_keepalive;
    let asked = connect.keep_alive;
    if asked <= max && (asked != 0 || max == u16::MAX) {
        return Some((asked, None));
    }
    if connect.protocol.is_v5() {
        Some((max, Some(max)))
    } else if asked > max {
        None
    } else {
        // 3.1.1 with keep-alive 0: allowed (nothing to tell it).
        Some((asked, None))
    }
}

/// The Session Expiry Interval of the session: what an MQTT 5 client asks for (absent = 0,
/// section 3.1.2.11.2), capped by `mqtt.session_expiry_interval`; for MQTT 3.1.1, 0 with Clean
/// Session 1 and the broker's value with Clean Session 0.
pub(crate) fn session_expiry(core: &BrokerCore, connect: &Connect, props: &Properties) -> u32 {
    let max = core.config.mqtt.session_expiry_interval;
    if connect.protocol.is_v5() {
        props.session_expiry_interval.unwrap_or(0).min(max)
    } else if connect.clean_start {
        0
    } else {
        max
    }
}
