//! Name servers and `dig`: BIND 9 (`named -g`) authoritative on a loopback port, started
//! from the zone statements a test renders (usually walrus' own `bind-config` output) and
//! guarded; the generic start of any authoritative server that waits until its zones
//! load; `dig`, parsed.

use crate::process::{need, ChildGuard};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts an authoritative server (`what`, for messages) with stdin closed and its output
/// appended to `log`, then polls until it answers the SOA of every one of `zones` with
/// NOERROR at `addr` (a server may start while one zone failed to load). Panics with the
/// log if it exits or is not ready in 30 s.
pub fn start_authority(
    what: &str,
    cmd: &mut Command,
    log: &Path,
    addr: SocketAddr,
    zones: &[&str],
) -> ChildGuard {
    let mut guard = ChildGuard::start_logged(what, cmd, log);
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(st) = guard.exited() {
            panic!("{what} exited ({st}):\n{}", read_log());
        }
        if zones
            .iter()
            .all(|z| dig(addr, z, "SOA").status == "NOERROR")
        {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    guard.kill();
    panic!("{what} not ready in 30 s:\n{}", read_log());
}

/// The `options` and `controls` of a test BIND in `dir`: authoritative only, on
/// 127.0.0.1:`port`, no notify, no rndc.
pub fn named_options(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "options {{\n directory \"{d}\";\n pid-file \"{d}/named.pid\";\n session-keyfile \"{d}/session.key\";\n\
         managed-keys-directory \"{d}\";\n listen-on port {port} {{ 127.0.0.1; }};\n listen-on-v6 {{ none; }};\n\
         recursion no;\n dnssec-validation no;\n notify no;\n}};\ncontrols {{ }};\n"
    )
}

/// BIND 9 in the foreground (`named -g`), authoritative on a loopback port; SIGKILLed on
/// drop, restartable on the same port and files.
pub struct Named {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// Its directory: named.conf, zone files, journals, `named.log`.
    pub dir: PathBuf,
    zones: Vec<String>,
    guard: ChildGuard,
}

impl Named {
    /// Writes `dir/named.conf` ([`named_options`] then `statements`: keys and zone
    /// statements whose files are already in `dir`) and starts named on 127.0.0.1:`port`;
    /// returns once each of `zones` answers its SOA.
    pub fn start(dir: &Path, port: u16, statements: &str, zones: &[&str]) -> Self {
        std::fs::write(
            dir.join("named.conf"),
            format!("{}{statements}\n", named_options(dir, port)),
        )
        .expect("writing named.conf");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let zones: Vec<String> = zones.iter().map(|z| z.to_string()).collect();
        let guard = Self::spawn(dir, addr, &zones);
        Named {
            addr,
            dir: dir.to_owned(),
            zones,
            guard,
        }
    }

    fn spawn(dir: &Path, addr: SocketAddr, zones: &[String]) -> ChildGuard {
        let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
        start_authority(
            &format!("named on {addr}"),
            Command::new(need("named", "bind9"))
                .arg("-g")
                .arg("-c")
                .arg(dir.join("named.conf")),
            &dir.join("named.log"),
            addr,
            &zones,
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// Starts again on the same port and files.
    pub fn restart(&mut self) {
        self.guard.kill();
        self.guard = Self::spawn(&self.dir, self.addr, &self.zones);
    }
}

/// A fresh TSIG key from `tsig-keygen -a hmac-sha256 NAME`, as BIND's `key` statement.
pub fn tsig_keygen(name: &str) -> String {
    let out = Command::new(need("tsig-keygen", "bind9"))
        .args(["-a", "hmac-sha256", name])
        .output()
        .expect("running tsig-keygen");
    assert!(out.status.success(), "tsig-keygen failed: {out:?}");
    String::from_utf8(out.stdout).expect("tsig-keygen prints text")
}

/// A `dig` answer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dig {
    /// NOERROR, NXDOMAIN, …, or "NO REPLY".
    pub status: String,
    /// The header flags (aa, qr, …).
    pub flags: Vec<String>,
    /// (name, ttl, type, data)
    pub answer: Vec<(String, u32, String, String)>,
    /// (name, ttl, type, data)
    pub authority: Vec<(String, u32, String, String)>,
}

impl Dig {
    /// The data of the answer's records of `rtype`, sorted.
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
        .expect("running dig");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

/// `dig @addr NAME TYPE`, parsed.
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

/// The A records `server` gives for `name` (sorted; a CNAME without addresses followed at
/// the same server, as a resolver would); empty on no answer.
pub fn dig_a(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = dig_followed(server, name, "A", &[])
        .data_of("A")
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    v.sort();
    v
}

/// [`dig_a`] as text (to compare with string literals).
pub fn dig_a_text(server: SocketAddr, name: &str) -> Vec<String> {
    dig_a(server, name)
        .iter()
        .map(Ipv4Addr::to_string)
        .collect()
}

/// The SOA serial of `zone` at `addr`.
pub fn serial(addr: SocketAddr, zone: &str) -> u32 {
    let d = dig(addr, zone, "SOA");
    let soa = d
        .answer
        .iter()
        .find(|r| r.2 == "SOA")
        .unwrap_or_else(|| panic!("no SOA for {zone} at {addr}: {d:?}"));
    soa.3
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unreadable SOA for {zone} at {addr}: {}", soa.3))
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
        } else if line.trim().is_empty() {
            section = "";
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
