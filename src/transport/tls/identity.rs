//! Who a client certificate names: its subject's Common Name and its Subject Alternative Names,
//! for `use_identity_as_username` and for authorisation hooks.

use std::net::IpAddr;

use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// The identity in a client certificate that rustls has verified against the listener's CA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's first Common Name (OID 2.5.4.3), the user name Mosquitto's
    /// `use_identity_as_username` takes; `None` when the subject has none.
    pub common_name: Option<String>,
    /// The Subject Alternative Names in certificate order: DNS names, e-mail addresses and URIs
    /// as written, IP addresses in their usual text form. Other kinds are left out.
    pub subject_alt_names: Vec<String>,
}

impl PeerIdentity {
    /// The identity in a DER certificate; `None` if it is not a parsable X.509 certificate.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let cert = Certificate::from_der(der).ok()?;
        let tbs = cert.tbs_certificate();
        let common_name = tbs
            .subject()
            .common_name()
            .ok()
            .flatten()
            .map(|cn| cn.value().into_owned());
        let mut subject_alt_names = Vec::new();
        if let Ok(Some((_critical, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>()
        {
            subject_alt_names.extend(names.iter().filter_map(general_name_text));
        }
        Some(PeerIdentity {
            common_name,
            subject_alt_names,
        })
    }
}

/// A Subject Alternative Name as text, for the kinds that have a usual text form.
fn general_name_text(name: &GeneralName) -> Option<String> {
    match name {
        GeneralName::DnsName(s)
        | GeneralName::Rfc822Name(s)
        | GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
        GeneralName::IpAddress(octets) => {
            let bytes = octets.as_bytes();
            let ip = if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                IpAddr::from(v4)
            } else {
                IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)
            };
            Some(ip.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_no_identity() {
        assert_eq!(PeerIdentity::from_der(b""), None);
        assert_eq!(PeerIdentity::from_der(b"\x30\x03\x02\x01\x00"), None);
    }
}
