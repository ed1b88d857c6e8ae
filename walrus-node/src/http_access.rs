//! Who may read a node's HTTP side (`status_addr`), and over what ([`crate::config::Http`]).
//!
//! - **Token**: with `[http] token_file`, `/status` and `/history` (the dashboard's data)
//!   answer only requests that carry `Authorization: Bearer <token>`; others get 401. The
//!   dashboard page itself is static (it holds no data) and sends the token it finds after
//!   `#token=` in its URL (a URL fragment never reaches the server or its logs).
//!   `/metrics` stays open unless `metrics_open = false` (Prometheus' convention: scrapers
//!   are configured per target, and the metrics name no secret).
//! - **TLS**: `tls = "cluster"` serves HTTPS with the node's own certificate from the
//!   cluster CA (clients verify with `ca.pem` and the node's name), `tls = "files"` with a
//!   certificate of your own.
//! - **Exposure**: a `status_addr` that is not loopback must have both, or say
//!   `allow_plain_public = true` (checked when the file is loaded).

use crate::config::{Config, ConfigError, HttpTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the HTTP side cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpAccessError {
    /// The token file cannot be read or holds no token.
    #[error("[http] token_file {file}: {reason}")]
    Token {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate or key cannot be loaded.
    #[error("[http] tls: {file}: {reason}")]
    Tls {
        /// The file (or directory) involved.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration does not name this node.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The HTTP side's access rules, loaded once at start.
#[derive(Clone, Default)]
pub struct HttpAccess {
    token: Option<String>,
    metrics_open: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// `admin.NAME` of every admin allowed to drain and pin.
    admins: Vec<String>,
}

impl std::fmt::Debug for HttpAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAccess")
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("metrics_open", &self.metrics_open)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

impl HttpAccess {
    /// Plain HTTP, no token (the demo, loopback-only tests).
    pub fn open() -> Self {
        Self {
            token: None,
            metrics_open: true,
            tls: None,
            admins: Vec::new(),
        }
    }

    /// The rules of node `node` in `config`: reads the token file and the certificate.
    pub fn from_config(config: &Config, node: &str) -> Result<Self, HttpAccessError> {
        config.node(node)?;
        let http = &config.http;
        let token = match &http.token_file {
            Some(file) => Some(read_token(file)?),
            None => None,
        };
        let tls = match &http.tls {
            HttpTls::Off => None,
            HttpTls::Cluster => {
                let id = walrus_gcs::transport::NodeIdentity::load(&config.tls.dir, node).map_err(
                    |e| HttpAccessError::Tls {
                        file: config.tls.dir.clone(),
                        reason: e.to_string(),
                    },
                )?;
                // Admins present certificates from the same CA (optional: browsers and
                // `walrus-node status` present none and use the token).
                let admin_roots = (!http.admins.is_empty()).then_some(id.ca);
                Some(server_config(
                    vec![id.cert],
                    PrivateKeyDer::Pkcs8(id.key),
                    admin_roots,
                    &config.tls.dir,
                )?)
            }
            HttpTls::Files { cert, key } => {
                let tls_err = |file: &Path, reason: String| HttpAccessError::Tls {
                    file: file.to_path_buf(),
                    reason,
                };
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| tls_err(cert, e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| tls_err(cert, e.to_string()))?;
                if chain.is_empty() {
                    return Err(tls_err(cert, "no certificate in the file".into()));
                }
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e.to_string()))?;
                Some(server_config(chain, key_der, None, cert)?)
            }
        };
        Ok(Self {
            token,
            metrics_open: http.metrics_open,
            tls,
            admins: http
                .admins
                .iter()
                .map(|a| format!("{}{a}", crate::config::ADMIN_PREFIX))
                .collect(),
        })
    }

    /// The admin a client certificate chain (already verified against the cluster CA by
    /// the TLS handshake) belongs to: `NAME` of a configured admin whose `admin.NAME` the
    /// certificate carries. A node's certificate names a node, never `admin.…`: None.
    pub fn admin_of(&self, chain: &[CertificateDer<'static>]) -> Option<String> {
        walrus_gcs::transport::tls::peer_name(chain, self.admins.iter().map(String::as_str))
            .and_then(|n| n.strip_prefix(crate::config::ADMIN_PREFIX))
            .map(str::to_owned)
    }

    /// The TLS configuration to serve with, if HTTPS.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    /// The scheme clients use: `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether a request for `path` with this `Authorization` header may be answered.
    /// The dashboard page (`/`) is static and always served.
    pub fn allows(&self, path: &str, authorization: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if path == "/" || (path == "/metrics" && self.metrics_open) {
            return true;
        }
        authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|given| same_bytes(given.trim().as_bytes(), token.as_bytes()))
    }
}

/// Compares without stopping at the first difference (the time taken does not tell an
/// attacker how much of the token was right).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token in `file`: its first line, trimmed; at least [`MIN_TOKEN_CHARS`] visible
/// ASCII characters.
pub fn read_token(file: &Path) -> Result<String, HttpAccessError> {
    let bad = |reason: String| HttpAccessError::Token {
        file: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < MIN_TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "the first line must be a token of at least {MIN_TOKEN_CHARS} visible ASCII \
             characters (e.g. `openssl rand -hex 24 > {}`)",
            file.display()
        )));
    }
    Ok(token)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<CertificateDer<'static>>,
    file: &Path,
) -> Result<Arc<rustls::ServerConfig>, HttpAccessError> {
    let tls_err = |reason: String| HttpAccessError::Tls {
        file: file.to_path_buf(),
        reason,
    };
    // The ring provider, chosen here, so no process-level provider is needed (FACTS.md).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).map_err(|e| tls_err(e.to_string()))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_err(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(metrics_open: bool) -> HttpAccess {
        HttpAccess {
            token: Some("0123456789abcdef0123".into()),
            metrics_open,
            tls: None,
            admins: Vec::new(),
        }
    }

    #[test]
    fn the_token_guards_the_data_but_not_the_page_or_open_metrics() {
        let a = with_token(true);
        let good = Some("Bearer 0123456789abcdef0123");
        assert!(a.allows("/", None));
        assert!(a.allows("/metrics", None));
        assert!(!a.allows("/status", None));
        assert!(!a.allows("/history", Some("Bearer 0123456789abcdef012")));
        assert!(!a.allows("/status", Some("Basic 0123456789abcdef0123")));
        assert!(a.allows("/status", good));
        assert!(a.allows("/history", good));
        let closed = with_token(false);
        assert!(!closed.allows("/metrics", None));
        assert!(closed.allows("/metrics", good));
        assert!(HttpAccess::open().allows("/status", None));
    }

    #[test]
    fn a_short_or_missing_token_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("walrus-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "short\n").unwrap();
        let e = read_token(&f).unwrap_err().to_string();
        assert!(e.contains("token") && e.contains("16"), "{e}");
        std::fs::write(&f, "  0123456789abcdef0123  \nignored\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "0123456789abcdef0123");
        let e = read_token(&dir.join("none")).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
