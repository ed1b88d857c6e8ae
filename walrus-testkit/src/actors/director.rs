//! The Director's authority servers (feature `actors`): real BIND 9, Knot DNS and
//! PowerDNS, each authoritative for one area's §7.2 layout on a loopback port and set up
//! from walrus-actors' own renderers (what `walrus-node dns *-config` prints), behind one
//! [`Authority`] trait; [`checks`] holds the RFC 2136 checks every one of them must pass.

pub use crate::dir::TempDir;
pub use crate::dns::serial;
pub use crate::dns::{dig, dig_followed, dig_with, Dig};
use crate::dns::{named_options, start_authority};
use crate::net::free_dns_port;
pub use crate::process::need;
use crate::process::ChildGuard;
pub use crate::wait::wait_until;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use walrus_actors::director::bind_config::bind_config;
use walrus_actors::director::rfc2136::TsigKey;
use walrus_actors::director::zone::{RecordTtl, WwwRecords, ZoneLayout};

#[allow(missing_docs)] // test scenarios: each name says what it checks
pub mod checks;
pub mod knot;
pub mod pdns;

/// A real authoritative server on loopback for one area's layout, with the area's key:
/// what the shared RFC 2136 checks in [`checks`] need of it.
#[allow(missing_docs)] // addr, key, layout: what they say
pub trait Authority {
    fn addr(&self) -> SocketAddr;
    fn key(&self) -> &TsigKey;
    fn layout(&self) -> &ZoneLayout;
    /// The server's own log so far.
    fn log(&self) -> String;
    /// SIGKILL, like a crash.
    fn kill(&mut self);
    /// Starts again on the same port and files.
    fn restart(&mut self);
    /// The area zone's SOA serial, via dig.
    fn serial(&self) -> u32 {
        serial(self.addr(), &self.layout().area_zone.to_ascii())
    }
}

/// A fresh key from `tsig-keygen -a hmac-sha256 NAME`.
pub fn tsig_keygen(name: &str) -> TsigKey {
    TsigKey::from_bind_key(&crate::dns::tsig_keygen(name)).expect("tsig-keygen's key")
}

/// The test layout for area `n`: site example.com, area zone area-N.example.com.
pub fn layout(n: u32, ttl: u32) -> ZoneLayout {
    ZoneLayout::new(
        "example.com",
        &format!("area-{n}.example.com"),
        None,
        vec![std::net::IpAddr::from([127, 0, 0, 1])],
        RecordTtl::try_from(Duration::from_secs(ttl as u64)).expect("a test TTL"),
    )
    .expect("the test layout")
}

/// A real authoritative server (BIND 9, Knot DNS or PowerDNS) for one area's §7.2 layout
/// on a loopback port, with the area's key; SIGKILLed on drop, restartable on the same
/// port and files. [`Authoritative::bind`] here, [`Authoritative::knot`] in [`knot`],
/// [`Authoritative::pdns`] in [`pdns`].
pub struct Authoritative {
    /// Where it answers.
    pub addr: SocketAddr,
    /// The area's key.
    pub key: TsigKey,
    /// The area's layout.
    pub layout: ZoneLayout,
    /// Which server, for messages.
    what: &'static str,
    /// Its log, in `dir`.
    log: &'static str,
    /// The command that starts it in `dir`.
    command: fn(&std::path::Path) -> Command,
    guard: Option<ChildGuard>,
    /// Its directory (removed on drop, after the server is killed: fields drop in order).
    pub dir: TempDir,
}

impl Authoritative {
    /// The server of `what` whose files are in `dir`, started with `command`; returns once
    /// both zones of `layout` answer their SOA.
    fn start(
        what: &'static str,
        log: &'static str,
        command: fn(&std::path::Path) -> Command,
        dir: TempDir,
        (addr, key, layout): (SocketAddr, TsigKey, ZoneLayout),
    ) -> Self {
        let mut s = Authoritative {
            addr,
            key,
            layout,
            what,
            log,
            command,
            guard: None,
            dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let zones = [
            self.layout.area_zone.to_ascii(),
            self.layout.site.to_ascii(),
        ];
        self.guard = Some(start_authority(
            self.what,
            &mut (self.command)(self.dir.path()),
            &self.dir.join(self.log),
            self.addr,
            &[&zones[0], &zones[1]],
        ));
    }

    /// BIND 9 for area `area` with a fresh key named `key_name`, set up from `bind_config`.
    pub fn bind(area: u32, key_name: &str) -> Self {
        let dir = TempDir::new(&format!("bind-a{area}"));
        let port = free_dns_port();
        let key = tsig_keygen(key_name);
        let layout = layout(area, 30);
        let cfg = bind_config(&layout, key_name, dir.path(), &WwwRecords::default())
            .expect("bind_config of the test layout");
        for (name, body) in [&cfg.site_zone_file, &cfg.area_zone_file] {
            std::fs::write(dir.join(name), body).expect("writing a zone file");
        }
        std::fs::write(
            dir.join("named.conf"),
            format!(
                "{}{}\n{}",
                named_options(dir.path(), port),
                key.to_bind_key(),
                cfg.zone_statements
            ),
        )
        .expect("writing named.conf");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self::start(
            "named",
            "named.log",
            |d| {
                let mut c = Command::new(need("named", "bind9"));
                c.arg("-g").arg("-c").arg(d.join("named.conf"));
                c
            },
            dir,
            (addr, key, layout),
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(self.log)).unwrap_or_default()
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }

    /// Starts again on the same port and files.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The area zone's SOA serial, via dig.
    pub fn serial(&self) -> u32 {
        serial(self.addr, &self.layout.area_zone.to_ascii())
    }
}

impl Authority for Authoritative {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn key(&self) -> &TsigKey {
        &self.key
    }
    fn layout(&self) -> &ZoneLayout {
        &self.layout
    }
    fn log(&self) -> String {
        Authoritative::log(self)
    }
    fn kill(&mut self) {
        Authoritative::kill(self)
    }
    fn restart(&mut self) {
        Authoritative::restart(self)
    }
}

/// Walrus' embedded name server for area `a<area>` (the test layout), serving on a
/// loopback address until dropped.
pub struct Embedded {
    /// The server (to apply answers to, to read its state).
    pub server: walrus_actors::director::embedded::EmbeddedServer,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Embedded {
    /// Opens its state at `state_file` and serves on `listen` (port 0: a free one).
    pub async fn start(area: u32, state_file: &std::path::Path, listen: SocketAddr) -> Self {
        let server = walrus_actors::director::embedded::EmbeddedServer::open(
            walrus_actors::model::AreaName(format!("a{area}")),
            layout(area, 30),
            state_file.to_owned(),
        )
        .expect("opening the embedded server's state");
        let listening = server
            .bind(listen)
            .await
            .unwrap_or_else(|e| panic!("binding the embedded server to {listen}: {e}"));
        let addr = listening.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(listening.run(async {
            let _ = rx.await;
        }));
        Embedded {
            server,
            addr,
            stop: Some(tx),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
