//! The resolver matrix (issue 15, item 2): does a client get the site's address when it
//! resolves `www.example.com` through a real recursive resolver from a cold cache, for
//! every zone layout Walrus accepts and both name-server backends?
//!
//! This module owns the matrix: its namespace and address plan, the site configuration it
//! gives `walrus-node`, the fake root, the area servers of each backend, the tries (flush
//! the resolver's whole cache, ask `www.example.com` A once) and the checker that judges
//! each reply. `cargo test -p walrus-lab --test resolvers` runs it with 50 tries a cell,
//! `walrus-lab resolve-matrix --tries 500` is the long form; both print one JSON line per
//! cell ([`Cell`]).
//!
//! ```text
//!  namespace wl<pid>xres: nothing but lo, so all of 127.0.0.0/8 is local
//!
//!  walrus-lab resolve-tries ─► resolver 127.53.2.k:53 ──► root 127.53.0.1:53 (BIND, ".")
//!  (per resolver: flush its   Unbound 1, BIND 2,       │  example.com NS ns.<each area zone>
//!   cache, ask, judge)        Knot 3, PowerDNS 4       │  flat: each area zone NS too
//!                                  │                   ▼
//!                                  └────────► area servers 127.53.1.{1,2,3}:53 (eu, us, asia)
//!                                             embedded: walrus-node dns serve
//!                                             bind:     named + walrus-node dns bind-config
//! ```
//!
//! Layouts ([`Layout`]): nested, area zones inside the site zone (`area-eu.example.com`,
//! what `config/walrus.toml` ships and the paper's §7.2 shows), and flat, area zones
//! outside it (`eu.walrus-areas.test`, the lab's). Each area's home cluster is two
//! addresses in 127.54.<area>.0/24: they are only answers, never contacted.
//!
//! A try fails when the reply is not NOERROR, has no A record, or has an A record that is
//! not one of the site's servers ([`judge`]); a resolver that does not reply is a failure
//! too (`TIMEOUT`). Servers start once per (layout, backend), resolvers once per QNAME
//! minimisation setting; the four resolvers are tried at the same time.

use super::clients::{stub_query, StubAnswer};
use super::netns::{require, run, run_prefix, ChildGuard, LabError, Namespace};
use super::servers::{spawn_resolver, spawn_root, ResolverSetup};
use super::spec::ResolverKind;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The site's name: the one `config/walrus.toml` ships.
pub const SITE: &str = "example.com";
/// The areas, each with its own name server and home cluster.
pub const AREAS: [&str; 3] = ["eu", "us", "asia"];
/// The parent of the area zones in the flat layout (no server is authoritative for it:
/// the root delegates each area zone directly).
pub const FLAT_PARENT: &str = "walrus-areas.test";
/// The resolvers of the matrix.
pub const RESOLVERS: [ResolverKind; 4] = [
    ResolverKind::Unbound,
    ResolverKind::Bind,
    ResolverKind::Knot,
    ResolverKind::Pdns,
];
/// The fake root server (`a.root.test`).
pub const ROOT: Ipv4Addr = Ipv4Addr::new(127, 53, 0, 1);

/// How long one stub query waits for the resolver (three of them per try, as a stub
/// retries): a cold resolution on loopback takes milliseconds.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long servers and resolvers get to come up.
const READY_SECS: u64 = 30;
/// Failed tries described in a cell (the rest are only counted).
const EXAMPLES: usize = 5;

/// Where the area zones live relative to the site zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Inside it: `area-eu.example.com` (the shipped layout, paper §7.2).
    Nested,
    /// Outside it: `eu.walrus-areas.test`.
    Flat,
}

impl Layout {
    /// Both, in the order the matrix runs them.
    pub const ALL: [Layout; 2] = [Layout::Nested, Layout::Flat];

    /// Short name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nested => "nested",
            Layout::Flat => "flat",
        }
    }

    /// Parses [`Layout::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == s)
    }

    /// The zone of `area` in this layout.
    pub fn zone(self, area: &str) -> String {
        match self {
            Layout::Nested => format!("area-{area}.{SITE}"),
            Layout::Flat => format!("{area}.{FLAT_PARENT}"),
        }
    }
}

/// What serves each area's zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Walrus's embedded name server (`walrus-node dns serve`).
    Embedded,
    /// BIND 9 loaded with `walrus-node dns bind-config`'s output and a TSIG key.
    Bind,
}

impl Backend {
    /// Both, in the order the matrix runs them.
    pub const ALL: [Backend; 2] = [Backend::Embedded, Backend::Bind];

    /// Short name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Bind => "bind",
        }
    }

    /// Parses [`Backend::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// The name server address of area number `i` (0-based, as in [`AREAS`]).
pub fn area_server(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 53, 1, 1 + i as u8)
}

/// The home cluster's addresses of area number `i`.
pub fn cluster(i: usize) -> [Ipv4Addr; 2] {
    let c = 1 + i as u8;
    [Ipv4Addr::new(127, 54, c, 1), Ipv4Addr::new(127, 54, c, 2)]
}

/// Every address of every server of the site: the only acceptable A records.
pub fn site_addresses() -> Vec<Ipv4Addr> {
    (0..AREAS.len()).flat_map(cluster).collect()
}

/// Where resolver `kind` listens (and queries from).
pub fn resolver_addr(kind: ResolverKind) -> Ipv4Addr {
    let k = match kind {
        ResolverKind::Unbound | ResolverKind::UnboundFast | ResolverKind::UnboundEcs => 1,
        ResolverKind::Bind => 2,
        ResolverKind::Knot => 3,
        ResolverKind::Pdns | ResolverKind::PdnsEcs => 4,
    };
    Ipv4Addr::new(127, 53, 2, k)
}

/// The site's configuration for `layout`, with its state files under `dir`. Each area
/// has one node (a Director) so the file is a valid deployment; nothing here runs them.
pub fn site_config(layout: Layout, dir: &Path) -> String {
    let d = dir.display();
    let mut c = format!(
        "site = \"{SITE}\"\n[dns]\nstate_dir = \"{d}/state\"\nttl = \"30s\"\n\
         [reporter]\nbypass_file = \"{d}/bypass\"\n\
         [tls]\nca = \"{d}/certs/ca.pem\"\ndir = \"{d}/certs\"\n"
    );
    for (i, a) in AREAS.iter().enumerate() {
        c.push_str(&format!(
            "[areas.{a}]\nzone = \"{}\"\nname_server = \"{}:53\"\nhome_cluster = \"c-{a}\"\n",
            layout.zone(a),
            area_server(i)
        ));
    }
    for (i, a) in AREAS.iter().enumerate() {
        for (k, addr) in cluster(i).iter().enumerate() {
            c.push_str(&format!(
                "[clusters.c-{a}.servers.{a}-{n}]\naddresses = [\"{addr}\"]\n\
                 status = \"probe\"\nstatus_url = \"http://{addr}:8080/\"\n",
                n = k + 1
            ));
        }
    }
    for (i, a) in AREAS.iter().enumerate() {
        c.push_str(&format!(
            "[nodes.{a}-a]\naddress = \"{}:7400\"\nroles = [\"controller\", \"director\", \"reporter\"]\n\
             server = \"{a}-1\"\narea = \"{a}\"\n",
            cluster(i)[0]
        ));
    }
    c
}

/// The fake root zone: the site zone delegated to every area's server (`ns.<area zone>`,
/// with glue) and, in the flat layout, each area zone to its own server.
pub fn root_zone(layout: Layout) -> String {
    let mut z = format!(
        "$TTL 3600\n. IN SOA a.root.test. hostmaster.root.test. 1 3600 600 86400 60\n\
         . IN NS a.root.test.\na.root.test. IN A {ROOT}\n"
    );
    for a in AREAS {
        z.push_str(&format!("{SITE}. IN NS ns.{}.\n", layout.zone(a)));
    }
    for (i, a) in AREAS.iter().enumerate() {
        let zone = layout.zone(a);
        if layout == Layout::Flat {
            z.push_str(&format!("{zone}. IN NS ns.{zone}.\n"));
        }
        z.push_str(&format!("ns.{zone}. IN A {}\n", area_server(i)));
    }
    z
}

/// One cell of the matrix: what one JSON line says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The resolver (`unbound`, `bind`, `knot`, `pdns`).
    pub resolver: String,
    /// The zone layout.
    pub layout: Layout,
    /// The area servers' backend.
    pub backend: Backend,
    /// QNAME minimisation on.
    pub qmin: bool,
    /// Cold-cache resolutions tried.
    pub tries: u32,
    /// Tries the checker failed.
    pub failures: u32,
    /// Replies by rcode (`TIMEOUT`: none).
    pub rcodes: BTreeMap<String, u32>,
    /// The first few failures, described.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// The checker's view of one try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The reply's rcode, `TIMEOUT` when there was none, `ERROR` when it could not be sent.
    pub rcode: String,
    /// Why the try failed, if it did.
    pub failure: Option<String>,
}

/// An rcode as DNS tools print it.
pub fn rcode_name(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// Judges one try: it passes only with NOERROR and A records that are all among `site`
/// (and at least one of them).
pub fn judge(reply: &Result<StubAnswer, String>, site: &[Ipv4Addr]) -> Verdict {
    let a = match reply {
        Ok(a) => a,
        Err(e) => {
            let rcode = if e == "dns timeout" {
                "TIMEOUT"
            } else {
                "ERROR"
            };
            return Verdict {
                rcode: rcode.into(),
                failure: Some(format!("no reply: {e}")),
            };
        }
    };
    let rcode = rcode_name(a.rcode);
    let failure = if a.rcode != ResponseCode::NoError {
        Some(rcode.clone())
    } else if a.addrs.is_empty() {
        Some("NOERROR without an A record".into())
    } else {
        a.addrs
            .iter()
            .find(|x| !site.contains(x))
            .map(|x| format!("A {x} is not one of the site's servers"))
    };
    Verdict { rcode, failure }
}

/// One step of emptying a resolver's cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flush {
    /// Run this command (program, then arguments); it must succeed.
    Command(Vec<String>),
    /// Send `cache.clear()` to the Knot Resolver whose control socket is the one file in
    /// this directory (`<rundir>/control/<pid>`).
    KresdControl(PathBuf),
}

/// How to empty the whole cache (records, negative answers, infrastructure) of the
/// resolver `setup` describes, started with `control: true`.
pub fn flush_steps(setup: &ResolverSetup) -> Vec<Flush> {
    let d = setup.dir.display();
    let cmd = |args: &[&str]| Flush::Command(args.iter().map(|s| (*s).to_owned()).collect());
    match setup.kind {
        ResolverKind::Unbound | ResolverKind::UnboundFast | ResolverKind::UnboundEcs => {
            let c = format!("{d}/unbound.conf");
            vec![
                cmd(&["unbound-control", "-c", &c, "flush_zone", "."]),
                cmd(&["unbound-control", "-c", &c, "flush_infra", "all"]),
            ]
        }
        ResolverKind::Bind => vec![cmd(&["rndc", "-c", &format!("{d}/rndc.conf"), "flush"])],
        ResolverKind::Knot => vec![Flush::KresdControl(setup.dir.join("control"))],
        ResolverKind::Pdns | ResolverKind::PdnsEcs => vec![cmd(&[
            "rec_control",
            &format!("--socket-dir={d}"),
            "wipe-cache",
            ".$",
        ])],
    }
}

/// What the `resolve-tries` role does: tries against one resolver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriesPlan {
    /// The resolver.
    pub resolver: ResolverKind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The name asked (A).
    pub qname: String,
    /// How many tries.
    pub tries: u32,
    /// The acceptable A records.
    pub site: Vec<Ipv4Addr>,
    /// How to empty its cache before each try.
    pub flush: Vec<Flush>,
}

/// What the `resolve-tries` role found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriesOutcome {
    /// Tries made.
    pub tries: u32,
    /// Tries that failed.
    pub failures: u32,
    /// Replies by rcode.
    pub rcodes: BTreeMap<String, u32>,
    /// The first few failures, described.
    pub examples: Vec<String>,
}

/// The `resolve-tries` role (run inside the namespace): for each try, empty the
/// resolver's cache, ask once, judge. A flush that fails stops it (the cache would not be
/// cold): that is an error, not a failed try.
pub async fn run_tries(plan: &TriesPlan) -> Result<TriesOutcome, String> {
    let mut out = TriesOutcome::default();
    for i in 0..plan.tries {
        for f in &plan.flush {
            flush(f).await?;
        }
        let reply = stub_query(plan.addr, &plan.qname, RecordType::A, QUERY_TIMEOUT).await;
        let v = judge(&reply, &plan.site);
        out.tries += 1;
        *out.rcodes.entry(v.rcode).or_default() += 1;
        if let Some(why) = v.failure {
            out.failures += 1;
            if out.examples.len() < EXAMPLES {
                out.examples.push(format!("try {i}: {why}"));
            }
        }
    }
    Ok(out)
}

async fn flush(f: &Flush) -> Result<(), String> {
    match f {
        Flush::Command(argv) => {
            let (program, args) = argv.split_first().ok_or("empty flush command")?;
            let out = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed: {}{}",
                    argv.join(" "),
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
        Flush::KresdControl(dir) => tokio::time::timeout(Duration::from_secs(5), kresd_clear(dir))
            .await
            .map_err(|_| format!("kresd control in {}: no reply in 5 s", dir.display()))?,
    }
}

/// `cache.clear()` on Knot Resolver's control socket: a REPL that prints `> ` when it
/// is ready for the next command.
async fn kresd_clear(dir: &Path) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let socket = std::fs::read_dir(dir)
        .map_err(|e| format!("kresd control in {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .next()
        .ok_or_else(|| format!("no kresd control socket in {}", dir.display()))?;
    let err = |e: std::io::Error| format!("kresd control {}: {e}", socket.display());
    let mut s = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(err)?;
    until_prompt(&mut s).await.map_err(err)?;
    s.write_all(b"cache.clear()\n").await.map_err(err)?;
    let text = until_prompt(&mut s).await.map_err(err)?;
    if text.contains("error") {
        return Err(format!("kresd cache.clear(): {text}"));
    }
    Ok(())
}

/// Reads Knot Resolver's REPL output up to its next `> ` prompt.
async fn until_prompt(s: &mut tokio::net::UnixStream) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.ends_with(b"> ") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The `resolve-ready` role (run inside the namespace): waits until every `(server,
/// name)` answers `name` SOA with NOERROR (a resolver: through the root; an area server:
/// its zone is loaded).
pub async fn wait_noerror(targets: &[(SocketAddr, String)], secs: u64) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    for (addr, name) in targets {
        loop {
            let r = stub_query(*addr, name, RecordType::SOA, Duration::from_millis(500)).await;
            let last = match r {
                Ok(a) if a.rcode == ResponseCode::NoError => break,
                Ok(a) => rcode_name(a.rcode),
                Err(e) => e,
            };
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{addr} does not answer {name} SOA after {secs} s: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// What to run: the whole matrix or a part of it.
#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// Cold-cache resolutions per cell.
    pub tries: u32,
    /// Work directory (configurations, zone files, logs); replaced at the start.
    pub work: PathBuf,
    /// The `walrus-lab` binary (its hidden roles run inside the namespace).
    pub lab_exe: PathBuf,
    /// The `walrus-node` binary (`dns serve`, `dns bind-config`).
    pub walrus_node: PathBuf,
    /// Layouts to run.
    pub layouts: Vec<Layout>,
    /// Backends to run.
    pub backends: Vec<Backend>,
    /// Resolvers to run.
    pub resolvers: Vec<ResolverKind>,
    /// QNAME minimisation settings to run.
    pub qmins: Vec<bool>,
}

impl MatrixOptions {
    /// The whole matrix with `tries` per cell.
    pub fn full(tries: u32, work: PathBuf, lab_exe: PathBuf, walrus_node: PathBuf) -> Self {
        Self {
            tries,
            work,
            lab_exe,
            walrus_node,
            layouts: Layout::ALL.to_vec(),
            backends: Backend::ALL.to_vec(),
            resolvers: RESOLVERS.to_vec(),
            qmins: vec![true, false],
        }
    }
}

/// Fails with the Debian package of the first program the matrix needs that is missing.
pub fn require_all(opts: &MatrixOptions) -> Result<(), LabError> {
    require("ip", "iproute2")?;
    require("named", "bind9")?;
    require("tsig-keygen", "bind9")?;
    for k in &opts.resolvers {
        let (program, package) = k.program();
        require(program, package)?;
        // What flushes its cache (Knot Resolver's is a socket this module speaks to).
        let control = match k {
            ResolverKind::Unbound | ResolverKind::UnboundFast | ResolverKind::UnboundEcs => {
                Some(("unbound-control", package))
            }
            ResolverKind::Bind => Some(("rndc", "bind9-utils")),
            ResolverKind::Pdns | ResolverKind::PdnsEcs => Some(("rec_control", package)),
            ResolverKind::Knot => None,
        };
        if let Some((c, p)) = control {
            require(c, p)?;
        }
    }
    Ok(())
}

/// Runs the matrix: every (layout, backend) with its root and area servers, inside it
/// every QNAME minimisation setting with its resolvers, `opts.tries` tries per resolver.
/// Calls `emit` with each cell as soon as it is known; returns them all. Every process
/// is stopped and the namespace deleted when this returns or its future is dropped.
pub async fn run_matrix(
    opts: &MatrixOptions,
    emit: &mut dyn FnMut(&Cell),
) -> Result<Vec<Cell>, LabError> {
    require_all(opts)?;
    let _ = std::fs::remove_dir_all(&opts.work);
    mkdir(&opts.work)?;
    let mut loopback = vec![ROOT];
    loopback.extend((0..AREAS.len()).map(area_server));
    loopback.extend(RESOLVERS.iter().map(|k| resolver_addr(*k)));
    let ns = Namespace::create(&format!("{}res", run_prefix()), &loopback)?;
    let mut cells = Vec::new();
    for &layout in &opts.layouts {
        for &backend in &opts.backends {
            let dir = opts
                .work
                .join(format!("{}-{}", layout.name(), backend.name()));
            let servers = start_servers(opts, ns.name(), &dir, layout, backend).await?;
            for &qmin in &opts.qmins {
                let d = dir.join(if qmin { "qmin-on" } else { "qmin-off" });
                let found = try_resolvers(opts, ns.name(), &d, qmin).await?;
                for (kind, outcome) in found {
                    let cell = Cell {
                        resolver: kind.name().to_owned(),
                        layout,
                        backend,
                        qmin,
                        tries: outcome.tries,
                        failures: outcome.failures,
                        rcodes: outcome.rcodes,
                        examples: outcome.examples,
                    };
                    emit(&cell);
                    cells.push(cell);
                }
            }
            drop(servers);
        }
    }
    drop(ns);
    Ok(cells)
}

fn mkdir(d: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(d).map_err(|source| LabError::Io {
        path: d.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    if let Some(d) = path.parent() {
        mkdir(d)?;
    }
    std::fs::write(path, text).map_err(|source| LabError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Starts the root and the three area servers of (`layout`, `backend`) and waits until
/// each serves its zones.
async fn start_servers(
    opts: &MatrixOptions,
    ns: &str,
    dir: &Path,
    layout: Layout,
    backend: Backend,
) -> Result<Vec<ChildGuard>, LabError> {
    let config = dir.join("walrus.toml");
    write(&config, &site_config(layout, dir))?;
    let mut guards = vec![spawn_root(ns, &dir.join("root"), ROOT, &root_zone(layout))?];
    let mut ready = vec![(SocketAddr::new(ROOT.into(), 53), ".".to_owned())];
    for (i, area) in AREAS.iter().enumerate() {
        let d = dir.join(area);
        mkdir(&d)?;
        guards.push(match backend {
            Backend::Embedded => start_embedded(opts, ns, &config, area, &d)?,
            Backend::Bind => start_bind(opts, ns, &config, area, i, &d)?,
        });
        ready.push((
            SocketAddr::new(area_server(i).into(), 53),
            layout.zone(area),
        ));
        ready.push((SocketAddr::new(area_server(i).into(), 53), SITE.to_owned()));
    }
    wait_ready(opts, ns, &ready, &mut guards, dir).await?;
    Ok(guards)
}

fn start_embedded(
    opts: &MatrixOptions,
    ns: &str,
    config: &Path,
    area: &str,
    dir: &Path,
) -> Result<ChildGuard, LabError> {
    let c = config.display().to_string();
    super::netns::spawn_in(
        ns,
        &format!("walrus-node dns serve (area {area})"),
        &opts.walrus_node.display().to_string(),
        &["dns", "serve", "--config", &c, "--area", area],
        &dir.join("serve.log"),
    )
}

/// BIND for `area` as an operator sets it up: `walrus-node dns bind-config`'s zone
/// statements and zone files, and a key from `tsig-keygen`.
fn start_bind(
    opts: &MatrixOptions,
    ns: &str,
    config: &Path,
    area: &str,
    i: usize,
    dir: &Path,
) -> Result<ChildGuard, LabError> {
    let text = run(
        &opts.walrus_node.display().to_string(),
        &[
            "dns",
            "bind-config",
            "--config",
            &config.display().to_string(),
            "--area",
            area,
            "--zone-dir",
            &dir.display().to_string(),
        ],
    )?;
    let files = split_bind_config(&text).ok_or_else(|| LabError::Command {
        cmd: format!("walrus-node dns bind-config --area {area}"),
        detail: format!("no named.conf and zone file sections in:\n{text}"),
    })?;
    for (name, body) in &files[1..] {
        write(&dir.join(name), body)?;
    }
    let key = run(
        "tsig-keygen",
        &["-a", "hmac-sha256", &format!("walrus-{area}")],
    )?;
    let d = dir.display();
    let addr = area_server(i);
    let conf = format!(
        "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; \
         session-keyfile \"{d}/session.key\"; managed-keys-directory \"{d}\"; \
         listen-on port 53 {{ {addr}; }}; listen-on-v6 {{ none; }}; recursion no; \
         dnssec-validation no; notify no; allow-query {{ any; }}; }};\n\
         controls {{ }};\n{key}\n{}",
        files[0].1
    );
    write(&dir.join("named.conf"), &conf)?;
    let c = dir.join("named.conf").display().to_string();
    super::netns::spawn_in(
        ns,
        &format!("named (area {area})"),
        "named",
        &["-4", "-g", "-c", &c],
        &dir.join("named.log"),
    )
}

/// `walrus-node dns bind-config`'s output cut at its `// ---- NAME ----` headers:
/// (`named.conf`, statements), then (zone file name, contents) for each zone file.
pub fn split_bind_config(text: &str) -> Option<Vec<(String, String)>> {
    let files = walrus_actors::director::bind_config::split_rendered(text);
    (files.len() >= 3 && files[0].0 == "named.conf").then_some(files)
}

/// Runs the `resolve-ready` role in the namespace for `targets`; fails as soon as one of
/// `guards` exits, naming it and where the logs are.
async fn wait_ready(
    opts: &MatrixOptions,
    ns: &str,
    targets: &[(SocketAddr, String)],
    guards: &mut [ChildGuard],
    dir: &Path,
) -> Result<(), LabError> {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&opts.lab_exe)
        .arg("resolve-ready");
    for (a, n) in targets {
        cmd.arg("--dns").arg(format!("{a}={n}"));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LabError::Command {
            cmd: "ip netns exec … walrus-lab resolve-ready".into(),
            detail: e.to_string(),
        })?;
    let not_ready = |what: String| LabError::NotReady {
        what,
        secs: READY_SECS,
        log: dir.display().to_string(),
    };
    loop {
        for g in guards.iter_mut() {
            if let Some(st) = g.exited() {
                return Err(not_ready(format!("{} exited ({st})", g.what())));
            }
        }
        if let Ok(st) = tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
            let st = st.map_err(|e| LabError::Command {
                cmd: "walrus-lab resolve-ready".into(),
                detail: e.to_string(),
            })?;
            if st.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = e.read_to_string(&mut err).await;
            }
            return Err(not_ready(err.trim().to_owned()));
        }
    }
}

/// Starts the resolvers with QNAME minimisation `qmin`, runs the tries against all of
/// them at once, and stops them.
async fn try_resolvers(
    opts: &MatrixOptions,
    ns: &str,
    dir: &Path,
    qmin: bool,
) -> Result<Vec<(ResolverKind, TriesOutcome)>, LabError> {
    let mut guards = Vec::new();
    let mut plans = Vec::new();
    let mut ready = Vec::new();
    for &kind in &opts.resolvers {
        let d = dir.join(kind.name());
        mkdir(&d)?;
        let setup = ResolverSetup {
            kind,
            addr: resolver_addr(kind),
            root: ROOT,
            dir: &d,
            qmin: Some(qmin),
            control: true,
        };
        guards.push(spawn_resolver(ns, kind.name(), &setup)?);
        let addr = SocketAddr::new(setup.addr.into(), 53);
        ready.push((addr, ".".to_owned()));
        let plan = TriesPlan {
            resolver: kind,
            addr,
            qname: format!("www.{SITE}."),
            tries: opts.tries,
            site: site_addresses(),
            flush: flush_steps(&setup),
        };
        let file = d.join("plan.json");
        let json = serde_json::to_string_pretty(&plan).map_err(|e| LabError::Command {
            cmd: "serialising the tries plan".into(),
            detail: e.to_string(),
        })?;
        write(&file, &json)?;
        plans.push((kind, file, d));
    }
    wait_ready(opts, ns, &ready, &mut guards, dir).await?;
    // Knot Resolver's control socket appears once it runs.
    let kcontrol = dir.join(ResolverKind::Knot.name()).join("control");
    if opts.resolvers.contains(&ResolverKind::Knot) {
        wait_for_file(&kcontrol).await?;
    }
    let mut running = Vec::new();
    for (kind, file, d) in &plans {
        let stderr = std::fs::File::create(d.join("tries.log")).map_err(|source| LabError::Io {
            path: d.join("tries.log").display().to_string(),
            source,
        })?;
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&opts.lab_exe)
            .arg("resolve-tries")
            .arg("--plan")
            .arg(file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LabError::Command {
                cmd: format!("walrus-lab resolve-tries --plan {}", file.display()),
                detail: e.to_string(),
            })?;
        running.push((*kind, d.clone(), child));
    }
    let mut found = Vec::new();
    for (kind, d, child) in running {
        let cmd = format!("walrus-lab resolve-tries ({})", kind.name());
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| LabError::Command {
                cmd: cmd.clone(),
                detail: e.to_string(),
            })?;
        let parsed = serde_json::from_slice::<TriesOutcome>(&out.stdout);
        match (out.status.success(), parsed) {
            (true, Ok(o)) => found.push((kind, o)),
            _ => {
                return Err(LabError::Command {
                    cmd,
                    detail: format!(
                        "{}: {}",
                        out.status,
                        std::fs::read_to_string(d.join("tries.log")).unwrap_or_default()
                    ),
                })
            }
        }
    }
    drop(guards);
    Ok(found)
}

async fn wait_for_file(dir: &Path) -> Result<(), LabError> {
    for _ in 0..(READY_SECS * 10) {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(LabError::NotReady {
        what: format!("a control socket in {}", dir.display()),
        secs: READY_SECS,
        log: dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(rcode: ResponseCode, addrs: &[Ipv4Addr]) -> Result<StubAnswer, String> {
        Ok(StubAnswer {
            addrs: addrs.to_vec(),
            area: None,
            ttl: 30,
            rcode,
        })
    }

    #[test]
    fn the_checker_passes_only_noerror_with_the_sites_addresses() {
        let site = site_addresses();
        let ok = judge(&answer(ResponseCode::NoError, &[cluster(1)[0]]), &site);
        assert_eq!(ok.rcode, "NOERROR");
        assert_eq!(ok.failure, None);
        // Planted faults: each is a failure with its rcode counted.
        let nx = judge(&answer(ResponseCode::NXDomain, &[]), &site);
        assert_eq!(nx.rcode, "NXDOMAIN");
        assert_eq!(nx.failure.as_deref(), Some("NXDOMAIN"));
        let foreign = judge(
            &answer(
                ResponseCode::NoError,
                &[cluster(0)[0], Ipv4Addr::new(192, 0, 2, 1)],
            ),
            &site,
        );
        assert_eq!(foreign.rcode, "NOERROR");
        assert!(foreign.failure.unwrap().contains("192.0.2.1"));
        let empty = judge(&answer(ResponseCode::NoError, &[]), &site);
        assert!(empty.failure.is_some());
        let sf = judge(&answer(ResponseCode::ServFail, &[]), &site);
        assert_eq!(sf.rcode, "SERVFAIL");
        assert!(sf.failure.is_some());
        let timeout = judge(&Err("dns timeout".into()), &site);
        assert_eq!(timeout.rcode, "TIMEOUT");
        assert!(timeout.failure.is_some());
    }

    #[test]
    fn the_root_delegates_the_site_to_every_area_and_flat_area_zones_directly() {
        let nested = root_zone(Layout::Nested);
        assert_eq!(nested.matches("example.com. IN NS ns.area-").count(), 3);
        assert!(nested.contains("ns.area-us.example.com. IN A 127.53.1.2\n"));
        // Nested area zones are below the site's delegation: only the site's servers
        // can delegate them.
        assert!(!nested.contains("area-us.example.com. IN NS"));
        let flat = root_zone(Layout::Flat);
        assert_eq!(flat.matches("example.com. IN NS ns.").count(), 3);
        assert!(flat.contains("us.walrus-areas.test. IN NS ns.us.walrus-areas.test.\n"));
        assert!(flat.contains("ns.asia.walrus-areas.test. IN A 127.53.1.3\n"));
    }

    #[test]
    fn the_site_configuration_is_valid_in_both_layouts() {
        for layout in Layout::ALL {
            let text = site_config(layout, Path::new("/tmp/x"));
            let c = walrus_node::config::Config::from_toml(Path::new("walrus.toml"), &text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", layout.name()));
            assert_eq!(c.areas.len(), 3);
        }
    }

    #[test]
    fn bind_config_output_is_cut_at_its_headers() {
        let text = "// ---- named.conf ----\nzone \"a\" {};\n// ---- a.zone ----\n$TTL 1\n\
                    // ---- b.zone ----\n$TTL 2\n";
        let f = split_bind_config(text).unwrap();
        assert_eq!(f[0], ("named.conf".into(), "zone \"a\" {};\n".into()));
        assert_eq!(f[2], ("b.zone".into(), "$TTL 2\n".into()));
        assert!(split_bind_config("nothing").is_none());
    }
}
