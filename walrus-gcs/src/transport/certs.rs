//! Certificate tooling for the cluster's private CA (rcgen).
//!
//! Owns: creating the cluster CA, issuing a node certificate whose subject alternative
//! name (SAN) is the node's name, and reading/writing them as PEM files. The QUIC
//! transport trusts exactly one CA and accepts a peer only if its certificate chains to it
//! and names a configured node.
//!
//! File layout of a CA directory (what the `certs` example writes):
//! ```text
//! DIR/ca.pem        the CA certificate (give it to every node)
//! DIR/ca.key        the CA private key (keep it off the nodes)
//! DIR/NAME.pem      node NAME's certificate, SAN = NAME
//! DIR/NAME.key      node NAME's private key
//! ```
//! Issuing does not need to parse the CA certificate: the CA's distinguished name is fixed
//! ([`CA_COMMON_NAME`]), so the issuer is rebuilt from its key alone.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Common name of every Walrus cluster CA. Fixed so that an issuer can be rebuilt from the
/// CA key without parsing the CA certificate.
pub const CA_COMMON_NAME: &str = "Walrus cluster CA";

/// Why a certificate could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused (bad name, key generation failure).
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: not a PEM {what}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected ("certificate", "private key").
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// A node name that cannot be a DNS name in a certificate SAN.
    #[error("node name {name:?} is not a valid DNS name (letters, digits, '-', '.')")]
    BadName {
        /// The refused name.
        name: String,
    },
}

/// A certificate and its private key, in memory.
#[derive(Debug)]
pub struct CertifiedKey {
    /// DER of the certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 DER of the private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl CertifiedKey {
    /// The certificate as PEM text.
    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", self.cert.as_ref())
    }

    /// The private key as PEM text.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", self.key.secret_pkcs8_der())
    }
}

/// Everything a node needs for mutual TLS: the CA to trust, its own certificate and key.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The cluster CA certificate every peer must chain to.
    pub ca: CertificateDer<'static>,
    /// This node's certificate (SAN = node name).
    pub cert: CertificateDer<'static>,
    /// This node's private key.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// The key in the form rustls takes.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// A new identity for node `name`, issued by the in-memory CA `ca` (tests, benches).
    pub fn issued_by(ca: &CertifiedKey, name: &str) -> Result<Self, CertError> {
        let node = issue_node_cert(&ca.key, name)?;
        Ok(Self {
            ca: ca.cert.clone(),
            cert: node.cert,
            key: node.key,
        })
    }

    /// Reads `DIR/ca.pem`, `DIR/NAME.pem` and `DIR/NAME.key`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, CertError> {
        Ok(Self {
            ca: read_cert(&dir.join("ca.pem"))?,
            cert: read_cert(&dir.join(format!("{name}.pem")))?,
            key: read_key(&dir.join(format!("{name}.key")))?,
        })
    }
}

fn ca_params() -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Creates a new cluster CA (self-signed, ECDSA P-256).
pub fn create_ca() -> Result<CertifiedKey, CertError> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok(CertifiedKey {
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    })
}

/// Checks that `name` can be a node name: a DNS name of letters, digits, '-' and '.'.
pub fn check_node_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && rustls_pki_types::ServerName::try_from(name).is_ok();
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Issues a certificate for node `name` (SAN = `name`), signed by the CA key `ca_key`.
/// The certificate serves both ends of a connection (server and client authentication).
pub fn issue_node_cert(
    ca_key: &PrivatePkcs8KeyDer<'_>,
    name: &str,
) -> Result<CertifiedKey, CertError> {
    check_node_name(name)?;
    let ca_key = KeyPair::try_from(ca_key)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertifiedKey {
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    })
}

/// Creates `DIR/ca.pem` and `DIR/ca.key` (refuses to overwrite an existing CA key).
pub fn write_new_ca(dir: &Path) -> Result<CertifiedKey, CertError> {
    let key_path = dir.join("ca.key");
    if key_path.exists() {
        return Err(CertError::Io {
            path: key_path,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a CA already exists here; remove it first to start a new cluster",
            ),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let ca = create_ca()?;
    write_file(&dir.join("ca.pem"), &ca.cert_pem())?;
    write_file(&key_path, &ca.key_pem())?;
    Ok(ca)
}

/// Issues `DIR/NAME.pem` and `DIR/NAME.key` with the CA in `DIR` (overwrites: that is how
/// a node's certificate is rotated).
pub fn write_node_cert(dir: &Path, name: &str) -> Result<CertifiedKey, CertError> {
    let ca_key = read_key(&dir.join("ca.key"))?;
    let node = issue_node_cert(&ca_key, name)?;
    write_file(&dir.join(format!("{name}.pem")), &node.cert_pem())?;
    write_file(&dir.join(format!("{name}.key")), &node.key_pem())?;
    Ok(node)
}

/// Reads one PEM certificate.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_file(path).map_err(|e| CertError::Pem {
        path: path.to_owned(),
        what: "certificate",
        detail: e.to_string(),
    })
}

/// Reads one PEM PKCS#8 private key.
pub fn read_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, CertError> {
    PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| CertError::Pem {
        path: path.to_owned(),
        what: "private key",
        detail: e.to_string(),
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_the_pki_types_parser() {
        let ca = create_ca().unwrap();
        let back = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(back, ca.cert);
        let key = PrivatePkcs8KeyDer::from_pem_slice(ca.key_pem().as_bytes()).unwrap();
        assert_eq!(key.secret_pkcs8_der(), ca.key.secret_pkcs8_der());
    }

    #[test]
    fn node_cert_names_the_node_and_chains_to_the_ca() {
        let ca = create_ca().unwrap();
        let node = issue_node_cert(&ca.key, "node-a").unwrap();
        let ee = webpki::EndEntityCert::try_from(&node.cert).unwrap();
        let a = rustls_pki_types::ServerName::try_from("node-a").unwrap();
        let b = rustls_pki_types::ServerName::try_from("node-b").unwrap();
        assert!(ee.verify_is_valid_for_subject_name(&a).is_ok());
        assert!(ee.verify_is_valid_for_subject_name(&b).is_err());
    }

    #[test]
    fn refuses_names_that_are_not_dns_names() {
        for bad in ["", "a b", "-a", "a..b", "ä"] {
            assert!(check_node_name(bad).is_err(), "{bad:?} accepted");
        }
        check_node_name("a1.walrus").unwrap();
    }

    #[test]
    fn files_round_trip_and_the_ca_is_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("walrus-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write_new_ca(&dir).unwrap();
        assert!(write_new_ca(&dir).is_err());
        write_node_cert(&dir, "n1").unwrap();
        let id = NodeIdentity::load(&dir, "n1").unwrap();
        assert_eq!(id.ca, read_cert(&dir.join("ca.pem")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
