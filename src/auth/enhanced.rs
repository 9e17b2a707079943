//! MQTT 5 enhanced authentication (MQTT 5.0 section 4.12, AUTH packet section 3.15): the
//! pluggable interface between the connection handshake and one authentication method.
//!
//! A client that puts an Authentication Method in its CONNECT asks for a challenge/response
//! exchange instead of (or besides) the user name and password check. The connection looks the
//! method up in [`Authenticators`]; an unknown method is refused with
//! [`BAD_AUTHENTICATION_METHOD`] ([`Authenticators::start`] does that). Otherwise
//! [`Authenticator::start`] sees the CONNECT's Authentication Data and answers with an
//! [`AuthStep`]:
//!
//! * [`AuthStep::Continue`]: the server sends AUTH with reason [`CONTINUE_AUTHENTICATION`]
//!   carrying `data`, and hands the client's next AUTH (reason 0x18) to `next`
//!   ([`AuthExchange::step`]), which answers with another [`AuthStep`];
//! * [`AuthStep::Success`]: CONNACK 0x00 (or AUTH 0x00 after a re-authentication);
//! * [`AuthStep::Failure`]: CONNACK with the reason code (or DISCONNECT after a failed
//!   re-authentication) and the connection is closed.
//!
//! The same flow starts from an AUTH with reason [`RE_AUTHENTICATE`] on an established
//! connection (re-authentication, 4.12.1).
//!
//! What the connection, not the authenticator, is responsible for:
//!
//! * `// [MQTT-4.12.0-1]` an unsupported Authentication Method MAY be answered with CONNACK 0x8C
//!   or 0x87 and the connection MUST be closed;
//! * `// [MQTT-4.12.0-2]` a server AUTH asking for more data carries reason 0x18, and
//!   `// [MQTT-4.12.0-3]` the client answers with AUTH 0x18 (any other reason is a protocol
//!   error);
//! * `// [MQTT-4.12.0-4]` the server may reject at any point with CONNACK >= 0x80 and MUST
//!   close the connection;
//! * `// [MQTT-4.12.0-5]` every AUTH and the successful CONNACK carry the CONNECT's
//!   Authentication Method;
//! * `// [MQTT-4.12.0-6]` without an Authentication Method in CONNECT the server sends no AUTH,
//!   and `// [MQTT-4.12.0-7]` an AUTH from such a client is a protocol error;
//! * `// [MQTT-4.12.1-1]` a re-authentication uses the original method, and
//!   `// [MQTT-4.12.1-2]` a failed one SHOULD be answered with DISCONNECT and the connection
//!   MUST be closed;
//! * a time limit on the whole exchange (the authenticator never sees time pass).
//!
//! Everything here is synchronous: a step is pure CPU work (SCRAM hashes a few HMACs) and runs on
//! the connection's task. An authenticator that needs I/O (a database, an HTTP call) should not
//! block here; do that I/O in the async `on_connect` hook instead (see `crate::hooks`), for
//! example by letting the authenticator establish the identity and the hook decide on it.
//!
//! The bytes an exchange sees come from the network: an authenticator must answer anything
//! malformed with [`AuthStep::Failure`], never panic.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// AUTH reason code 0x18, Continue authentication: sent by the server with a challenge, and by
/// the client with its answer.
pub const CONTINUE_AUTHENTICATION: u8 = 0x18;

/// AUTH reason code 0x19, Re-authenticate: sent by the client to start a new exchange on an
/// established connection.
pub const RE_AUTHENTICATE: u8 = 0x19;

/// CONNACK / DISCONNECT reason code 0x86, Bad User Name or Password.
pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;

/// CONNACK / DISCONNECT reason code 0x87, Not authorized.
pub const NOT_AUTHORIZED: u8 = 0x87;

/// CONNACK / DISCONNECT reason code 0x8C, Bad authentication method.
pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;

/// What an authenticator decides at each step of an exchange.
pub enum AuthStep {
    /// Send AUTH with reason 0x18 (Continue authentication) carrying `data`; the client's next
    /// AUTH goes to `next`.
    Continue {
        /// Authentication Data of the server's AUTH packet.
        data: Bytes,
        /// The exchange, waiting for the client's next AUTH packet.
        next: Box<dyn AuthExchange>,
    },
    /// Authenticated. `data` goes into the CONNACK (or re-auth AUTH 0x00) as Authentication
    /// Data; `username` is the identity established (used for ACLs/hooks).
    Success {
        /// Authentication Data of the CONNACK (or AUTH 0x00), if any.
        data: Option<Bytes>,
        /// The identity the exchange proved, if the method establishes one.
        username: Option<String>,
    },
    /// Refused: the server answers CONNACK with `reason` (0x86 Bad User Name or Password, 0x87
    /// Not authorized, 0x8C Bad authentication method) and closes.
    Failure {
        /// The CONNACK (or DISCONNECT, after a re-authentication) reason code, >= 0x80.
        reason: u8,
    },
}

impl AuthStep {
    /// A [`AuthStep::Failure`] with `reason`.
    pub fn failure(reason: u8) -> AuthStep {
        AuthStep::Failure { reason }
    }
}

impl fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthStep::Continue { data, .. } => f
                .debug_struct("Continue")
                .field("data", data)
                .finish_non_exhaustive(),
            AuthStep::Success { data, username } => f
                .debug_struct("Success")
                .field("data", data)
                .field("username", username)
                .finish(),
            AuthStep::Failure { reason } => f
                .debug_struct("Failure")
                .field("reason", &format_args!("{reason:#04x}"))
                .finish(),
        }
    }
}

/// A started exchange waiting for the client's next AUTH packet.
pub trait AuthExchange: Send {
    /// The client's Authentication Data from its AUTH packet (reason 0x18).
    fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthStep;
}

/// One enhanced-authentication method (an Authentication Method name such as "SCRAM-SHA-256").
pub trait Authenticator: Send + Sync + 'static {
    /// The Authentication Method this authenticator serves (compared exactly, case-sensitive).
    fn method(&self) -> &str;

    /// Starts an exchange from the CONNECT (or re-authentication AUTH 0x19) packet.
    ///
    /// `username` is the CONNECT's User Name field, if present; on re-authentication the
    /// connection may pass the identity established earlier, so that a method that checks it
    /// (SCRAM does) refuses a switch of identity. `data` is the packet's Authentication Data.
    fn start(&self, client_id: &str, username: Option<&str>, data: Option<&[u8]>) -> AuthStep;
}

/// The set of authenticators a broker offers, by method name.
///
/// Cloning is cheap (the authenticators are shared).
#[derive(Default, Clone)]
pub struct Authenticators {
    by_method: HashMap<String, Arc<dyn Authenticator>>,
}

impl Authenticators {
    /// Offers `a` under its [`Authenticator::method`], replacing any authenticator already
    /// offered under the same name.
    pub fn add(&mut self, a: Arc<dyn Authenticator>) {
        self.by_method.insert(a.method().to_owned(), a);
    }

    /// The authenticator serving `method` (exact, case-sensitive match).
    pub fn get(&self, method: &str) -> Option<Arc<dyn Authenticator>> {
        self.by_method.get(method).cloned()
    }

    /// Whether no method is offered (every CONNECT with an Authentication Method is refused).
    pub fn is_empty(&self) -> bool {
        self.by_method.is_empty()
    }

    /// The offered method names, in no particular order.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.by_method.keys().map(String::as_str)
    }

    /// Starts an exchange with the authenticator serving `method`, or fails with
    /// [`BAD_AUTHENTICATION_METHOD`] if none does.
    pub fn start(
        &self,
        method: &str,
        client_id: &str,
        username: Option<&str>,
        data: Option<&[u8]>,
    ) -> AuthStep {
        match self.by_method.get(method) {
            Some(a) => a.start(client_id, username, data),
            // [MQTT-4.12.0-1] If the Server does not support the Authentication Method supplied
            // by the Client, it MAY send a CONNACK with a Reason Code of 0x8C (Bad
            // authentication method) or 0x87 (Not Authorized) and MUST close the Network
            // Connection.
            None => AuthStep::failure(BAD_AUTHENTICATION_METHOD),
        }
    }
}

impl fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<&str> = self.methods().collect();
        methods.sort_unstable();
        f.debug_struct("Authenticators")
            .field("methods", &methods)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers "ping" with "pong", then succeeds if the client says "ok".
    struct PingPong;

    struct AwaitOk;

    impl AuthExchange for AwaitOk {
        fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthStep {
            if data == Some(b"ok".as_slice()) {
                AuthStep::Success {
                    data: None,
                    username: Some("pinger".to_owned()),
                }
            } else {
                AuthStep::failure(NOT_AUTHORIZED)
            }
        }
    }

    impl Authenticator for PingPong {
        fn method(&self) -> &str {
            "PING"
        }

        fn start(&self, _: &str, _: Option<&str>, data: Option<&[u8]>) -> AuthStep {
            if data == Some(b"ping".as_slice()) {
                AuthStep::Continue {
                    data: Bytes::from_static(b"pong"),
                    next: Box::new(AwaitOk),
                }
            } else {
                AuthStep::failure(BAD_USER_NAME_OR_PASSWORD)
            }
        }
    }

    struct Named(&'static str);

    impl Authenticator for Named {
        fn method(&self) -> &str {
            self.0
        }

        fn start(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> AuthStep {
            AuthStep::Success {
                data: None,
                username: Some(self.0.to_owned()),
            }
        }
    }

    #[test]
    fn empty_set_refuses_every_method() {
        let set = Authenticators::default();
        assert!(set.is_empty());
        assert!(set.get("PING").is_none());
        assert!(matches!(
            set.start("PING", "c", None, Some(b"ping")),
            AuthStep::Failure { reason: 0x8C }
        ));
    }

    #[test]
    fn lookup_is_exact_and_case_sensitive() {
        let mut set = Authenticators::default();
        set.add(Arc::new(PingPong));
        assert!(!set.is_empty());
        assert!(set.get("PING").is_some());
        assert!(set.get("ping").is_none());
        assert!(set.get("PING ").is_none());
        assert_eq!(set.methods().collect::<Vec<_>>(), ["PING"]);
    }

    #[test]
    fn add_replaces_same_method_and_keeps_others() {
        let mut set = Authenticators::default();
        set.add(Arc::new(Named("A")));
        set.add(Arc::new(Named("B")));
        set.add(Arc::new(Named("A")));
        let mut methods: Vec<&str> = set.methods().collect();
        methods.sort_unstable();
        assert_eq!(methods, ["A", "B"]);
        assert_eq!(
            format!("{set:?}"),
            r#"Authenticators { methods: ["A", "B"] }"#
        );
    }

    #[test]
    fn clones_share_authenticators() {
        let mut set = Authenticators::default();
        set.add(Arc::new(PingPong));
        let copy = set.clone();
        let (Some(a), Some(b)) = (set.get("PING"), copy.get("PING")) else {
            panic!("method missing from a clone");
        };
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_two_step_exchange_runs_through_the_trait_objects() {
        let mut set = Authenticators::default();
        set.add(Arc::new(PingPong));
        let AuthStep::Continue { data, next } = set.start("PING", "c", None, Some(b"ping")) else {
            panic!("expected Continue");
        };
        assert_eq!(&data[..], b"pong");
        match next.step(Some(b"ok")) {
            AuthStep::Success { data, username } => {
                assert_eq!(data, None);
                assert_eq!(username.as_deref(), Some("pinger"));
            }
            other => panic!("expected Success, got {other:?}"),
        }
        assert!(matches!(
            set.start("PING", "c", None, Some(b"pong")),
            AuthStep::Failure { reason: 0x86 }
        ));
    }

    #[test]
    fn debug_shows_the_step() {
        let s = format!("{:?}", AuthStep::failure(NOT_AUTHORIZED));
        assert_eq!(s, "Failure { reason: 0x87 }");
        let s = format!(
            "{:?}",
            AuthStep::Continue {
                data: Bytes::from_static(b"x"),
                next: Box::new(AwaitOk),
            }
        );
        assert!(s.starts_with("Continue { data: b\"x\""), "{s}");
    }

    #[test]
    fn exchanges_are_send() {
        fn is_send<T: Send>() {}
        is_send::<AuthStep>();
        is_send::<Authenticators>();
        fn is_sync<T: Sync>() {}
        is_sync::<Authenticators>();
    }
}
