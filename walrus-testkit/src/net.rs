//! Loopback ports and the smallest HTTP client: what every process test needs to place a
//! server and to see it answer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

// One picker for the whole test process: with walrus-gcs in the build (the `actors`
// feature) the kit uses walrus-gcs's, the one walrus-node's deployments use, so a port is
// never handed out twice in a process; without it (walrus-gcs's own tests) the same file,
// compiled here.
#[cfg(feature = "actors")]
use walrus_gcs::loopback;
#[cfg(not(feature = "actors"))]
#[path = "../../walrus-gcs/src/loopback.rs"]
mod loopback;

use loopback::{free_port, Protocols};

/// A TCP port free on `ip` a moment ago, below the ephemeral range and never handed out
/// before in this process (see walrus-gcs's `loopback`).
pub fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    free_port(ip, Protocols::Tcp).unwrap()
}

/// A UDP port free on 127.0.0.1 a moment ago (a node's gcs address).
pub fn free_udp_port() -> u16 {
    free_port(Ipv4Addr::LOCALHOST, Protocols::Udp).unwrap()
}

/// A port free for both UDP and TCP on 127.0.0.1 (a name server listens on both).
pub fn free_dns_port() -> u16 {
    free_port(Ipv4Addr::LOCALHOST, Protocols::UdpAndTcp).unwrap()
}

/// Waits (up to 20 s) until something accepts TCP connections on 127.0.0.1:`port`; panics
/// naming `what` otherwise.
pub fn wait_port(port: u16, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` over HTTP/1.0 from `addr`: the status code (0 if unreadable) and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// [`http_get`] of an `http://host:port/path` URL.
pub fn http_get_url(url: &str) -> std::io::Result<(u16, String)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidInput, url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse().map_err(|_| bad())?;
    http_get(addr, if path.is_empty() { "/" } else { path })
}
