//! Differential test (issue 15, item 3): the embedded name server and a real BIND 9 loaded
//! with `walrus-node dns bind-config`'s output must give the same answers.
//!
//! One configuration — `config/walrus.toml` as shipped: site `example.com`, three areas whose
//! zones (`area-eu.example.com`, `area-us.example.com`, `area-asia.example.com`) are nested
//! inside the site zone — and, for area eu, two servers on loopback:
//!
//! ```text
//!                      +--> walrus-node dns serve --area eu   (embedded)
//!   the same queries --+
//!   (UDP, EDNS, RD, DO) +--> named -g, zones from `dns bind-config --area eu`  (BIND)
//! ```
//!
//! BIND runs as an operator would run it (README step 6): `recursion no; notify no;` and
//! every other option at its default — in particular BIND 9.18's `minimal-responses
//! no-auth-recursive`, which puts the zone's NS rrset in the authority section (and its
//! addresses in the additional section) of positive answers to queries without RD, which is
//! what resolvers send.
//!
//! Each reply is reduced to what a resolver acts on: the rcode, the AA, TC, RD and RA flags,
//! whether it carries EDNS and the DO bit, and each section (answer, authority, additional
//! without OPT and TSIG) as a sorted multiset of `name TTL type rdata` lines — BIND shuffles
//! the order of records, so order is not compared. Every query is sent three times: RD=0 (a
//! resolver), RD=1 (`dig`'s default), and RD=0 with the EDNS DO bit (a validating resolver).
//! On a mismatch the test prints, query by query, what each server said and how they
//! differ, then fails. `WALRUS_DNS_DIFF_ALL=1` prints every reply pair, the agreeing ones
//! too (both servers can agree and both be wrong). The embedded server is asked each
//! question twice: the second reply comes from its reply cache and must equal the first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use walrus_testkit::actors::deployment::bind_config_cli;
use walrus_testkit::dns::start_authority;
use walrus_testkit::{need, ChildGuard, TempDir};

/// The area whose two servers are compared.
const AREA: &str = "eu";
/// The TSIG key name `bind-config` grants updates to (the `tsig-keygen` name).
const KEY_NAME: &str = "walrus-eu";
/// The EDNS UDP payload size we advertise (the DNS Flag Day 2020 value resolvers use).
const EDNS_PAYLOAD: u16 = 1232;

/// The queries, each sent with RD=0 (a resolver), RD=1 (`dig`) and RD=0 with the EDNS DO
/// bit (a validating resolver).
const QUERIES: &[(&str, RecordType)] = &[
    // The site name: a CNAME into our area zone.
    ("www.example.com", RecordType::A),
    ("www.example.com", RecordType::AAAA),
    // Our area's name: the current answer; AAAA where there is none.
    ("www.area-eu.example.com", RecordType::A),
    ("www.area-eu.example.com", RecordType::AAAA),
    // Each zone's apex.
    ("example.com", RecordType::NS),
    ("example.com", RecordType::SOA),
    ("area-eu.example.com", RecordType::NS),
    ("area-eu.example.com", RecordType::SOA),
    // Our name server's own address (glue elsewhere).
    ("ns.area-eu.example.com", RecordType::A),
    ("ns.area-eu.example.com", RecordType::AAAA),
    // Other areas' zones: delegations from the site zone (referrals).
    ("www.area-us.example.com", RecordType::A),
    ("area-us.example.com", RecordType::NS),
    ("area-us.example.com", RecordType::SOA),
    ("ns.area-us.example.com", RecordType::A),
    ("www.area-asia.example.com", RecordType::A),
    ("area-asia.example.com", RecordType::NS),
    // DS is the parent's side of a delegation: answered from the site zone.
    ("area-us.example.com", RecordType::DS),
    // A missing name in each zone, and a type the apex does not have.
    ("nosuch.example.com", RecordType::A),
    ("nosuch.area-eu.example.com", RecordType::A),
    ("example.com", RecordType::MX),
    // A name outside our zones.
    ("www.example.org", RecordType::A),
];

#[test]
fn embedded_server_answers_like_bind_loaded_from_bind_config() {
    let dir = TempDir::new("dns-vs-bind");
    let config = shipped_config(dir.path());

    let embedded = Embedded::start(&config, dir.path());
    let bind = Bind::start(&config, &dir.path().join("bind"));

    let show_all = std::env::var_os("WALRUS_DNS_DIFF_ALL").is_some();
    let mut report = String::new();
    let mut differ = 0;
    let mut total = 0;
    for &(name, rtype) in QUERIES {
        for (rd, dnssec_ok) in [(false, false), (true, false), (false, true)] {
            total += 1;
            let q = Question {
                name,
                rtype,
                rd,
                dnssec_ok,
            };
            // Twice: the second reply comes from the embedded server's reply cache.
            let ours = ask(embedded.addr, &q);
            let again = ask(embedded.addr, &q);
            let theirs = ask(bind.addr, &q);
            if again != ours {
                differ += 1;
                let _ = writeln!(
                    report,
                    "\n=== {q}: the embedded server's second reply (\"embedded\") differs from its first (\"bind\")"
                );
                report.push_str(&diff(&again, &ours));
            } else if ours != theirs {
                differ += 1;
                let _ = writeln!(report, "\n=== {q}: DIFFER");
                report.push_str(&diff(&ours, &theirs));
            } else if show_all {
                println!("=== {q}: same\n{}", show(&ours));
            }
        }
    }
    if differ > 0 {
        panic!(
            "{differ} of {total} queries differ between the embedded server (\"embedded\") and \
             BIND loaded from bind-config (\"bind\"):{report}\n\nbind-config zone files:\n{}",
            bind.zone_files()
        );
    }
}

/// `config/walrus.toml` as shipped, with its state directory moved into `dir` (so no stored
/// answer exists: both servers start from the home cluster's servers).
fn shipped_config(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/walrus.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let line = "state_dir = \"/var/lib/walrus/dns\"";
    assert!(text.contains(line), "config/walrus.toml lost its `{line}`");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let text = text.replacen(line, &format!("state_dir = \"{}\"", state.display()), 1);
    let path = dir.join("walrus.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn walrus_node() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walrus-node"))
}

/// `walrus-node dns serve --area eu` on a free loopback port.
struct Embedded {
    addr: SocketAddr,
    _proc: ChildGuard,
}

impl Embedded {
    fn start(config: &Path, dir: &Path) -> Self {
        let port = walrus_node::cluster::free_dns_port().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = walrus_node();
        cmd.args(["dns", "serve", "--area", AREA, "--config"])
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string());
        let proc = start_authority(
            "walrus-node dns serve",
            &mut cmd,
            &dir.join("embedded.log"),
            addr,
            &["area-eu.example.com"],
        );
        Embedded { addr, _proc: proc }
    }
}

/// A real BIND 9 set up from `walrus-node dns bind-config --area eu` as README step 6 says.
struct Bind {
    addr: SocketAddr,
    dir: PathBuf,
    files: Vec<(String, String)>,
    _proc: ChildGuard,
}

impl Bind {
    fn start(config: &Path, dir: &Path) -> Self {
        let files = bind_config_cli(
            Path::new(env!("CARGO_BIN_EXE_walrus-node")),
            config,
            AREA,
            dir,
            &["--key-name", KEY_NAME],
        );
        let key = Command::new(need("tsig-keygen", "bind9"))
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .unwrap();
        assert!(key.status.success(), "tsig-keygen: {key:?}");

        let port = walrus_node::cluster::free_dns_port().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.display();
        // Only what running on loopback in a temp dir needs, plus README step 6's
        // `recursion no; notify no;`: every answer-shaping option stays at its default.
        let conf = format!(
            "{key}\noptions {{\n\tdirectory \"{d}\";\n\tpid-file \"{d}/named.pid\";\n\
             \tsession-keyfile \"{d}/session.key\";\n\tmanaged-keys-directory \"{d}\";\n\
             \tlisten-on port {port} {{ 127.0.0.1; }};\n\tlisten-on-v6 {{ none; }};\n\
             \trecursion no;\n\tnotify no;\n}};\ncontrols {{ }};\n{zones}",
            key = String::from_utf8_lossy(&key.stdout),
            zones = files[0].1,
        );
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(need("named", "bind9"));
        cmd.arg("-g").arg("-c").arg(&conf_path);
        // BIND starts even when a zone fails to load: wait for both.
        let proc = start_authority(
            "named",
            &mut cmd,
            &dir.join("named.log"),
            addr,
            &["example.com", "area-eu.example.com"],
        );
        Bind {
            addr,
            dir: dir.to_owned(),
            files,
            _proc: proc,
        }
    }

    fn zone_files(&self) -> String {
        let mut s = format!("(in {})\n", self.dir.display());
        for (name, body) in &self.files[1..] {
            let _ = write!(s, "// ---- {name} ----\n{body}");
        }
        s
    }
}

/// One query as sent.
struct Question<'a> {
    name: &'a str,
    rtype: RecordType,
    rd: bool,
    /// The EDNS DO bit (RFC 3225: a server copies it into its reply).
    dnssec_ok: bool,
}

impl std::fmt::Display for Question<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} RD={}", self.name, self.rtype, u8::from(self.rd))?;
        if self.dnssec_ok {
            write!(f, " DO=1")?;
        }
        Ok(())
    }
}

/// A reply reduced to what is compared.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Nothing came back (three tries, 2 s each), or what came back did not parse.
    None(String),
    Answer(Answer),
}

#[derive(Debug, PartialEq, Eq)]
struct Answer {
    /// `RCODE flags... edns [do]`, e.g. `NOERROR aa rd edns`.
    header: String,
    /// Each section as sorted `name TTL type rdata` lines.
    answer: Vec<String>,
    authority: Vec<String>,
    /// Without OPT and TSIG (hickory keeps those apart from the section).
    additional: Vec<String>,
}

/// Sends `q` to `server` over UDP with EDNS and reduces the reply.
fn ask(server: SocketAddr, q: &Question) -> Reply {
    // Distinct ids so a late reply to an earlier query is never taken for this one's.
    static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(q.rd);
    m.add_query(Query::query(Name::from_ascii(q.name).unwrap(), q.rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD)
        .set_dnssec_ok(q.dnssec_ok);
    m.set_edns(edns);
    let bytes = m.to_vec().unwrap();

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 65535];
    for _ in 0..3 {
        sock.send_to(&bytes, server).unwrap();
        // Until the read times out: then send again.
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from != server {
                continue;
            }
            return match Message::from_vec(&buf[..n]) {
                Ok(r) if r.id() == id => Reply::Answer(reduce(&r)),
                Ok(_) => continue, // a late reply to an earlier try
                Err(e) => Reply::None(format!("unparsable reply ({n} bytes): {e}")),
            };
        }
    }
    Reply::None("no reply".into())
}

fn reduce(r: &Message) -> Answer {
    // hickory's Debug names upper-cased are dig's (NoError -> NOERROR, NXDomain -> NXDOMAIN).
    let mut header = format!("{:?}", r.response_code()).to_uppercase();
    for (set, flag) in [
        (r.authoritative(), "aa"),
        (r.truncated(), "tc"),
        (r.recursion_desired(), "rd"),
        (r.recursion_available(), "ra"),
        (r.extensions().is_some(), "edns"),
        (
            r.extensions().as_ref().is_some_and(|e| e.flags().dnssec_ok),
            "do",
        ),
    ] {
        if set {
            header.push(' ');
            header.push_str(flag);
        }
    }
    Answer {
        header,
        answer: section(r.answers()),
        authority: section(r.name_servers()),
        additional: section(r.additionals()),
    }
}

fn section(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .filter(|r| !matches!(r.record_type(), RecordType::OPT | RecordType::TSIG))
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name().to_ascii().to_lowercase(),
                r.ttl(),
                r.record_type(),
                r.data()
            )
        })
        .collect();
    v.sort();
    v
}

/// What differs between the embedded server's reply and BIND's, line by line.
fn diff(ours: &Reply, theirs: &Reply) -> String {
    let mut s = String::new();
    let (a, b) = match (ours, theirs) {
        (Reply::Answer(a), Reply::Answer(b)) => (a, b),
        _ => {
            let _ = writeln!(s, "  embedded: {ours:?}\n  bind:     {theirs:?}");
            return s;
        }
    };
    if a.header != b.header {
        let _ = writeln!(
            s,
            "  header    embedded: {}\n            bind:     {}",
            a.header, b.header
        );
    }
    for (title, x, y) in [
        ("answer", &a.answer, &b.answer),
        ("authority", &a.authority, &b.authority),
        ("additional", &a.additional, &b.additional),
    ] {
        if x == y {
            continue;
        }
        let _ = writeln!(s, "  {title}:");
        for line in multiset_minus(x, y) {
            let _ = writeln!(s, "    only embedded: {line}");
        }
        for line in multiset_minus(y, x) {
            let _ = writeln!(s, "    only bind:     {line}");
        }
        for line in x.iter().filter(|l| y.contains(l)) {
            let _ = writeln!(s, "    both:          {line}");
        }
    }
    s
}

/// One reply, as `diff` shows lines.
fn show(r: &Reply) -> String {
    let Reply::Answer(a) = r else {
        return format!("  {r:?}\n");
    };
    let mut s = format!("  header: {}\n", a.header);
    for (title, lines) in [
        ("answer", &a.answer),
        ("authority", &a.authority),
        ("additional", &a.additional),
    ] {
        for line in lines {
            let _ = writeln!(s, "  {title}: {line}");
        }
    }
    s
}

/// The lines of sorted `x` not matched one for one in sorted `y`.
fn multiset_minus<'a>(x: &'a [String], y: &[String]) -> Vec<&'a String> {
    let mut rest: Vec<&String> = y.iter().collect();
    let mut out = Vec::new();
    for line in x {
        match rest.iter().position(|r| *r == line) {
            Some(i) => {
                rest.remove(i);
            }
            None => out.push(line),
        }
    }
    out
}
