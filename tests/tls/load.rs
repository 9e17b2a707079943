//! Loading errors: each names the file at fault.

use mqtt_server::transport::tls::{ReloadableTls, TlsError, TlsVersion, load_server_config};
use rcgen::date_time_ymd;

use crate::pki::{Ca, TempDir, settings, shows};

#[test]
fn valid_settings_load() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), Some(&ca));
    load_server_config(&s).unwrap();
    s.require_certificate = true;
    s.use_identity_as_username = true;
    s.min_version = TlsVersion::V1_3;
    load_server_config(&s).unwrap();
}

#[test]
fn missing_files_are_named() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), None);
    s.key_file = dir.path("missing-key.pem");
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot read {}:", shows(&s.key_file))),
        "{text}"
    );

    let mut s = settings(&dir, &ca.server("broker"), None);
    s.cert_file = dir.path("missing-cert.pem");
    let text = load_server_config(&s).unwrap_err().to_string();
    assert!(text.contains(&shows(&s.cert_file)), "{text}");

    let mut s = settings(&dir, &ca.server("broker"), None);
    s.ca_file = Some(dir.path("missing-ca.pem"));
    let text = load_server_config(&s).unwrap_err().to_string();
    assert!(text.contains("missing-ca.pem"), "{text}");
}

#[test]
fn key_of_another_certificate_is_a_mismatch() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let s = settings(&dir, &ca.server("broker"), None);
    dir.write("key.pem", ca.server("other").key_pem);
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the private key in {} does not match the certificate in {}",
            shows(&s.key_file),
            shows(&s.cert_file)
        )
    );
}

#[test]
fn expired_and_future_certificates_are_refused() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut params = ca.server_params("broker");
    params.not_before = date_time_ymd(2001, 1, 1);
    params.not_after = date_time_ymd(2002, 3, 4);
    let s = settings(&dir, &ca.issue(params), None);
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::Expired { index: 1, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&shows(&s.cert_file)), "{text}");
    assert!(text.contains("expired on 2002-03-04"), "{text}");

    let mut params = ca.server_params("broker");
    params.not_before = date_time_ymd(2990, 1, 1);
    let s = settings(&dir, &ca.issue(params), None);
    let err = load_server_config(&s).unwrap_err();
    assert!(
        matches!(err, TlsError::NotYetValid { index: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("not valid before 2990-01-01"),
        "{err}"
    );
}

#[test]
fn an_expired_intermediate_is_refused_with_its_position() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let server = ca.server("broker");
    let mut params = ca.server_params("old intermediate");
    params.not_after = date_time_ymd(2010, 1, 1);
    let old = ca.issue(params);
    let s = settings(&dir, &server, None);
    dir.write("cert.pem", format!("{}{}", server.cert_pem, old.cert_pem));
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::Expired { index: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("certificate 2 expired"), "{err}");
}

#[test]
fn files_without_the_expected_blocks() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let leaf = ca.server("broker");

    // Certificate and key files swapped.
    let mut s = settings(&dir, &leaf, None);
    s.cert_file = dir.write("only-key.pem", &leaf.key_pem);
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("only-key.pem: no certificate found"),
        "{err}"
    );

    let mut s = settings(&dir, &leaf, None);
    s.key_file = dir.write("only-cert.pem", &leaf.cert_pem);
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("only-cert.pem: no private key found"),
        "{err}"
    );

    // A key file holding the certificate too (a combined PEM) is fine.
    let mut s = settings(&dir, &leaf, None);
    s.key_file = dir.write("combined.pem", format!("{}{}", leaf.cert_pem, leaf.key_pem));
    load_server_config(&s).unwrap();

    let mut s = settings(&dir, &leaf, None);
    s.key_file = dir.write(
        "encrypted.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::EncryptedKey { .. }), "{err:?}");
    assert!(err.to_string().contains("encrypted.pem"), "{err}");

    let mut s = settings(&dir, &leaf, None);
    s.cert_file = dir.write(
        "truncated.pem",
        leaf.cert_pem.replace("-----END CERTIFICATE-----", ""),
    );
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("truncated.pem: invalid PEM: missing '-----END CERTIFICATE-----'"),
        "{text}"
    );

    // Valid PEM, not a certificate inside.
    let mut s = settings(&dir, &leaf, None);
    s.cert_file = dir.write(
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    let err = load_server_config(&s).unwrap_err();
    assert!(
        matches!(err, TlsError::BadCertificate { index: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("junk.pem: certificate 1 is not a valid X.509"),
        "{err}"
    );
}

#[test]
fn ca_file_problems() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), Some(&ca));
    let ca_file = dir.write("ca.pem", "");
    s.ca_file = Some(ca_file.clone());
    let err = load_server_config(&s).unwrap_err();
    assert!(matches!(err, TlsError::NoCaCertificate { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no CA certificate found (expected a PEM block '-----BEGIN CERTIFICATE-----')",
            shows(&ca_file)
        )
    );

    dir.write(
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    let err = load_server_config(&s).unwrap_err();
    assert!(
        matches!(err, TlsError::BadCaCertificate { index: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("ca.pem: CA certificate 1 is unusable"),
        "{err}"
    );
}

#[test]
fn client_authentication_settings_must_be_consistent() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), None);
    s.require_certificate = true;
    let err = load_server_config(&s).unwrap_err();
    assert!(
        matches!(err, TlsError::RequireCertificateWithoutCa),
        "{err:?}"
    );
    assert!(err.to_string().contains("needs ca_file"), "{err}");

    let mut s = settings(&dir, &ca.server("broker"), Some(&ca));
    s.use_identity_as_username = true;
    let err = load_server_config(&s).unwrap_err();
    assert!(
        matches!(err, TlsError::IdentityWithoutCertificate),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("needs require_certificate = true"),
        "{err}"
    );
}

#[test]
fn reloadable_refuses_bad_settings_at_start() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new();
    let mut s = settings(&dir, &ca.server("broker"), None);
    s.key_file = dir.path("nope.pem");
    let err = ReloadableTls::new(s).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
}
