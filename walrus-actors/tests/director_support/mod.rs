//! Shared helpers of the Director integration tests: temp dirs, free loopback ports, a
//! real BIND 9 started from our own `bind_config` output (killed on drop), and `dig`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use walrus_actors::director::bind_config::bind_config;
use walrus_actors::director::rfc2136::TsigKey;
use walrus_actors::director::zone::{RecordTtl, WwwRecords, ZoneLayout};

pub mod checks;
pub mod knot;
pub mod pdns;

/// Starts an authoritative server (`what`, for messages) with stdin closed and its output
/// appended to `log`, then polls until it answers both zones' SOA at `addr` (a server may
/// start while one zone failed to load). Panics with the log if it exits or is not ready
/// in 30 s.
pub fn spawn_authority(
    what: &str,
    mut cmd: Command,
    log: &Path,
    addr: SocketAddr,
    layout: &ZoneLayout,
) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited ({st}):\n{}", read_log());
        }
        if dig(addr, &layout.area_zone.to_ascii(), "SOA").status == "NOERROR"
            && dig(addr, &layout.site.to_ascii(), "SOA").status == "NOERROR"
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} not ready in 30 s:\n{}", read_log());
}

/// A real authoritative server on loopback for one area's layout, with the area's key:
/// what the shared RFC 2136 checks in [`checks`] need of it.
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

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "walrus-director-{tag}-{}-{n}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for udp+tcp");
}

pub fn need(binary: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("`{binary}` not found: install the Debian package `{package}`");
}

/// A fresh key from `tsig-keygen -a hmac-sha256 NAME`.
pub fn tsig_keygen(name: &str) -> TsigKey {
    let out = Command::new(need("tsig-keygen", "bind9"))
        .args(["-a", "hmac-sha256", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "tsig-keygen failed: {:?}", out);
    TsigKey::from_bind_key(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// The test layout for area `n`: site example.com, area zone area-N.example.com.
pub fn layout(n: u32, ttl: u32) -> ZoneLayout {
    ZoneLayout::new(
        "example.com",
        &format!("area-{n}.example.com"),
        None,
        vec!["127.0.0.1".parse().unwrap()],
        RecordTtl::try_from(Duration::from_secs(ttl as u64)).unwrap(),
    )
    .unwrap()
}

/// A real BIND 9 authoritative for one area's §7.2 layout, on a loopback port, set up from
/// `bind_config`. Killed (SIGKILL) on drop.
pub struct Bind {
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub key: TsigKey,
    pub layout: ZoneLayout,
    child: Option<Child>,
}

impl Bind {
    pub fn start(area: u32, key_name: &str) -> Self {
        let dir = TempDir::new(&format!("bind-a{area}"));
        let port = free_port();
        let key = tsig_keygen(key_name);
        let layout = layout(area, 30);
        let cfg = bind_config(&layout, key_name, dir.path(), &WwwRecords::default()).unwrap();
        std::fs::write(
            dir.path().join(&cfg.site_zone_file.0),
            &cfg.site_zone_file.1,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(&cfg.area_zone_file.0),
            &cfg.area_zone_file.1,
        )
        .unwrap();
        let d = dir.path().display();
        let conf = format!(
            "options {{\n\tdirectory \"{d}\";\n\tpid-file \"{d}/named.pid\";\n\
             \tsession-keyfile \"{d}/session.key\";\n\tmanaged-keys-directory \"{d}\";\n\
             \tlisten-on port {port} {{ 127.0.0.1; }};\n\tlisten-on-v6 {{ none; }};\n\
             \trecursion no;\n\tdnssec-validation no;\n\tnotify no;\n\n}};\n\
             controls {{ }};\n{}\n{}",
            key.to_bind_key(),
            cfg.zone_statements
        );
        std::fs::write(dir.path().join("named.conf"), conf).unwrap();
        let mut b = Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            key,
            layout,
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(need("named", "bind9"));
        cmd.arg("-g")
            .arg("-c")
            .arg(self.dir.path().join("named.conf"));
        let log = self.dir.path().join("named.log");
        self.child = Some(spawn_authority("named", cmd, &log, self.addr, &self.layout));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and files.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn serial(&self) -> u32 {
        serial(self.addr, &self.layout.area_zone.to_ascii())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `dig` answer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    /// (name, ttl, type, data)
    pub answer: Vec<(String, u32, String, String)>,
    pub authority: Vec<(String, u32, String, String)>,
}

impl Dig {
    pub fn data_of(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.2 == rtype)
            .map(|r| r.3.clone())
            .collect();
        v.sort();
        v
    }
}

/// `dig @addr NAME TYPE` with extra options, parsed. Never recursion.
pub fn dig_with(addr: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let out = Command::new(need("dig", "bind9-dnsutils"))
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string()])
        .args([name, rtype])
        .args([
            "+norecurse",
            "+time=2",
            "+tries=2",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
        ])
        .args(extra)
        .output()
        .unwrap();
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn dig(addr: SocketAddr, name: &str, rtype: &str) -> Dig {
    dig_with(addr, name, rtype, &[])
}

/// Like [`dig_with`], but as a resolver would: a CNAME answered without `rtype` data (an
/// area server gives `www.<site>` as the CNAME to its area zone alone, like BIND) is
/// followed by asking the same server for its target. The answers of every step are
/// kept, in order.
pub fn dig_followed(addr: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let mut d = dig_with(addr, name, rtype, extra);
    for _ in 0..4 {
        if !d.data_of(rtype).is_empty() || d.status != "NOERROR" {
            break;
        }
        let Some(target) = d.data_of("CNAME").pop() else {
            break;
        };
        let next = dig_with(addr, &target, rtype, extra);
        d.answer.extend(next.answer);
        d.status = next.status;
        d.authority = next.authority;
    }
    d
}

fn parse_dig(text: &str) -> Dig {
    let mut d = Dig {
        status: "NO REPLY".into(),
        flags: vec![],
        answer: vec![],
        authority: vec![],
    };
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").trim().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else if !line.starts_with(';') {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                let rec = (
                    f[0].to_owned(),
                    f[1].parse().unwrap_or(0),
                    f[3].to_owned(),
                    f[4..].join(" "),
                );
                match section {
                    "answer" => d.answer.push(rec),
                    "authority" => d.authority.push(rec),
                    _ => {}
                }
            }
        }
    }
    d
}

/// The SOA serial of `zone` at `addr`, via dig.
pub fn serial(addr: SocketAddr, zone: &str) -> u32 {
    let d = dig(addr, zone, "SOA");
    let soa = d
        .answer
        .iter()
        .find(|r| r.2 == "SOA")
        .unwrap_or_else(|| panic!("no SOA for {zone} at {addr}: {d:?}"));
    soa.3.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Polls `f` until it returns true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Authority for Bind {
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
        Bind::log(self)
    }
    fn kill(&mut self) {
        Bind::kill(self)
    }
    fn restart(&mut self) {
        Bind::restart(self)
    }
}
