//! TLS listeners (MQTT over TLS, IANA port 8883): the `[listener.tls]` settings, loading them
//! into a rustls [`ServerConfig`](rustls::ServerConfig) with errors that name the file at fault,
//! reloading certificates without dropping connections, and [`TlsTransport`], the
//! [`Transport`](super::Transport) an accepted TLS connection becomes.
//!
//! Cryptography is rustls with the `ring` provider, passed explicitly to every config builder, so
//! nothing depends on a process-wide default provider (which panics when two dependencies enable
//! different providers).

mod identity;
mod load;
mod stream;

use std::io;
use std::path::PathBuf;

use serde::Deserialize;

pub use identity::PeerIdentity;
pub use load::{ReloadableTls, load_server_config};
pub use stream::{TlsTransport, accept};

/// The `[listener.tls]` table: certificate, key and client authentication of one TLS listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the server certificate, followed by any intermediate certificates.
    pub cert_file: PathBuf,
    /// PEM file with the server's unencrypted private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to. Without it the
    /// listener does not ask clients for a certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Refuse clients that present no valid certificate (needs `ca_file`). Default false: with a
    /// `ca_file`, a certificate is verified when a client presents one, but not required.
    #[serde(default)]
    pub require_certificate: bool,
    /// Use the Common Name of the client certificate as the MQTT user name (needs
    /// `require_certificate`). Default false.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// Oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
}

/// A TLS protocol version (`"1.2"` or `"1.3"` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "1.3")]
    V1_3,
}

/// Why TLS settings could not be turned into a server configuration. Every message names the
/// file (or the setting) at fault and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, unreadable, a directory).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A PEM file is malformed (for example bad base64 inside a block).
    #[error("{}: invalid PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser reported.
        detail: String,
    },
    /// The certificate file holds no certificate.
    #[error(
        "{}: no certificate found (expected a PEM block '-----BEGIN CERTIFICATE-----')",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate could not be parsed as X.509.
    #[error("{}: certificate {index} is not a valid X.509 certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// What the parser reported.
        detail: String,
    },
    /// A certificate of the server's chain has expired.
    #[error("{}: certificate {index} expired on {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1 (1 is the server's own).
        index: usize,
        /// Its notAfter time (UTC).
        not_after: String,
    },
    /// A certificate of the server's chain is not valid yet (or the clock is wrong).
    #[error(
        "{}: certificate {index} is not valid before {not_before} (check the system clock)",
        path.display()
    )]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// Its notBefore time (UTC).
        not_before: String,
    },
    /// The key file holds no private key.
    #[error(
        "{}: no private key found (expected a PEM block 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds a passphrase-protected key.
    #[error(
        "{}: the private key is encrypted; give an unencrypted key (for example `openssl pkey -in KEY -out KEY.plain`)",
        path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind the crypto provider does not support, or is corrupt.
    #[error("{}: unusable private key: {detail}", path.display())]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// What rustls reported.
        detail: String,
    },
    /// The private key is not the one of the certificate.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The CA file holds no certificate.
    #[error(
        "{}: no CA certificate found (expected a PEM block '-----BEGIN CERTIFICATE-----')",
        path.display()
    )]
    NoCaCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA file cannot be used as a trust anchor.
    #[error("{}: CA certificate {index} is unusable: {detail}", path.display())]
    BadCaCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// What rustls reported.
        detail: String,
    },
    /// `require_certificate = true` without a `ca_file` to verify certificates against.
    #[error(
        "require_certificate = true needs ca_file: the CA certificates that client certificates must chain to"
    )]
    RequireCertificateWithoutCa,
    /// `use_identity_as_username = true` without `require_certificate = true`.
    #[error(
        "use_identity_as_username = true needs require_certificate = true (a client without a certificate has no identity)"
    )]
    IdentityWithoutCertificate,
    /// rustls refused the configuration for another reason.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Listener {
        tls: TlsSettings,
    }

    #[test]
    fn settings_parse_with_defaults() {
        let l: Listener =
            toml::from_str("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").unwrap();
        assert_eq!(l.tls.cert_file, PathBuf::from("c.pem"));
        assert_eq!(l.tls.key_file, PathBuf::from("k.pem"));
        assert_eq!(l.tls.ca_file, None);
        assert!(!l.tls.require_certificate);
        assert!(!l.tls.use_identity_as_username);
        assert_eq!(l.tls.min_version, TlsVersion::V1_2);
    }

    #[test]
    fn settings_parse_every_key() {
        let text = "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nca_file = \"ca\"\n\
                    require_certificate = true\nuse_identity_as_username = true\nmin_version = \"1.3\"\n";
        let l: Listener = toml::from_str(text).unwrap();
        assert_eq!(l.tls.ca_file, Some(PathBuf::from("ca")));
        assert!(l.tls.require_certificate);
        assert!(l.tls.use_identity_as_username);
        assert_eq!(l.tls.min_version, TlsVersion::V1_3);
    }

    #[test]
    fn settings_refuse_unknown_keys_and_versions() {
        let unknown = "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\ncafile = \"x\"\n";
        let err = toml::from_str::<Listener>(unknown).unwrap_err().to_string();
        assert!(err.contains("cafile"), "{err}");
        let version = "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nmin_version = \"1.1\"\n";
        let err = toml::from_str::<Listener>(version).unwrap_err().to_string();
        assert!(err.contains("1.1"), "{err}");
        let missing = "[tls]\ncert_file = \"c\"\n";
        let err = toml::from_str::<Listener>(missing).unwrap_err().to_string();
        assert!(err.contains("key_file"), "{err}");
    }
}
