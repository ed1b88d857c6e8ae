//! Loopback ports for a deployment whose configuration is written before its servers
//! start (the demo, the in-process and multi-process tests): a port is picked, written
//! into the file, and bound only later by the node or server that reads it.
//!
//! Two things can take such a port in between, and both were seen as "Address already in
//! use" on the CI machine:
//! - **an ephemeral port.** `bind(0)` and every outgoing connection (a QUIC client
//!   endpoint, a status-page poll) take ports from Linux's ephemeral range (32768–60999 by
//!   default). A port picked with `bind(0)` is in that range, so anything may take it once
//!   the picking socket closes. Here ports come from [`FIXED_PORTS`], below that range,
//!   where only another explicit bind can land.
//! - **the same pick twice.** One process writes several ports into one configuration
//!   before anything binds them; a port this process has handed out is never handed out
//!   again (the demo once gave an area's client listener a port another node held).
//!
//! std only: walrus-testkit compiles this same file (`#[path]`), since walrus-gcs's own
//! tests use the kit and the kit therefore cannot depend on walrus-gcs.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::Range;
use std::sync::Mutex;

/// Where picked ports come from: below Linux's default ephemeral range (32768–60999), above
/// the ports well-known services use.
pub const FIXED_PORTS: Range<u16> = 20_000..32_768;

/// What must be free on a picked port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    /// UDP only (a QUIC listener).
    Udp,
    /// TCP only (a web server, a status page).
    Tcp,
    /// UDP and TCP (a name server; a node's QUIC port, which is also its TLS/TCP transfer
    /// port).
    UdpAndTcp,
}

impl Protocols {
    fn free_on(self, ip: Ipv4Addr, port: u16) -> bool {
        let udp = || UdpSocket::bind((ip, port)).is_ok();
        let tcp = || TcpListener::bind((ip, port)).is_ok();
        match self {
            Protocols::Udp => udp(),
            Protocols::Tcp => tcp(),
            Protocols::UdpAndTcp => udp() && tcp(),
        }
    }
}

/// A port of [`FIXED_PORTS`] free for `protocols` on `ip` now, and never handed out before
/// by this process. Picked at random, so processes picking side by side do not walk the
/// same sequence. An error only when thousands of tries found none.
pub fn free_port(ip: Ipv4Addr, protocols: Protocols) -> io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut state = std::collections::hash_map::RandomState::new().build_hasher();
    let span = u64::from(FIXED_PORTS.end - FIXED_PORTS.start);
    for attempt in 0u64..10_000 {
        state.write_u64(attempt);
        let port = FIXED_PORTS.start + (state.finish() % span) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && protocols.free_on(ip, port) {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no {protocols:?} port free on {ip} in {FIXED_PORTS:?} after 10,000 tries"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_free_and_never_handed_out_twice() {
        let lo = Ipv4Addr::LOCALHOST;
        let mut seen = BTreeSet::new();
        for protocols in [Protocols::Udp, Protocols::Tcp, Protocols::UdpAndTcp].repeat(100) {
            let port = free_port(lo, protocols).unwrap();
            assert!(FIXED_PORTS.contains(&port), "{port}");
            assert!(seen.insert(port), "{port} handed out twice");
            assert!(
                protocols.free_on(lo, port),
                "{port} not free for {protocols:?}"
            );
        }
        // A port held by a socket is not free for that protocol.
        let held = UdpSocket::bind((lo, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!Protocols::Udp.free_on(lo, port));
        assert!(!Protocols::UdpAndTcp.free_on(lo, port));
    }
}
