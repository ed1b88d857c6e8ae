//! Loopback ports and the smallest HTTP client: what every process test needs to place a
//! server and to see it answer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A TCP port free on `ip` a moment ago (bound, then released).
pub fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    unclaimed(|| fixed_port(|port| TcpListener::bind((ip, port)).is_ok(), "TCP"))
}

/// Ports a test writes into a configuration come from below Linux's ephemeral range
/// (32768–60999 by default): between the pick and the server's bind, any process's
/// outgoing connection or `bind(0)` may take a port in that range (seen: a web host's
/// replicator port, "Address already in use", taken while the test polled status pages).
/// Here only another explicit bind can, and the pick checks the port is free.
const FIXED_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A port of [`FIXED_PORTS`] that `free` says is free, picked at random (so test
/// processes running side by side do not walk the same sequence).
fn fixed_port(free: impl Fn(u16) -> bool, what: &str) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut state = std::collections::hash_map::RandomState::new().build_hasher();
    for attempt in 0u64..10_000 {
        state.write_u64(attempt);
        let span = u64::from(FIXED_PORTS.end - FIXED_PORTS.start);
        let port = FIXED_PORTS.start + (state.finish() % span) as u16;
        if free(port) {
            return port;
        }
    }
    panic!("no free {what} port on loopback in {FIXED_PORTS:?}");
}

/// A port from `pick` that this process has not handed out before. The kernel may give
/// the same ephemeral port to two `bind(0)` calls once the first socket is closed, and a
/// test writes several ports into one configuration before anything binds them (seen:
/// a node's group port equal to an area name server's port, "Address already in use").
fn unclaimed(mut pick: impl FnMut() -> u16) -> u16 {
    static CLAIMED: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let port = pick();
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.insert(port) {
            return port;
        }
    }
    panic!("no loopback port left that this process has not handed out already");
}

/// A UDP port free on 127.0.0.1 a moment ago (a node's gcs address).
pub fn free_udp_port() -> u16 {
    unclaimed(any_udp_port)
}

fn any_udp_port() -> u16 {
    fixed_port(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok(), "UDP")
}

/// A port free for both UDP and TCP on 127.0.0.1 (a name server listens on both).
pub fn free_dns_port() -> u16 {
    unclaimed(|| {
        fixed_port(
            |port| {
                UdpSocket::bind(("127.0.0.1", port)).is_ok()
                    && TcpListener::bind(("127.0.0.1", port)).is_ok()
            },
            "UDP and TCP",
        )
    })
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
