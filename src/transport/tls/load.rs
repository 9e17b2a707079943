//! From [`TlsSettings`] to a rustls [`ServerConfig`]: reading the PEM files, checking what rustls
//! would only discover at the first handshake (an expired certificate, a key of another
//! certificate), and swapping the configuration when certificates are renewed.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_cert::Certificate;
use x509_cert::der::Decode;

use super::{TlsError, TlsSettings, TlsVersion};

/// Reads the files named by `settings` and builds the server configuration new handshakes use.
///
/// Fails, naming the file, when a file cannot be read, holds no certificate or key, the key is
/// encrypted or does not belong to the certificate, a certificate of the chain is expired or not
/// yet valid, or the CA file holds no usable certificate; and when `require_certificate` is set
/// without a `ca_file`, or `use_identity_as_username` without `require_certificate`.
pub fn load_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    if settings.require_certificate && settings.ca_file.is_none() {
        return Err(TlsError::RequireCertificateWithoutCa);
    }
    if settings.use_identity_as_username && !settings.require_certificate {
        return Err(TlsError::IdentityWithoutCertificate);
    }
    // Explicit provider: no dependence on (or panic from) a process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_chain(&settings.cert_file)?;
    check_validity(&settings.cert_file, &chain, SystemTime::now())?;
    let key = read_key(&settings.key_file)?;
    let verifier = client_verifier(settings, &provider)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        // Also checks that the key's public half is the certificate's.
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: settings.cert_file.clone(),
                    key: settings.key_file.clone(),
                }
            }
            other => TlsError::InvalidKey {
                path: settings.key_file.clone(),
                detail: other.to_string(),
            },
        })?;
    Ok(Arc::new(config))
}

/// A listener's TLS configuration that can be replaced while it serves: handshakes started after
/// a successful [`reload`](ReloadableTls::reload) use the new certificate; established
/// connections keep the keys they negotiated and are not disturbed.
#[derive(Debug)]
pub struct ReloadableTls {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTls {
    /// Loads `settings` (see [`load_server_config`]).
    pub fn new(settings: TlsSettings) -> Result<ReloadableTls, TlsError> {
        let config = load_server_config(&settings)?;
        Ok(ReloadableTls {
            settings,
            current: RwLock::new(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// The settings the configuration is loaded from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Reads the files again and, if they make a valid configuration, uses it for new
    /// handshakes. On failure the previous configuration stays in use and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Read and check the files without holding the lock: handshakes keep starting meanwhile.
        let config = load_server_config(&self.settings)?;
        *self.current.write() = config;
        Ok(())
    }
}

/// Reads the file whole, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A readable description of a PEM parse error (the parser's own prints byte vectors).
fn pem_error(path: &Path, err: &pem::Error) -> TlsError {
    let detail = match err {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "missing '-----END {}-----'",
                String::from_utf8_lossy(end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed line '{}'", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    };
    TlsError::Pem {
        path: path.to_owned(),
        detail,
    }
}

/// The certificates of a PEM file, in order; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))
}

/// The server's certificate chain: its own certificate first.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = read_certificates(path)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// Fails on the first certificate of `chain` that is not valid at `now`: clients would refuse it
/// at every handshake, with an error the operator never sees.
fn check_validity(
    path: &Path,
    chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), TlsError> {
    for (i, der) in chain.iter().enumerate() {
        let index = i + 1;
        let cert = Certificate::from_der(der.as_ref()).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            index,
            detail: e.to_string(),
        })?;
        let validity = cert.tbs_certificate().validity();
        if now < validity.not_before.to_system_time() {
            return Err(TlsError::NotYetValid {
                path: path.to_owned(),
                index,
                not_before: validity.not_before.to_string(),
            });
        }
        if now > validity.not_after.to_system_time() {
            return Err(TlsError::Expired {
                path: path.to_owned(),
                index,
                not_after: validity.not_after.to_string(),
            });
        }
    }
    Ok(())
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            // PKCS#8 `ENCRYPTED PRIVATE KEY` blocks, or legacy `Proc-Type: 4,ENCRYPTED` headers.
            let text = String::from_utf8_lossy(&bytes);
            if text.contains("ENCRYPTED") {
                Err(TlsError::EncryptedKey {
                    path: path.to_owned(),
                })
            } else {
                Err(TlsError::NoPrivateKey {
                    path: path.to_owned(),
                })
            }
        }
        Err(e) => Err(pem_error(path, &e)),
    }
}

/// Who verifies client certificates: nobody without a CA file; otherwise the CA file's
/// certificates, with a certificate required or only checked when presented.
fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let Some(ca_file) = &settings.ca_file else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = RootCertStore::empty();
    for (i, der) in read_certificates(ca_file)?.into_iter().enumerate() {
        roots.add(der).map_err(|e| TlsError::BadCaCertificate {
            path: ca_file.clone(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCaCertificate {
            path: ca_file.clone(),
        });
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if settings.require_certificate {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| TlsError::Config(format!("{}: {e}", ca_file.display())))
}
