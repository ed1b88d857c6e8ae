//! A minimal HTTP GET for reading status pages and probing health, over tokio.
//!
//! Why not an HTTP client crate: the Reporter needs one GET of a small page from a server
//! on the same host, a timeout, a size limit, and to tell "connection refused" (the web
//! server is down: PANIC) from other failures. hyper/reqwest would bring a large
//! dependency tree (and their own TLS choices) into every node for that; ureq is blocking.
//! So we send an HTTP/1.0 request (the server then answers without chunking and closes)
//! and parse the answer with a pure function tested on its own.
//!
//! `https://` URLs are refused with [`HttpError::BadUrl`] for now (see the module docs of
//! `reporter` for what remains).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// An `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
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
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.target(), self.path_and_query)
    }
}

impl FromStr for HttpUrl {
    type Err = HttpError;

    fn from_str(url: &str) -> Result<Self, HttpError> {
        let bad = |reason| HttpError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        if url.starts_with("https://") {
            return Err(bad(
                "https is not supported yet; probe the server over http",
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or(bad("must start with http://"))?;
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
                "" => (host, 80),
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
                None => (authority, 80),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HttpUrl {
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

/// GETs `url`, all of it (connect, send, read) within `timeout`.
pub async fn get(url: &HttpUrl, timeout: Duration) -> Result<HttpResponse, HttpError> {
    let target = url.target();
    match tokio::time::timeout(timeout, get_inner(url, &target)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            target,
            after: timeout,
        }),
    }
}

async fn get_inner(url: &HttpUrl, target: &str) -> Result<HttpResponse, HttpError> {
    let mut stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
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
    let io = |source| HttpError::Io {
        target: target.to_owned(),
        source,
    };
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: walrus-reporter\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path_and_query,
        url.target()
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::with_capacity(2048);
    let mut limited = (&mut stream).take(MAX_RESPONSE_BYTES as u64 + 1);
    limited.read_to_end(&mut buf).await.map_err(io)?;
    if buf.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError::TooLarge {
            limit: MAX_RESPONSE_BYTES,
        });
    }
    parse_response(&buf)
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
        for bad in [
            "ftp://x/",
            "https://x/",
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

    #[tokio::test]
    async fn refused_is_told_apart() {
        // Bind then drop a listener: the port is (almost certainly) closed right after.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url: HttpUrl = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let e = get(&url, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.is_refused(), "{e}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: HttpUrl = format!("http://{}/", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let hold = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let e = get(&url, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
        hold.abort();
    }

    #[tokio::test]
    async fn oversized_answer_is_refused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: HttpUrl = format!("http://{}/", l.local_addr().unwrap())
            .parse()
            .unwrap();
        let serve = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            let _ = s.write_all(&vec![b'x'; MAX_RESPONSE_BYTES + 10]).await;
        });
        let e = get(&url, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
        serve.abort();
    }
}
