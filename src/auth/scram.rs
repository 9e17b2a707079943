//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced-authentication method, server side.
//!
//! The exchange over MQTT 5 (the same mapping EMQX uses):
//!
//! 1. CONNECT, Authentication Method `SCRAM-SHA-256`, Authentication Data =
//!    client-first-message, e.g. `n,,n=user,r=<client nonce>`;
//! 2. server → AUTH 0x18 (Continue authentication), data = server-first-message
//!    `r=<client nonce><server nonce>,s=<base64 salt>,i=4096`;
//! 3. client → AUTH 0x18, data = client-final-message `c=biws,r=<nonce>,p=<base64 proof>`;
//! 4. server → CONNACK 0x00, data = server-final-message `v=<base64 ServerSignature>`; the
//!    identity established is the SCRAM user name.
//!
//! The same exchange runs for a re-authentication (AUTH 0x19 carrying the client-first-message).
//!
//! # Stored credentials
//!
//! [`ScramSha256::add_user`] derives SaltedPassword with PBKDF2-HMAC-SHA-256 (4096 iterations,
//! the RFC 7677 minimum, and a fresh random 16-byte salt) and keeps only the salt, the
//! iteration count, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and ServerKey =
//! HMAC(SaltedPassword, "Server Key"). The password and SaltedPassword are never kept: the
//! stored struct has no field for them.
//!
//! # Refusals
//!
//! | what went wrong | reason code |
//! | --- | --- |
//! | the client asks for channel binding (gs2 flag `p=`, i.e. SCRAM-SHA-256-PLUS) | 0x8C Bad authentication method |
//! | wrong password, or a user name that is not in the store | 0x86 Bad User Name or Password, always at the proof step |
//! | anything else: missing or malformed data, not UTF-8, an authorization identity (`a=`), a mandatory extension (`m=`), a channel-binding echo (`c=`) or nonce (`r=`) that does not match, the CONNECT's User Name differing from the SCRAM user name | 0x87 Not authorized |
//!
//! No refusal before the proof step depends on whether the user exists: for an unknown user
//! the server answers with a server-first-message whose salt is derived deterministically
//! from a per-instance secret and the user name (so asking twice gives the same salt, as for
//! a real user), and fails at the proof step with the same 0x86 and the same hashing work as a
//! wrong password. This prevents user enumeration.
//!
//! # Limitations
//!
//! * No SASLprep (RFC 4013): user names and passwords given to [`ScramSha256::add_user`] must
//!   be printable ASCII (0x20..=0x7E), where SASLprep is the identity, so a client that does
//!   apply SASLprep computes the same keys. A user name on the wire that is not printable ASCII
//!   can match no user and is handled as an unknown user.
//! * No channel binding (SCRAM-SHA-256-PLUS); a client sending `y,,` (it supports channel
//!   binding but thinks the server does not) is accepted, which is correct since this server
//!   does not offer the -PLUS variant.
//! * No authorization identity: the gs2 header must be exactly `n,,` or `y,,`.
//! * The CONNECT's User Name field, if present, must equal the SCRAM user name (after
//!   decoding `=2C` / `=3D`), so that hooks and ACLs that read either see the same identity.
//!   On re-authentication, passing the connection's established user name as `username` to
//!   [`Authenticator::start`] likewise refuses (0x87) a switch to another identity.
//! * Unknown optional extensions (RFC 5802 `extensions`) are accepted and ignored.
//! * An exchange uses the user's credentials as they were when it started: a user removed or
//!   re-added while an exchange is in flight is seen by the next exchange.
//! * The per-instance secret is random at [`ScramSha256::new`], so an unknown user's fake salt
//!   changes across restarts; so does a real user's, since [`ScramSha256::add_user`] draws a
//!   new salt each time it runs.
//!
//! Message size is bounded by the MQTT Binary Data limit (65,535 bytes) of the Authentication
//! Data property; the connection's Maximum Packet Size bounds it further.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use parking_lot::RwLock;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::auth::enhanced::{
    AuthExchange, AuthStep, Authenticator, BAD_AUTHENTICATION_METHOD, BAD_USER_NAME_OR_PASSWORD,
    NOT_AUTHORIZED,
};

/// The Authentication Method name of SCRAM-SHA-256 (RFC 7677).
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// PBKDF2 iteration count of credentials made by [`ScramSha256::add_user`]: the minimum RFC
/// 7677 section 4 asks for.
pub const ITERATIONS: u32 = 4096;

/// Length in bytes of the random salt [`ScramSha256::add_user`] draws.
pub const SALT_LEN: usize = 16;

/// Length of a SHA-256 digest, and so of every SCRAM key, proof and signature.
const KEY_LEN: usize = 32;

/// Random bytes in a server nonce (base64-encoded into 24 printable characters).
const SERVER_NONCE_BYTES: usize = 18;

type HmacSha256 = Hmac<Sha256>;
type Key = [u8; KEY_LEN];

/// Why [`ScramSha256::add_user`] refused a user.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ScramUserError {
    /// The user name is empty (RFC 5802 `saslname` has at least one character).
    EmptyUserName,
    /// The user name has a character outside printable ASCII (0x20..=0x7E); see the module
    /// docs on SASLprep.
    UserNameNotPrintableAscii,
    /// The password has a character outside printable ASCII (0x20..=0x7E); see the module
    /// docs on SASLprep.
    PasswordNotPrintableAscii,
}

impl fmt::Display for ScramUserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScramUserError::EmptyUserName => "SCRAM user name is empty",
            ScramUserError::UserNameNotPrintableAscii => {
                "SCRAM user name must be printable ASCII (no SASLprep support)"
            }
            ScramUserError::PasswordNotPrintableAscii => {
                "SCRAM password must be printable ASCII (no SASLprep support)"
            }
        })
    }
}

impl std::error::Error for ScramUserError {}

/// What the server keeps of one user. There is deliberately no field for the password or
/// SaltedPassword: they are dropped once the keys are derived.
#[derive(Clone)]
struct Credentials {
    salt: [u8; SALT_LEN],
    iterations: u32,
    stored_key: Key,
    server_key: Key,
}

impl Credentials {
    /// RFC 5802 section 3: SaltedPassword = Hi(password, salt, i) (PBKDF2-HMAC-SHA-256),
    /// ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey),
    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    fn derive(password: &[u8], salt: [u8; SALT_LEN], iterations: u32) -> Credentials {
        let mut salted_password: Key = [0; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted_password);
        let client_key = hmac_sha256(&salted_password, &[b"Client Key"]);
        Credentials {
            salt,
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac_sha256(&salted_password, &[b"Server Key"]),
        }
    }
}

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Key {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        // Unreachable: HMAC accepts keys of every length. An all-zero result can only make
        // the proof check fail, never pass.
        return [0; KEY_LEN];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A fresh server nonce: random bytes, base64-encoded (printable, never `,`).
fn random_server_nonce() -> String {
    let mut bytes = [0u8; SERVER_NONCE_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A fresh random salt.
fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// Whether every character of `s` is printable ASCII (0x20..=0x7E).
fn is_printable_ascii(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

/// SCRAM-SHA-256 authenticator with an in-memory user store.
pub struct ScramSha256 {
    /// User name (decoded, as the client's SCRAM name decodes to) → credentials.
    users: RwLock<HashMap<String, Credentials>>,
    /// Key of the fake credentials of unknown users.
    secret: Key,
    /// Makes the server part of the nonce; replaced in tests to replay RFC vectors.
    server_nonce: fn() -> String,
    /// Makes the salt of [`ScramSha256::add_user`]; replaced in tests to replay RFC vectors.
    salt: fn() -> [u8; SALT_LEN],
}

impl Default for ScramSha256 {
    fn default() -> Self {
        ScramSha256::new()
    }
}

impl fmt::Debug for ScramSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSha256")
            .field("users", &self.len())
            .finish_non_exhaustive()
    }
}

impl ScramSha256 {
    /// An authenticator with no users; new users get [`ITERATIONS`] iterations and random
    /// [`SALT_LEN`]-byte salts.
    pub fn new() -> Self {
        let mut secret: Key = [0; KEY_LEN];
        rand::thread_rng().fill_bytes(&mut secret);
        ScramSha256 {
            users: RwLock::new(HashMap::new()),
            secret,
            server_nonce: random_server_nonce,
            salt: random_salt,
        }
    }

    /// Adds `username` with `password`, replacing the user's credentials if it exists. Derives
    /// SaltedPassword with PBKDF2-HMAC-SHA-256 and stores only StoredKey and ServerKey (with
    /// the salt and iteration count), never the password. Takes a few milliseconds (4096
    /// PBKDF2 iterations).
    ///
    /// Both must be printable ASCII, since this server does not implement SASLprep, and the
    /// user name must not be empty.
    pub fn add_user(&self, username: &str, password: &str) -> Result<(), ScramUserError> {
        if username.is_empty() {
            return Err(ScramUserError::EmptyUserName);
        }
        if !is_printable_ascii(username) {
            return Err(ScramUserError::UserNameNotPrintableAscii);
        }
        if !is_printable_ascii(password) {
            return Err(ScramUserError::PasswordNotPrintableAscii);
        }
        let credentials = Credentials::derive(password.as_bytes(), (self.salt)(), ITERATIONS);
        self.users.write().insert(username.to_owned(), credentials);
        Ok(())
    }

    /// Removes `username`; whether it was there.
    pub fn remove_user(&self, username: &str) -> bool {
        self.users.write().remove(username).is_some()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.read().len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.read().is_empty()
    }

    /// Credentials for a user name that is not in the store: deterministic in the user name
    /// and the per-instance secret, indistinguishable from real ones without the secret.
    fn fake_credentials(&self, username: &str) -> Credentials {
        let name = username.as_bytes();
        let salt_block = hmac_sha256(&self.secret, &[b"salt\0", name]);
        let mut salt = [0u8; SALT_LEN];
        for (s, b) in salt.iter_mut().zip(salt_block) {
            *s = b;
        }
        Credentials {
            salt,
            iterations: ITERATIONS,
            stored_key: hmac_sha256(&self.secret, &[b"stored-key\0", name]),
            server_key: hmac_sha256(&self.secret, &[b"server-key\0", name]),
        }
    }
}

impl Authenticator for ScramSha256 {
    fn method(&self) -> &str {
        SCRAM_SHA_256
    }

    fn start(&self, _client_id: &str, username: Option<&str>, data: Option<&[u8]>) -> AuthStep {
        // SCRAM is client-first: the CONNECT must carry the client-first-message.
        let Some(data) = data else {
            return AuthStep::failure(NOT_AUTHORIZED);
        };
        let first = match ClientFirst::parse(data) {
            Ok(first) => first,
            Err(reason) => return AuthStep::failure(reason),
        };
        // Both values come from the client, so refusing here reveals nothing about the store.
        if username.is_some_and(|name| name != first.username) {
            return AuthStep::failure(NOT_AUTHORIZED);
        }
        // The fake credentials are computed for known users too, so that this step takes the
        // same work whether or not the user exists.
        let fake = self.fake_credentials(&first.username);
        let found = self.users.read().get(&first.username).cloned();
        let known = found.is_some();
        let credentials = found.unwrap_or(fake);

        let nonce = format!("{}{}", first.client_nonce, (self.server_nonce)());
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(credentials.salt),
            credentials.iterations
        );
        AuthStep::Continue {
            data: Bytes::from(server_first.clone().into_bytes()),
            next: Box::new(AwaitClientFinal {
                gs2_header: first.gs2_header,
                client_first_bare: first.bare,
                server_first,
                nonce,
                username: first.username,
                credentials,
                known,
            }),
        }
    }
}

/// The parts of a client-first-message the rest of the exchange needs.
struct ClientFirst {
    /// `n,,` or `y,,`.
    gs2_header: &'static str,
    /// client-first-message-bare, verbatim (part of AuthMessage).
    bare: String,
    /// The SCRAM user name with `=2C` / `=3D` decoded.
    username: String,
    /// The client's nonce.
    client_nonce: String,
}

impl ClientFirst {
    /// Parses a client-first-message (RFC 5802 section 7):
    ///
    /// ```text
    /// client-first-message = gs2-header client-first-message-bare
    /// gs2-header = gs2-cbind-flag "," [ authzid ] ","
    /// gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
    /// client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    /// ```
    fn parse(data: &[u8]) -> Result<ClientFirst, u8> {
        let text = std::str::from_utf8(data).map_err(|_| NOT_AUTHORIZED)?;
        if text.starts_with("p=") {
            // Channel binding (SCRAM-SHA-256-PLUS) is not offered: the client asked for a
            // method this server does not serve.
            return Err(BAD_AUTHENTICATION_METHOD);
        }
        // Only "n,," and "y,,": no authorization identity ("a=").
        let (gs2_header, bare) = if let Some(bare) = text.strip_prefix("n,,") {
            ("n,,", bare)
        } else if let Some(bare) = text.strip_prefix("y,,") {
            ("y,,", bare)
        } else {
            return Err(NOT_AUTHORIZED);
        };
        let mut attributes = bare.split(',');
        // The first attribute must be the user name. This also refuses "m=" (reserved-mext):
        // RFC 5802 section 5.1, its presence "MUST cause authentication failure when the
        // attribute is parsed by the other end".
        let encoded_name = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(NOT_AUTHORIZED)?;
        let username = decode_saslname(encoded_name).ok_or(NOT_AUTHORIZED)?;
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|nonce| is_valid_nonce(nonce))
            .ok_or(NOT_AUTHORIZED)?;
        if !attributes.all(is_extension) {
            return Err(NOT_AUTHORIZED);
        }
        Ok(ClientFirst {
            gs2_header,
            bare: bare.to_owned(),
            username,
            client_nonce: client_nonce.to_owned(),
        })
    }
}

/// Decodes an RFC 5802 `saslname`: at least one character, no `,` and no NUL, `=` only as
/// `=2C` (`,`) or `=3D` (`=`). "If the server receives a username that contains '=' not
/// followed by either '2C' or '3D', then the server MUST fail the authentication."
fn decode_saslname(encoded: &str) -> Option<String> {
    if encoded.is_empty() || encoded.contains('\0') {
        return None;
    }
    let mut decoded = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('=') {
        decoded.push_str(rest.get(..at)?);
        let escape = rest.get(at..)?;
        if let Some(after) = escape.strip_prefix("=2C") {
            decoded.push(',');
            rest = after;
        } else if let Some(after) = escape.strip_prefix("=3D") {
            decoded.push('=');
            rest = after;
        } else {
            return None;
        }
    }
    decoded.push_str(rest);
    Some(decoded)
}

/// RFC 5802 `c-nonce`: one or more printable characters (0x21..=0x7E) other than `,`.
fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7E).contains(&b) && b != b',')
}

/// RFC 5802 `attr-val` = ALPHA "=" value, value non-empty. The split on `,` already removed
/// commas.
fn is_extension(attribute: &str) -> bool {
    let bytes = attribute.as_bytes();
    matches!(bytes, [name, b'=', _, ..] if name.is_ascii_alphabetic())
}

/// The exchange after the server-first-message was sent, waiting for the client-final-message.
struct AwaitClientFinal {
    gs2_header: &'static str,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by server nonce, as sent in the server-first-message.
    nonce: String,
    username: String,
    /// The user's credentials, or fake ones for an unknown user.
    credentials: Credentials,
    /// Whether `credentials` are real.
    known: bool,
}

impl AwaitClientFinal {
    /// Checks a client-final-message (RFC 5802 section 7):
    ///
    /// ```text
    /// client-final-message-without-proof = channel-binding "," nonce ["," extensions]
    /// client-final-message = client-final-message-without-proof "," proof
    /// ```
    ///
    /// and answers the server-final-message, or a failure reason.
    fn verify(&self, data: &[u8]) -> Result<String, u8> {
        let text = std::str::from_utf8(data).map_err(|_| NOT_AUTHORIZED)?;
        let (without_proof, proof_attribute) = text.rsplit_once(',').ok_or(NOT_AUTHORIZED)?;
        let proof = proof_attribute
            .strip_prefix("p=")
            .and_then(|p| STANDARD.decode(p).ok())
            .and_then(|p| Key::try_from(p.as_slice()).ok())
            .ok_or(NOT_AUTHORIZED)?;

        let mut attributes = without_proof.split(',');
        // The channel-binding echo: base64 of the gs2 header (no channel-binding data, since
        // "p=" was refused).
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .and_then(|c| STANDARD.decode(c).ok())
            .ok_or(NOT_AUTHORIZED)?;
        if binding != self.gs2_header.as_bytes() {
            return Err(NOT_AUTHORIZED);
        }
        // The nonce must be exactly the one the server sent.
        if attributes.next().and_then(|a| a.strip_prefix("r=")) != Some(self.nonce.as_str()) {
            return Err(NOT_AUTHORIZED);
        }
        if !attributes.all(is_extension) {
            return Err(NOT_AUTHORIZED);
        }

        // AuthMessage = client-first-message-bare + "," + server-first-message + "," +
        //               client-final-message-without-proof
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        // ClientSignature = HMAC(StoredKey, AuthMessage); ClientKey = ClientProof XOR
        // ClientSignature; the proof is right iff H(ClientKey) == StoredKey. The same work is
        // done for an unknown user, and the comparison is constant-time.
        let client_signature = hmac_sha256(&self.credentials.stored_key, &auth_message);
        let mut client_key: Key = [0; KEY_LEN];
        for ((k, p), s) in client_key.iter_mut().zip(proof).zip(client_signature) {
            *k = p ^ s;
        }
        let computed_stored_key: Key = Sha256::digest(client_key).into();
        let matches = computed_stored_key.ct_eq(&self.credentials.stored_key);
        let server_signature = hmac_sha256(&self.credentials.server_key, &auth_message);
        if bool::from(matches & subtle::Choice::from(u8::from(self.known))) {
            Ok(format!("v={}", STANDARD.encode(server_signature)))
        } else {
            Err(BAD_USER_NAME_OR_PASSWORD)
        }
    }
}

impl AuthExchange for AwaitClientFinal {
    fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthStep {
        let Some(data) = data else {
            return AuthStep::failure(NOT_AUTHORIZED);
        };
        match self.verify(data) {
            Ok(server_final) => AuthStep::Success {
                data: Some(Bytes::from(server_final.into_bytes())),
                username: Some(self.username),
            },
            Err(reason) => AuthStep::failure(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use scram::ScramClient;

    use super::*;
    use crate::auth::enhanced::Authenticators;

    // RFC 7677 section 3, the SCRAM-SHA-256 example.
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_salt() -> [u8; SALT_LEN] {
        let bytes = STANDARD.decode(RFC_SALT).unwrap();
        <[u8; SALT_LEN]>::try_from(bytes.as_slice()).unwrap()
    }

    /// A server whose nonces and salts are the RFC 7677 example's, with user "user" /
    /// "pencil".
    fn rfc_server() -> ScramSha256 {
        let server = ScramSha256 {
            server_nonce: || RFC_SERVER_NONCE.to_owned(),
            salt: rfc_salt,
            ..ScramSha256::new()
        };
        server.add_user("user", "pencil").unwrap();
        server
    }

    fn server_with(users: &[(&str, &str)]) -> ScramSha256 {
        let server = ScramSha256::new();
        for (name, password) in users {
            server.add_user(name, password).unwrap();
        }
        server
    }

    fn reason(step: &AuthStep) -> Option<u8> {
        match step {
            AuthStep::Failure { reason } => Some(*reason),
            _ => None,
        }
    }

    /// Starts an exchange that must continue; the server-first-message and the exchange.
    fn start_ok(
        server: &ScramSha256,
        connect_user: Option<&str>,
        client_first: &[u8],
    ) -> (String, Box<dyn AuthExchange>) {
        match server.start("client-1", connect_user, Some(client_first)) {
            AuthStep::Continue { data, next } => (String::from_utf8(data.to_vec()).unwrap(), next),
            other => panic!("expected Continue, got {other:?}"),
        }
    }

    /// RFC 5802 `saslname` encoding, for handing names to the `scram` crate: version 0.6
    /// sends a name containing ',' or '=' verbatim (and escapes nothing), so the escaped form
    /// goes over the wire as is.
    fn escape(name: &str) -> String {
        name.replace('=', "=3D").replace(',', "=2C")
    }

    /// Runs a whole exchange with the `scram` crate as the client. Returns the server's last
    /// step; on success, also checks that the client accepts the server's signature.
    fn run(server: &ScramSha256, connect_user: Option<&str>, user: &str, pw: &str) -> AuthStep {
        let wire_name = escape(user);
        let client = ScramClient::new(&wire_name, pw, None);
        let (client, first) = client.client_first();
        let (server_first, next) = start_ok(server, connect_user, first.as_bytes());
        let client = client.handle_server_first(&server_first).unwrap();
        let (client, last) = client.client_final();
        let step = next.step(Some(last.as_bytes()));
        if let AuthStep::Success { data, .. } = &step {
            let data = data.as_ref().expect("server-final-message");
            client
                .handle_server_final(std::str::from_utf8(data).unwrap())
                .expect("client accepts the server signature");
        }
        step
    }

    /// A started exchange for `user`/`pw` with the `scram` crate: the exchange, the nonce the
    /// server sent, and a correct client-final-message.
    fn prepared(server: &ScramSha256, user: &str, pw: &str) -> (Box<dyn AuthExchange>, String) {
        let client = ScramClient::new(user, pw, None);
        let (client, first) = client.client_first();
        let (server_first, next) = start_ok(server, None, first.as_bytes());
        let client = client.handle_server_first(&server_first).unwrap();
        let (_, last) = client.client_final();
        (next, last)
    }

    fn attribute<'a>(message: &'a str, name: &str) -> &'a str {
        message
            .split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {message}"))
    }

    // ----- the RFC 7677 example -----

    #[test]
    fn rfc7677_example() {
        let server = rfc_server();
        let (server_first, next) = start_ok(&server, Some("user"), RFC_CLIENT_FIRST.as_bytes());
        assert_eq!(server_first, RFC_SERVER_FIRST);
        match next.step(Some(RFC_CLIENT_FINAL.as_bytes())) {
            AuthStep::Success { data, username } => {
                assert_eq!(data.as_deref(), Some(RFC_SERVER_FINAL.as_bytes()));
                assert_eq!(username.as_deref(), Some("user"));
            }
            other => panic!("expected Success, got {other:?}"),
        }
    }

    #[test]
    fn rfc7677_example_with_the_wrong_password_fails() {
        let server = ScramSha256 {
            server_nonce: || RFC_SERVER_NONCE.to_owned(),
            salt: rfc_salt,
            ..ScramSha256::new()
        };
        server.add_user("user", "pencil2").unwrap();
        let (server_first, next) = start_ok(&server, None, RFC_CLIENT_FIRST.as_bytes());
        assert_eq!(server_first, RFC_SERVER_FIRST);
        let step = next.step(Some(RFC_CLIENT_FINAL.as_bytes()));
        assert_eq!(reason(&step), Some(BAD_USER_NAME_OR_PASSWORD));
    }

    // ----- full exchanges against the `scram` crate -----

    #[test]
    fn exchange_with_independent_client_succeeds() {
        let server = server_with(&[("alice", "s3cret pass"), ("bob", "hunter2")]);
        for connect_user in [None, Some("alice")] {
            match run(&server, connect_user, "alice", "s3cret pass") {
                AuthStep::Success { data, username } => {
                    let data = data.unwrap();
                    assert!(data.starts_with(b"v="));
                    assert_eq!(username.as_deref(), Some("alice"));
                }
                other => panic!("expected Success, got {other:?}"),
            }
        }
        assert!(matches!(
            run(&server, Some("bob"), "bob", "hunter2"),
            AuthStep::Success { .. }
        ));
    }

    #[test]
    fn through_the_authenticators_registry() {
        let mut set = Authenticators::default();
        let scram = Arc::new(server_with(&[("alice", "pw")]));
        set.add(scram.clone());
        assert!(set.get(SCRAM_SHA_256).is_some());
        assert!(set.get("SCRAM-SHA-1").is_none());
        assert!(set.get("scram-sha-256").is_none());
        let client = ScramClient::new("alice", "pw", None);
        let (client, first) = client.client_first();
        let AuthStep::Continue { data, next } =
            set.start(SCRAM_SHA_256, "c", None, Some(first.as_bytes()))
        else {
            panic!("expected Continue");
        };
        let client = client
            .handle_server_first(std::str::from_utf8(&data).unwrap())
            .unwrap();
        let (_, last) = client.client_final();
        assert!(matches!(
            next.step(Some(last.as_bytes())),
            AuthStep::Success { .. }
        ));
    }

    #[test]
    fn wrong_password_is_bad_user_name_or_password() {
        let server = server_with(&[("alice", "right")]);
        let step = run(&server, None, "alice", "wrong");
        assert_eq!(reason(&step), Some(BAD_USER_NAME_OR_PASSWORD));
        let step = run(&server, None, "alice", "Right");
        assert_eq!(reason(&step), Some(BAD_USER_NAME_OR_PASSWORD));
    }

    #[test]
    fn unknown_user_continues_and_fails_at_the_proof() {
        let server = server_with(&[("alice", "pw")]);
        // The client gets a well-formed server-first and computes a proof: the refusal comes
        // only at the final step, with the same code as a wrong password.
        let step = run(&server, None, "mallory", "pw");
        assert_eq!(reason(&step), Some(BAD_USER_NAME_OR_PASSWORD));
    }

    #[test]
    fn unknown_user_server_first_looks_like_a_real_one() {
        let server = server_with(&[("alice", "pw")]);
        let first_of = |name: &str| {
            let (server_first, _) =
                start_ok(&server, None, format!("n,,n={name},r=abc").as_bytes());
            server_first
        };
        let real = first_of("alice");
        let fake = first_of("mallory");
        // Same shape: r=, s= of 16 bytes, i=4096.
        for message in [&real, &fake] {
            let attributes: Vec<&str> = message.split(',').collect();
            assert_eq!(attributes.len(), 3, "{message}");
            assert!(attributes[0].starts_with("r=abc"));
            let salt = STANDARD.decode(attribute(message, "s=")).unwrap();
            assert_eq!(salt.len(), SALT_LEN);
            assert_eq!(attribute(message, "i="), "4096");
        }
        assert_eq!(real.len(), fake.len());
        // The fake salt is stable per name (as a real user's is) and differs between names.
        let salt = |m: &str| attribute(m, "s=").to_owned();
        assert_eq!(salt(&fake), salt(&first_of("mallory")));
        assert_eq!(salt(&real), salt(&first_of("alice")));
        assert_ne!(salt(&fake), salt(&first_of("trudy")));
        assert_ne!(salt(&fake), salt(&real));
    }

    #[test]
    fn fake_salt_depends_on_the_instance_secret() {
        let a = ScramSha256::new().fake_credentials("mallory");
        let b = ScramSha256::new().fake_credentials("mallory");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn server_nonces_are_fresh_and_extend_the_client_nonce() {
        let server = server_with(&[("alice", "pw")]);
        let nonce = |_| {
            let (first, _) = start_ok(&server, None, b"n,,n=alice,r=clientnonce");
            attribute(&first, "r=").to_owned()
        };
        let nonces: Vec<String> = (0..3).map(nonce).collect();
        for n in &nonces {
            let server_part = n.strip_prefix("clientnonce").unwrap();
            assert_eq!(server_part.len(), 24);
            assert!(is_valid_nonce(server_part));
        }
        assert_ne!(nonces[0], nonces[1]);
        assert_ne!(nonces[1], nonces[2]);
    }

    #[test]
    fn tampered_nonce_is_refused() {
        let server = server_with(&[("alice", "pw")]);
        let (next, last) = prepared(&server, "alice", "pw");
        let nonce = attribute(&last, "r=").to_owned();
        let client_nonce_only = nonce.get(..24).unwrap();
        for bad in [
            format!("{nonce}x"),
            nonce.get(..nonce.len() - 1).unwrap().to_owned(),
            client_nonce_only.to_owned(),
            format!("X{}", nonce.get(1..).unwrap()),
        ] {
            let tampered = last.replace(&format!("r={nonce}"), &format!("r={bad}"));
            assert_ne!(tampered, last);
            let (next, _) = prepared(&server, "alice", "pw");
            assert_eq!(reason(&next.step(Some(tampered.as_bytes()))), Some(0x87));
        }
        // The untampered message still passes on its own exchange.
        assert!(matches!(
            next.step(Some(last.as_bytes())),
            AuthStep::Success { .. }
        ));
    }

    #[test]
    fn replayed_final_message_is_refused() {
        let server = server_with(&[("alice", "pw")]);
        let (first_exchange, last) = prepared(&server, "alice", "pw");
        assert!(matches!(
            first_exchange.step(Some(last.as_bytes())),
            AuthStep::Success { .. }
        ));
        // Same client-first (same client nonce) replayed: the server nonce differs.
        let (second_exchange, _) = prepared(&server, "alice", "pw");
        assert_eq!(
            reason(&second_exchange.step(Some(last.as_bytes()))),
            Some(0x87)
        );
    }

    #[test]
    fn tampered_proof_and_channel_binding_are_refused() {
        let server = server_with(&[("alice", "pw")]);
        let (next, last) = prepared(&server, "alice", "pw");
        let proof = attribute(&last, "p=");
        let mut bytes = STANDARD.decode(proof).unwrap();
        bytes[0] ^= 1;
        let flipped = last.replace(proof, &STANDARD.encode(&bytes));
        assert_eq!(reason(&next.step(Some(flipped.as_bytes()))), Some(0x86));

        // "eSws" is base64("y,,"), but the client-first said "n,,".
        let (next, last) = prepared(&server, "alice", "pw");
        let rebound = last.replace("c=biws", "c=eSws");
        assert_eq!(reason(&next.step(Some(rebound.as_bytes()))), Some(0x87));
    }

    #[test]
    fn y_flag_echo_must_match() {
        let server = server_with(&[("alice", "pw")]);
        let (_, next) = start_ok(&server, None, b"y,,n=alice,r=abc");
        // Echoing "n,," after saying "y,," is a binding mismatch.
        let msg = "c=biws,r=abc,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(reason(&next.step(Some(msg.as_bytes()))), Some(0x87));
    }

    #[test]
    fn connect_user_name_must_equal_the_scram_user_name() {
        let server = server_with(&[("alice", "pw")]);
        for connect_user in ["bob", "Alice", "", "alice "] {
            let step = server.start("c", Some(connect_user), Some(b"n,,n=alice,r=abc"));
            assert_eq!(reason(&step), Some(NOT_AUTHORIZED), "{connect_user:?}");
        }
        // Also for unknown users: the refusal depends only on what the client sent.
        let step = server.start("c", Some("bob"), Some(b"n,,n=mallory,r=abc"));
        assert_eq!(reason(&step), Some(NOT_AUTHORIZED));
    }

    #[test]
    fn escaped_user_names_are_decoded() {
        let name = "a,b=c";
        let server = server_with(&[(name, "pw")]);
        match run(&server, Some(name), name, "pw") {
            AuthStep::Success { username, .. } => assert_eq!(username.as_deref(), Some(name)),
            other => panic!("expected Success, got {other:?}"),
        }
        // The encoded form is what goes on the wire.
        let (first, _) = start_ok(&server, Some(name), b"n,,n=a=2Cb=3Dc,r=abc");
        assert!(first.starts_with("r=abc"));
        // The CONNECT's User Name is compared with the decoded name.
        let step = server.start("c", Some("a=2Cb=3Dc"), Some(b"n,,n=a=2Cb=3Dc,r=abc"));
        assert_eq!(reason(&step), Some(NOT_AUTHORIZED));
    }

    #[test]
    fn decode_saslname_cases() {
        assert_eq!(decode_saslname("user").as_deref(), Some("user"));
        assert_eq!(decode_saslname("=2C").as_deref(), Some(","));
        assert_eq!(decode_saslname("=3D=3D").as_deref(), Some("=="));
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("j\u{f6}rg").as_deref(), Some("j\u{f6}rg"));
        for bad in [
            "", "=", "=2", "=2c", "=3d", "a=", "a=41", "=3", "nul\0", "=\u{e9}",
        ] {
            assert_eq!(decode_saslname(bad), None, "{bad:?}");
        }
    }

    // ----- malformed messages -----

    #[test]
    fn malformed_client_first_messages_are_refused() {
        let server = server_with(&[("user", "pw")]);
        let cases: &[(&[u8], u8)] = &[
            (b"", 0x87),
            (b"\xff\xfe", 0x87),
            (b"n,,n=us\xc3er,r=abc", 0x87),
            (b"p=tls-unique,,n=user,r=abc", 0x8C),
            (b"p=tls-server-end-point,a=user,n=user,r=abc", 0x8C),
            (b"n,a=user,n=user,r=abc", 0x87),
            (b"y,a=user,n=user,r=abc", 0x87),
            (b"x,,n=user,r=abc", 0x87),
            (b"n,n=user,r=abc", 0x87),
            (b"n,,", 0x87),
            (b"n", 0x87),
            (b"n,,m=ext,n=user,r=abc", 0x87),
            (b"n,,n=,r=abc", 0x87),
            (b"n,,n=us=er,r=abc", 0x87),
            (b"n,,n=user=2,r=abc", 0x87),
            (b"n,,n=us\0er,r=abc", 0x87),
            (b"n,,N=user,r=abc", 0x87),
            (b"n,,user,r=abc", 0x87),
            (b"n,,n=user", 0x87),
            (b"n,,n=user,", 0x87),
            (b"n,,n=user,r=", 0x87),
            (b"n,,n=user,r=a c", 0x87),
            (b"n,,n=user,r=ab\x7f", 0x87),
            (b"n,,n=user,r=ab\xc3\xa9", 0x87),
            (b"n,,n=user,s=abc", 0x87),
            (b"n,,r=abc,n=user", 0x87),
            (b"n,,n=user,r=abc,", 0x87),
            (b"n,,n=user,r=abc,x=", 0x87),
            (b"n,,n=user,r=abc,1=x", 0x87),
            (b"n,,n=user,r=abc,xy=z", 0x87),
            (b"n,,n=user,r=abc,=z", 0x87),
            (b" n,,n=user,r=abc", 0x87),
        ];
        for (data, expected) in cases {
            let step = server.start("c", None, Some(data));
            assert_eq!(
                reason(&step),
                Some(*expected),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        // No data at all: SCRAM is client-first.
        assert_eq!(reason(&server.start("c", None, None)), Some(0x87));
        assert_eq!(reason(&server.start("c", Some("user"), None)), Some(0x87));
    }

    #[test]
    fn well_formed_client_first_variants_continue() {
        let server = server_with(&[("user", "pw")]);
        for data in [
            "n,,n=user,r=abc",
            "y,,n=user,r=abc",
            "n,,n=user,r=abc,x=y",
            "n,,n=user,r=abc,x=y,z==",
            "n,,n=nobody,r=!\"#$%&'()*+-./~",
            "n,,n=j\u{f6}rg,r=abc",
        ] {
            let step = server.start("c", None, Some(data.as_bytes()));
            assert!(
                matches!(step, AuthStep::Continue { .. }),
                "{data}: {step:?}"
            );
        }
    }

    #[test]
    fn malformed_client_final_messages_are_refused() {
        let server = ScramSha256 {
            server_nonce: || "SERVER".to_owned(),
            ..server_with(&[("user", "pw")])
        };
        let p = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases: Vec<(Vec<u8>, u8)> = [
            "".to_owned(),
            ",".to_owned(),
            p.to_owned(),
            "c=biws,r=abcSERVER".to_owned(),
            format!("c=biws,{p}"),
            format!("r=abcSERVER,c=biws,{p}"),
            format!("c=biws,r=abcSERVER,{p},"),
            format!("c=biws,r=abcSERVER,{p},x=y"),
            format!("c=biws,r=abcSERVER,{p}x"),
            format!("c=biws,r=abcSERVER,{p}="),
            "c=biws,r=abcSERVER,p=".to_owned(),
            "c=biws,r=abcSERVER,p=!!!!".to_owned(),
            // 31 and 33 bytes of proof.
            format!("c=biws,r=abcSERVER,p={}", STANDARD.encode([7u8; 31])),
            format!("c=biws,r=abcSERVER,p={}", STANDARD.encode([7u8; 33])),
            format!("c=biws,r=abcSERVER,P={}", STANDARD.encode([7u8; 32])),
            format!("c=,r=abcSERVER,{p}"),
            format!("c=biw,r=abcSERVER,{p}"),
            format!("c=biws=,r=abcSERVER,{p}"),
            format!("c=eSws,r=abcSERVER,{p}"),
            format!("c=cD10bHMtdW5pcXVlLCw=,r=abcSERVER,{p}"),
            format!("c=biws,r=abc,{p}"),
            format!("c=biws,r=,{p}"),
            format!("c=biws,r=abcSERVERX,{p}"),
            format!("c=biws,r=abcSERVER,1=x,{p}"),
            format!("c=biws,r=abcSERVER,x=,{p}"),
            format!("c=biws,,r=abcSERVER,{p}"),
            format!("c=biws,m=x,r=abcSERVER,{p}"),
        ]
        .into_iter()
        .map(|s| (s.into_bytes(), 0x87))
        .chain([
            (b"\xff".to_vec(), 0x87),
            (
                [b"c=biws,r=abcSERVER\xc3,".as_slice(), p.as_bytes()].concat(),
                0x87,
            ),
            (
                [b"c=biws,r=abcSERVER,p=".as_slice(), b"\xc3\x28"].concat(),
                0x87,
            ),
        ])
        .collect();
        for user in ["user", "nobody"] {
            for (data, expected) in &cases {
                let (_, next) = start_ok(&server, None, format!("n,,n={user},r=abc").as_bytes());
                let step = next.step(Some(data));
                assert_eq!(
                    reason(&step),
                    Some(*expected),
                    "{user}: {:?}",
                    String::from_utf8_lossy(data)
                );
            }
            let (_, next) = start_ok(&server, None, format!("n,,n={user},r=abc").as_bytes());
            assert_eq!(reason(&next.step(None)), Some(0x87));
        }
    }

    #[test]
    fn well_formed_final_with_wrong_proof_reaches_the_proof_check() {
        let server = ScramSha256 {
            server_nonce: || "SERVER".to_owned(),
            ..server_with(&[("user", "pw")])
        };
        let proof = STANDARD.encode([7u8; 32]);
        for message in [
            format!("c=biws,r=abcSERVER,p={proof}"),
            format!("c=biws,r=abcSERVER,x=y,p={proof}"),
        ] {
            for user in ["user", "nobody"] {
                let (_, next) = start_ok(&server, None, format!("n,,n={user},r=abc").as_bytes());
                assert_eq!(reason(&next.step(Some(message.as_bytes()))), Some(0x86));
            }
        }
    }

    // ----- the user store -----

    #[test]
    fn add_user_validates_names_and_passwords() {
        let server = ScramSha256::new();
        assert_eq!(
            server.add_user("", "pw"),
            Err(ScramUserError::EmptyUserName)
        );
        for name in ["j\u{f6}rg", "tab\there", "nl\n", "del\x7f", "nul\0"] {
            assert_eq!(
                server.add_user(name, "pw"),
                Err(ScramUserError::UserNameNotPrintableAscii),
                "{name:?}"
            );
        }
        for password in ["p\u{e4}ss", "\u{2003}", "a\tb", "\r"] {
            assert_eq!(
                server.add_user("user", password),
                Err(ScramUserError::PasswordNotPrintableAscii),
                "{password:?}"
            );
        }
        assert!(server.is_empty());
        assert_eq!(server.add_user(" ~a,b=c ", " !~ "), Ok(()));
        assert_eq!(server.add_user("empty-password", ""), Ok(()));
        assert_eq!(server.len(), 2);
        assert!(!ScramUserError::EmptyUserName.to_string().is_empty());
    }

    #[test]
    fn empty_password_round_trips() {
        let server = server_with(&[("user", "")]);
        assert!(matches!(
            run(&server, None, "user", ""),
            AuthStep::Success { .. }
        ));
        assert_eq!(reason(&run(&server, None, "user", " ")), Some(0x86));
    }

    #[test]
    fn add_replace_and_remove_users() {
        let server = ScramSha256::new();
        assert!(server.is_empty());
        assert_eq!(server.len(), 0);
        server.add_user("alice", "old").unwrap();
        server.add_user("bob", "pw").unwrap();
        assert_eq!(server.len(), 2);
        // Replacing keeps one entry and the new password only.
        server.add_user("alice", "new").unwrap();
        assert_eq!(server.len(), 2);
        assert_eq!(reason(&run(&server, None, "alice", "old")), Some(0x86));
        assert!(matches!(
            run(&server, None, "alice", "new"),
            AuthStep::Success { .. }
        ));
        // Removal.
        assert!(server.remove_user("alice"));
        assert!(!server.remove_user("alice"));
        assert!(!server.remove_user("carol"));
        assert_eq!(server.len(), 1);
        assert_eq!(reason(&run(&server, None, "alice", "new")), Some(0x86));
        assert!(server.remove_user("bob"));
        assert!(server.is_empty());
    }

    #[test]
    fn exchange_keeps_the_credentials_it_started_with() {
        let server = server_with(&[("alice", "pw")]);
        let (next, last) = prepared(&server, "alice", "pw");
        assert!(server.remove_user("alice"));
        assert!(matches!(
            next.step(Some(last.as_bytes())),
            AuthStep::Success { .. }
        ));
    }

    #[test]
    fn add_user_never_keeps_the_password() {
        let password = "correct horse battery staple";
        let server = ScramSha256::new();
        server.add_user("alice", password).unwrap();
        let users = server.users.read();
        let credentials = users.get("alice").unwrap();
        // Exhaustive destructuring: adding a field (say, the password) breaks this line.
        let Credentials {
            salt,
            iterations,
            stored_key,
            server_key,
        } = credentials;
        assert_eq!(*iterations, ITERATIONS);
        // Nothing stored holds the password or SaltedPassword.
        let salted = scram::hash_password(
            password,
            std::num::NonZeroU32::new(ITERATIONS).unwrap(),
            salt,
        );
        for field in [salt.as_slice(), stored_key, server_key] {
            assert!(!field.windows(8).any(|w| password.as_bytes().starts_with(w)));
            assert_ne!(field, salted.as_slice());
        }
        // The keys are RFC 5802's, derived from the independent client's SaltedPassword.
        let client_key = hmac_sha256(&salted, &[b"Client Key"]);
        assert_eq!(*stored_key, <Key>::from(Sha256::digest(client_key)));
        assert_eq!(*server_key, hmac_sha256(&salted, &[b"Server Key"]));
        // Debug shows neither secrets nor keys.
        let debug = format!("{server:?}");
        assert_eq!(debug, "ScramSha256 { users: 1, .. }");
    }

    #[test]
    fn salts_are_random_per_user() {
        let server = server_with(&[("alice", "pw"), ("bob", "pw")]);
        let users = server.users.read();
        let (a, b) = (users.get("alice").unwrap(), users.get("bob").unwrap());
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn method_name() {
        let server = ScramSha256::default();
        assert_eq!(server.method(), "SCRAM-SHA-256");
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<ScramSha256>();
    }

    // ----- properties: network bytes never panic -----

    /// Strings made of the characters SCRAM messages are made of, to reach deep parse paths.
    fn scramish() -> impl Strategy<Value = String> {
        "(n,,|y,,|p=x,,|n,a=u,|)(n=|r=|c=|p=|m=|s=|i=|=2C|=3D|,|[a-z0-9+/=]|biws|abc|user)*"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn start_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200),
                              connect_user in proptest::option::of("[a-z]{0,6}")) {
            let server = ScramSha256::new();
            let step = server.start("c", connect_user.as_deref(), Some(&data));
            let ok = matches!(step, AuthStep::Continue { .. } | AuthStep::Failure { .. });
            prop_assert!(ok, "{:?}", step);
        }

        #[test]
        fn start_never_panics_on_scramish_text(text in scramish()) {
            let server = ScramSha256::new();
            let step = server.start("c", None, Some(text.as_bytes()));
            if let AuthStep::Failure { reason } = step {
                prop_assert!(reason == 0x87 || reason == 0x8C);
            }
        }

        #[test]
        fn final_step_never_panics_and_never_succeeds_on_noise(
            user in prop_oneof![Just("user"), Just("nobody")],
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let server = ScramSha256 {
                server_nonce: || "SERVER".to_owned(),
                ..ScramSha256::new()
            };
            let (_, next) = start_ok(&server, None, format!("n,,n={user},r=abc").as_bytes());
            let step = next.step(Some(&data));
            let failed = matches!(step, AuthStep::Failure { .. });
            prop_assert!(failed, "{:?}", step);
        }

        #[test]
        fn final_step_never_panics_on_scramish_text(text in scramish()) {
            let server = ScramSha256 {
                server_nonce: || "SERVER".to_owned(),
                ..ScramSha256::new()
            };
            let (_, next) = start_ok(&server, None, b"n,,n=user,r=abc");
            let step = next.step(Some(text.as_bytes()));
            let failed = matches!(step, AuthStep::Failure { .. });
            prop_assert!(failed, "{:?}", step);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_single_byte_change_of_a_valid_final_message_fails(
            position in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let server = rfc_server();
            let mut message = RFC_CLIENT_FINAL.as_bytes().to_vec();
            let at = position.index(message.len());
            prop_assume!(message[at] != byte);
            message[at] = byte;
            let (_, next) = start_ok(&server, None, RFC_CLIENT_FIRST.as_bytes());
            let step = next.step(Some(&message));
            let failed = matches!(step, AuthStep::Failure { .. });
            prop_assert!(failed, "{:?}", step);
        }

        #[test]
        fn printable_ascii_credentials_round_trip(
            user in "[ -~]{1,12}",
            password in "[ -~]{0,12}",
        ) {
            let server = server_with(&[(&user, &password)]);
            match run(&server, Some(&user), &user, &password) {
                AuthStep::Success { username, .. } => {
                    prop_assert_eq!(username.as_deref(), Some(user.as_str()));
                }
                other => prop_assert!(false, "expected Success, got {:?}", other),
            }
        }
    }

    #[test]
    fn rfc_nonce_constant_is_consistent() {
        assert_eq!(attribute(RFC_SERVER_FIRST, "r="), RFC_NONCE);
        assert_eq!(attribute(RFC_CLIENT_FINAL, "r="), RFC_NONCE);
    }
}
