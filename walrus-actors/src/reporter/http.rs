//! A minimal HTTP GET for reading status pages and probing health, over tokio.
//!
//! Why not an HTTP client crate: the Reporter needs one GET of a small page from a server
//! on the same host, a timeout, a size limit, and to tell "connection refused" (the web
//! server is down: PANIC) from other failures. hyper/reqwest would bring a large
//! dependency tree (and their own TLS choices) into every node for that; ureq is blocking.
//! So we send an HTTP/1.0 request (the server then answers without chunking and closes)
//! and parse the answer with a pure function tested on its own.
//!
//! `https://` pages go through rustls (ring provider, chosen explicitly per connection so
//! no process-level provider is needed), verified against a CA file: the system bundle by
//! default, or the operator's own CA for a self-signed server.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

/// The CA bundle `https://` pages are verified against unless configured otherwise
/// (Debian's `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Largest response we accept, head and body (status pages are under 2 KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The URL is not one we can fetch.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing listens at the address: the web server is down.
    #[error("connection to {target} refused")]
    Refused {
        /// `host:port`.
        target: String,
    },
    /// Connecting failed otherwise (unreachable, reset, name not resolved).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("I/O with {target}: {source}")]
    Io {
        /// `host:port`.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("no answer from {target} within {after:?}")]
    Timeout {
        /// `host:port`.
        target: String,
        /// The timeout.
        after: Duration,
    },
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error("answer larger than {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// TLS could not be set up or the handshake failed (bad certificate, wrong name).
    #[error("TLS with {target}: {reason}")]
    Tls {
        /// `host:port`, or the CA file when loading it failed.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer is not HTTP/1.x as we understand it.
    #[error("malformed HTTP answer: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl HttpError {
    /// True when nothing listens: the clearest sign that the web server is down.
    pub fn is_refused(&self) -> bool {
        matches!(self, HttpError::Refused { .. })
    }
}

/// An `http://host[:port]/path` or `https://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    tls: bool,
    host: String,
    port: u16,
    path_and_query: String,
}

impl HttpUrl {
    /// `host:port` as used for connecting (IPv6 hosts in brackets).
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a TCP connection to `host:port` and closes it: the liveness probe of fast
    /// failover (no request, so nothing shows in the server's hit counter). Refused when
    /// nothing listens; Timeout when no answer within `timeout`.
    pub async fn connect_probe(&self, timeout: Duration) -> Result<(), HttpError> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(source)) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(HttpError::Refused {
                    target: self.target(),
                })
            }
            Ok(Err(source)) => Err(HttpError::Connect {
                target: self.target(),
                source,
            }),
            Err(_) => Err(HttpError::Timeout {
                target: self.target(),
                after: timeout,
            }),
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.target(), self.path_and_query)
    }
}

impl FromStr for HttpUrl {
    type Err = HttpError;

    fn from_str(url: &str) -> Result<Self, HttpError> {
        let bad = |reason| HttpError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest, 80)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest, 443)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("the path holds spaces or control characters"));
        }
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed '[' in host"))?;
            match after {
                "" => (host, default_port),
                p => (
                    host,
                    p.strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or(bad("bad port"))?,
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad("bad port"))?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HttpUrl {
            tls,
            host: host.to_owned(),
            port,
            path_and_query: path.to_owned(),
        })
    }
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, decoded leniently as UTF-8 (status pages are ASCII).
    pub body: String,
}

/// How `https://` pages are verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// PEM file of the CAs to trust. Default (None): [`SYSTEM_CA_BUNDLE`].
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry. Default (None): the URL's host (useful when
    /// the probe connects to `127.0.0.1` but the certificate names the site).
    pub server_name: Option<String>,
    /// A client certificate and its key (PEM files) to present, e.g. an admin's to a
    /// node's HTTP side. Default: none.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

/// A page to GET: URL, timeout and, for `https://`, the verified TLS setup.
#[derive(Debug, Clone)]
pub struct Page {
    url: HttpUrl,
    timeout: Duration,
    tls: Option<Arc<Tls>>,
    /// Extra request header lines (`Name: value`), e.g. an `Authorization`.
    headers: String,
}

impl fmt::Display for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

impl Page {
    /// Parses the URL and, for `https://`, loads the CA file (once, here, not per GET).
    pub fn new(url: &str, timeout: Duration, tls: &TlsOptions) -> Result<Self, HttpError> {
        let url: HttpUrl = url.parse()?;
        let tls = if url.tls {
            let ca_file = tls
                .ca_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            let name_text = tls.server_name.clone().unwrap_or_else(|| url.host.clone());
            let name = ServerName::try_from(name_text.clone()).map_err(|_| HttpError::Tls {
                target: url.target(),
                reason: format!("{name_text:?} is not a valid server name"),
            })?;
            Some(Arc::new(Tls {
                connector: TlsConnector::from(client_config(&ca_file, tls.client_cert.as_ref())?),
                name,
            }))
        } else {
            None
        };
        Ok(Self {
            url,
            timeout,
            tls,
            headers: String::new(),
        })
    }

    /// Sends `name: value` with every GET (e.g. `Authorization: Bearer …`). A name or value
    /// with a line break is refused: it would split the request.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, HttpError> {
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || value.contains(['\r', '\n'])
        {
            return Err(HttpError::BadUrl {
                url: self.url.to_string(),
                reason: "a header name must be letters, digits and '-', its value one line",
            });
        }
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        Ok(self)
    }

    /// The URL.
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    /// GETs the page, all of it (connect, handshake, send, read) within the timeout.
    pub async fn get(&self) -> Result<HttpResponse, HttpError> {
        let target = self.url.target();
        match tokio::time::timeout(self.timeout, self.get_inner(&target)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                target,
                after: self.timeout,
            }),
        }
    }

    async fn get_inner(&self, target: &str) -> Result<HttpResponse, HttpError> {
        let url = &self.url;
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: walrus-reporter\r\nAccept: */*\r\n{}Connection: close\r\n\r\n",
            url.path_and_query,
            url.target(),
            self.headers
        );
        let stream = self.open(target).await?;
        parse_response(&exchange(stream, request.as_bytes(), target).await?)
    }

    /// POSTs `body` (HTTP/1.1, `Connection: close`) with the headers given by
    /// [`Self::with_header`] (say the `Content-Type` there), all within the timeout; returns
    /// the answer's status code (its body is not read: a webhook's answer says nothing more).
    pub async fn post(&self, body: &[u8]) -> Result<u16, HttpError> {
        let target = self.url.target();
        let attempt = async {
            let url = &self.url;
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: walrus-node\r\n{}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                url.path_and_query,
                url.target(),
                self.headers,
                body.len()
            );
            let mut stream = self.open(&target).await?;
            let io = |source| HttpError::Io {
                target: target.clone(),
                source,
            };
            stream.write_all(head.as_bytes()).await.map_err(io)?;
            stream.write_all(body).await.map_err(io)?;
            stream.flush().await.map_err(io)?;
            read_status_code(&mut stream, &target).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                target,
                after: self.timeout,
            }),
        }
    }

    /// Connects to the URL's host (and, for `https://`, completes the verified handshake).
    async fn open(&self, target: &str) -> Result<Box<dyn Stream>, HttpError> {
        let url = &self.url;
        let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::ConnectionRefused {
                    HttpError::Refused {
                        target: target.to_owned(),
                    }
                } else {
                    HttpError::Connect {
                        target: target.to_owned(),
                        source,
                    }
                }
            })?;
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| HttpError::Tls {
                        target: target.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(Box::new(stream))
            }
        }
    }
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// The largest answer head [`Page::post`] reads to find the status line.
const MAX_STATUS_HEAD: usize = 8 * 1024;

/// Reads until the status line is complete and returns its code.
async fn read_status_code<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    target: &str,
) -> Result<u16, HttpError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        if buf.len() > MAX_STATUS_HEAD {
            return Err(HttpError::TooLarge {
                limit: MAX_STATUS_HEAD,
            });
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| HttpError::Io {
                target: target.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let malformed = || HttpError::Malformed {
        reason: "the answer does not start with an HTTP/1.x status line".to_owned(),
    };
    let line = std::str::from_utf8(line).map_err(|_| malformed())?;
    let mut parts = line.split(' ');
    if !parts.next().unwrap_or("").starts_with("HTTP/1.") {
        return Err(malformed());
    }
    parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(malformed)
}

/// A rustls client configuration trusting the CAs in `ca_file`, ring provider.
fn client_config(
    ca_file: &Path,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let tls_err = |reason: String| HttpError::Tls {
        target: ca_file.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| tls_err(format!("cannot read CA file: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    // A system bundle may hold a certificate webpki cannot use: skip those, need one.
    let (added, _ignored) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
    if added == 0 {
        return Err(tls_err("no usable CA certificate in the file".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let file_err = |f: &Path, e: String| HttpError::Tls {
                target: f.display().to_string(),
                reason: e,
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_err(cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_err(cert, e.to_string()))?;
            let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                .map_err(|e| file_err(key, e.to_string()))?;
            config
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| file_err(cert, e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

/// Sends the request and reads the answer to its end, at most [`MAX_RESPONSE_BYTES`].
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    target: &str,
) -> Result<Vec<u8>, HttpError> {
    let io = |source| HttpError::Io {
        target: target.to_owned(),
        source,
    };
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge {
                        limit: MAX_RESPONSE_BYTES,
                    });
                }
            }
            // A TLS server that closes without close_notify: the answer is complete when
            // its length says so, which `parse_response` checks.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) => return Err(io(e)),
        }
    }
    Ok(buf)
}

/// Parses a complete HTTP/1.x answer (the connection was read to its end).
pub fn parse_response(bytes: &[u8]) -> Result<HttpResponse, HttpError> {
    let malformed = |reason: &str| HttpError::Malformed {
        reason: reason.to_owned(),
    };
    let head_end = find(bytes, b"\r\n\r\n").ok_or_else(|| {
        if bytes.is_empty() {
            malformed("empty answer")
        } else {
            malformed("no end of header")
        }
    })?;
    let head =
        std::str::from_utf8(&bytes[..head_end]).map_err(|_| malformed("header is not UTF-8"))?;
    let body = &bytes[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(&format!(
            "status line {:?} is not HTTP/1.x",
            status_line.chars().take(64).collect::<String>()
        )));
    }
    let status: u16 = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed("no three-digit status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("header line without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| malformed("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = content_length {
        body.get(..n)
            .ok_or_else(|| malformed("body shorter than Content-Length"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let malformed = |reason: &str| HttpError::Malformed {
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| malformed("chunk size line cut short"))?;
        let size_text = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| malformed("chunk size is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| malformed("chunk shorter than its size"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or_else(|| malformed("chunk not followed by CRLF"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u: HttpUrl = "http://127.0.0.1:8080/nginx_status".parse().unwrap();
        assert_eq!(u.target(), "127.0.0.1:8080");
        assert_eq!(u.path_and_query, "/nginx_status");
        let u: HttpUrl = "http://[::1]:81/server-status?auto".parse().unwrap();
        assert_eq!(u.target(), "[::1]:81");
        assert_eq!(u.to_string(), "http://[::1]:81/server-status?auto");
        let u: HttpUrl = "http://localhost".parse().unwrap();
        assert_eq!((u.port, u.path_and_query.as_str()), (80, "/"));
        let u: HttpUrl = "https://www.example.com/health".parse().unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        assert_eq!(u.to_string(), "https://www.example.com:443/health");
        for bad in [
            "ftp://x/",
            "http://:80/",
            "http://x:99999/",
            "http://[::1/",
            "http://x/a b",
            "http://u@x/",
        ] {
            assert!(bad.parse::<HttpUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        let r = parse_response(b"HTTP/1.0 503 Busy\r\n\r\ndown").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "down"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "abcde");
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc",
            b"\xff\xfe\r\n\r\n",
        ] {
            let e = parse_response(bad).unwrap_err();
            assert!(matches!(e, HttpError::Malformed { .. }), "{e}");
        }
    }

    #[test]
    fn https_setup_errors_are_clear() {
        let missing = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            server_name: None,
            client_cert: None,
        };
        let e = Page::new("https://127.0.0.1/", Duration::from_secs(1), &missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TLS with /nonexistent/ca.pem: cannot read CA file"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("walrus-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let opts = TlsOptions {
            ca_file: Some(empty),
            server_name: None,
            client_cert: None,
        };
        let e = Page::new("https://127.0.0.1/", Duration::from_secs(1), &opts).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("no usable CA certificate in the file"),
            "{e}"
        );
        // Plain http never touches the CA file.
        assert!(Page::new("http://127.0.0.1/", Duration::from_secs(1), &opts).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn refused_is_told_apart() {
        // Bind then drop a listener: the port is (almost certainly) closed right after.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let page = Page::new(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_secs(5),
            &TlsOptions::default(),
        )
        .unwrap();
        let e = page.get().await.unwrap_err();
        assert!(e.is_refused(), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let page = Page::new(
            &format!("http://{}/", l.local_addr().unwrap()),
            Duration::from_millis(200),
            &TlsOptions::default(),
        )
        .unwrap();
        let hold = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let e = page.get().await.unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
        hold.abort();
    }

    #[tokio::test]
    async fn oversized_answer_is_refused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let page = Page::new(
            &format!("http://{}/", l.local_addr().unwrap()),
            Duration::from_secs(10),
            &TlsOptions::default(),
        )
        .unwrap();
        let serve = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            let _ = s.write_all(&vec![b'x'; MAX_RESPONSE_BYTES + 10]).await;
        });
        let e = page.get().await.unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
        serve.abort();
    }
}
