//! The deployment configuration: one TOML file describes the whole site.
//!
//! Every host runs `walrus-node run --config walrus.toml --node NAME`; the file names the
//! site, its areas (zone, name server, home cluster), its clusters (servers with their
//! addresses and status pages), the nodes with their roles, the timings, the controller's
//! parameters, the DNS backend and the notification channels. Per-host secrets (TLS key,
//! TSIG key) are file paths, so the same file can be copied to every host.
//!
//! Parse, don't validate: the file deserializes into `Raw*` structs that refuse unknown
//! fields, then [`Config::from_toml`] builds the validated [`Config`]; nothing downstream
//! checks it again. Every error names the file, the line and the field, and says what was
//! expected ([`ConfigError`]).
//!
//! ```text
//!  walrus.toml ──toml──▶ RawConfig (spans kept) ──validate──▶ Config ──▶ actors' configs
//! ```

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use walrus_actors::controller::knobs::{ControllerKnobs, NotifyKnobs};
use walrus_actors::director::learned::LearnedKnobs;
use walrus_actors::model::{AreaName, AreaSpec, ClusterName, ClusterSpec, ServerName, Topology};
use walrus_actors::reporter::knobs::ReporterKnobs;

/// A configuration error, naming the file, the line and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The dotted path of the field, e.g. `areas.eu.home_cluster`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A role a node can run; the file lists each node's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Joins `Controllers`; the first member is master and runs rounds.
    Controller,
    /// Reports its web server's load on request.
    Reporter,
    /// Replicates the site's content (primary or replica).
    Replicator,
    /// Puts its area's answer into the area's name server.
    Director,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Controller => "controller",
            Role::Reporter => "reporter",
            Role::Replicator => "replicator",
            Role::Director => "director",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "controller" => Ok(Role::Controller),
            "reporter" => Ok(Role::Reporter),
            "replicator" => Ok(Role::Replicator),
            "director" => Ok(Role::Director),
            other => Err(format!(
                "`{other}` is not a role; expected controller, reporter, replicator or director"
            )),
        }
    }
}

/// Whether a node runs the group-communication protocol or attaches to one that does
/// (walrus-gcs `PROTOCOL.md`, "Clients").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// A group member: in every view, heartbeats with every other member, its crash is a
    /// view change (the default). Controllers and Directors are members.
    #[default]
    Member,
    /// A client: attaches to one member of its `attach` list (the first that admits it;
    /// the next when its link ends) with a `client.<name>` certificate. Its crash is a
    /// membership event of its groups, not a view change: the web hosts' tier (Reporters,
    /// replicas).
    Client,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Member => "member",
            Tier::Client => "client",
        })
    }
}

/// The prefix of a client node's certificate name (SAN `client.NAME`); no member's name
/// has it (walrus-gcs `tier::link::CLIENT_PREFIX`).
pub const CLIENT_PREFIX: &str = walrus_gcs::tier::link::CLIENT_PREFIX;

/// How a Director reaches its area's name server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnsBackend {
    /// The Director serves the area zone and the site zone itself (the default).
    #[default]
    Embedded,
    /// RFC 2136 dynamic update with TSIG to an existing server (BIND, Knot, PowerDNS).
    Rfc2136,
}

/// Who sends each area's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DnsMode {
    /// A Director beside each name server applies its own area's answer (the default).
    #[default]
    Director,
    /// The master Controller sends every area's update itself (paper §7.2).
    Direct,
}

/// The kind of web-server status a Reporter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    /// nginx `stub_status`.
    Nginx,
    /// Apache `mod_status` (`?auto`).
    Apache,
    /// A plain HTTP(S) health probe.
    Probe,
}

/// Content replication (`[replicator]` deserializes straight into walrus-actors'
/// [`ReplicatorKnobs`]: its defaults and ranges are there; this file adds the checks that
/// need the node table).
pub use walrus_actors::replicator::{ReplicationMethod, ReplicatorKnobs, TransferTransport};

/// The validated deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// The site's DNS name, e.g. `example.com`; clients resolve `www.<site>`.
    pub site: String,
    /// Round and reporting periods.
    pub timing: Timing,
    /// The assignment's knobs (`[controller]`; the type, defaults and ranges are
    /// walrus-actors').
    pub controller: ControllerKnobs,
    /// DNS backend, mode and TTL.
    pub dns: Dns,
    /// Where notifications go.
    pub notify: NotifyKnobs,
    /// The Reporter's knobs (`[reporter]`; the type, defaults and ranges are
    /// walrus-actors' [`ReporterKnobs`]), shared by every reporting node.
    pub reporter: ReporterKnobs,
    /// Cluster CA and the node certificates.
    pub tls: Tls,
    /// Every area.
    pub areas: BTreeMap<AreaName, Area>,
    /// Every cluster.
    pub clusters: BTreeMap<ClusterName, Cluster>,
    /// Every node (host running `walrus-node`).
    pub nodes: BTreeMap<String, Node>,
    /// Content replication, when configured (`[replicator]`; the type, defaults and ranges
    /// are walrus-actors' [`ReplicatorKnobs`]).
    pub replicator: Option<ReplicatorKnobs>,
    /// Who may read the node's HTTP side (`/status`, `/history`, the dashboard, `/metrics`)
    /// and whether it is HTTPS.
    pub http: Http,
    /// A digest of the file's text (16 hex digits, FNV-1a 64): two nodes with different
    /// digests run different files. Shown in `/status` and `/metrics` (`walrus_config_info`).
    pub digest: String,
    /// Warnings found while reading the file, located (file, line, field); part of
    /// [`Config::warnings`]. Determined by the text, like `digest`.
    pub located_warnings: Vec<ConfigWarning>,
}

/// A warning about a valid file: its location and text have the shape of a
/// [`ConfigError`]'s (file, line, field, message) and print the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning(pub ConfigError);

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The `[http]` section: how the node's status side (`status_addr`) is protected.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Http {
    /// A file holding the bearer token that `/status`, `/history` and the dashboard's data
    /// need (`Authorization: Bearer TOKEN`). Default: none (no token asked).
    pub token_file: Option<PathBuf>,
    /// `/metrics` answers without the token (Prometheus scrapers). Default: true.
    pub metrics_open: bool,
    /// HTTPS, and with which certificate. Default: plain HTTP.
    pub tls: HttpTls,
    /// Lets a `status_addr` that is not loopback serve without both TLS and a token.
    /// Default: false (such a file is refused).
    pub allow_plain_public: bool,
    /// Who may drain and pin through this side: names of admin certificates
    /// (`walrus-node certs issue --admin NAME`, SAN `admin.NAME`). Needs `tls = "cluster"`.
    pub admins: Vec<String>,
}

/// The prefix of an admin certificate's name (SAN `admin.NAME`); no node name has it.
pub const ADMIN_PREFIX: &str = "admin.";

/// The certificate of the node's HTTPS side.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum HttpTls {
    /// Plain HTTP.
    #[default]
    Off,
    /// The node's own certificate from `[tls] dir` (issued by the cluster CA; its name is
    /// the node's name): clients verify it with the cluster's `ca.pem`.
    Cluster,
    /// A certificate chain and key of your own (PEM), e.g. from your web PKI.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

impl Http {
    /// Whether the status side on `addr` would be reachable by anyone without both TLS
    /// and a token (the check behind [`Config::load`]'s refusal).
    pub fn is_open_on(&self, addr: SocketAddr) -> bool {
        !addr.ip().is_loopback() && (self.tls == HttpTls::Off || self.token_file.is_none())
    }
}

/// Round and reporting periods.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// How often the master runs a round. Default 1 s; 3 s with `gcs_profile = "wan"`.
    pub round_period: Duration,
    /// How long the master waits for reports in a round. Default 40% of `round_period`;
    /// 75% with `gcs_profile = "wan"` (a report crosses the WAN twice, see docs/wan).
    pub report_timeout: Duration,
    /// How often a Reporter gathers statistics. Default 1 s.
    pub report_interval: Duration,
    /// Group-communication timeouts: `lan` (failure detected within 1 s) or `wan`.
    pub gcs_profile: GcsProfile,
    /// Fast failover (issue 23, beyond the paper). Default true: each Reporter probes its
    /// web server every 100 ms between readings and, the moment it refuses connections,
    /// multicasts an urgent PANIC; the master answers with an early round (phases 1-3
    /// only, each server starting at most one per `round_period`, a dead server
    /// re-admitted only at a normal round), and a flapping server is held PANIC (down
    /// twice within 30 s: until up for 10 s). False: the paper's exact behaviour (readings every `report_interval`,
    /// reports only when asked, rounds every `round_period`).
    pub fast_failover: bool,
}

/// Group-communication timeout profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GcsProfile {
    /// Short timeouts for one data centre or a test on loopback.
    #[default]
    Lan,
    /// Longer timeouts for nodes across the Internet.
    Wan,
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Dns {
    /// Embedded server or RFC 2136.
    pub backend: DnsBackend,
    /// Director beside each name server, or direct from the master.
    pub mode: DnsMode,
    /// TTL of the `www.<area zone>` records. Default 30 s, at least 1 s.
    pub ttl: Duration,
    /// Where an embedded name server keeps each area's last answer
    /// (`<state_dir>/<area>.state`), so it serves it after a restart before any
    /// Controller is heard from. Default `/var/lib/walrus/dns`.
    pub state_dir: PathBuf,
    /// Source steering of the embedded name servers (`[[dns.steering]]`): resolvers whose
    /// address is in `source` get `www.<site>` as a CNAME to the zone of `area`, whichever
    /// area server they ask (`walrus_actors::director::steering`). Empty by default: the
    /// paper's §7.2 answer (own area).
    pub steering: Vec<AreaSteerRule>,
    /// Learned steering of the embedded name servers (`[dns.learned]`, `enabled = true`):
    /// each area's server measures its round trip to the resolvers that query it, the areas
    /// share what they measured over the `Steering` group, and `www.<site>` points at the
    /// nearest area's zone (`walrus_actors::director::learned`). `None` (the default): off.
    /// The `[[dns.steering]]` rules still come first.
    pub learned: Option<walrus_actors::director::learned::LearnedConfig>,
}

/// One source-steering rule (walrus-actors' type: `[[dns.steering]]` deserializes
/// straight into it and it checks its own prefix).
pub use walrus_actors::director::AreaSteerRule;

/// TLS material of the group-communication layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// Directory holding `<node>.pem` and `<node>.key` for each node.
    pub dir: PathBuf,
}

/// One area.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    /// The area's own zone, e.g. `area-eu.example.com`.
    pub zone: String,
    /// The area's authoritative name server (where its clients' resolvers ask).
    pub name_server: SocketAddr,
    /// The cluster in the same place.
    pub home_cluster: ClusterName,
    /// TSIG key file (BIND `key` statement format), for the RFC 2136 backend.
    pub tsig_key_file: Option<PathBuf>,
    /// The addresses published for the area's name server (`ns.<area zone>` A/AAAA
    /// records), when resolvers reach it at other addresses than `name_server` (NAT, a
    /// relay, anycast). Default: `name_server`'s address.
    pub ns_addresses: Vec<IpAddr>,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Its servers.
    pub servers: BTreeMap<ServerName, Server>,
}

/// One web server.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Addresses handed out in DNS answers.
    pub addresses: Vec<IpAddr>,
    /// How its Reporter reads its load.
    pub status: Status,
}

/// How a Reporter reads a web server's load.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// nginx, Apache or a plain probe.
    pub kind: StatusKind,
    /// The status page or probe URL.
    pub url: String,
    /// Maximum workers, where the server does not say (nginx, probe). Default 512.
    pub max_workers: u32,
}

/// One host running `walrus-node`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The group-communication (QUIC) address.
    pub address: SocketAddr,
    /// The roles it runs.
    pub roles: BTreeSet<Role>,
    /// The web server a Reporter on this node reports on.
    pub server: Option<ServerName>,
    /// The area a Director on this node serves.
    pub area: Option<AreaName>,
    /// Where `/status`, `/metrics` and the dashboard are served, if anywhere.
    pub status_addr: Option<SocketAddr>,
    /// This node's replication directory, instead of `[replicator] root` (for several
    /// nodes on one machine, or hosts laid out differently).
    pub replicator_root: Option<PathBuf>,
    /// rsync method, on a replica: its rsync daemon module (`rsync://host:port/module`,
    /// the module's path being its `replicator_root`); the primary pushes there.
    pub rsync_url: Option<String>,
    /// Member (runs the protocol) or client (attaches to a member).
    pub tier: Tier,
    /// A client's members, in order of preference (its area's first): it attaches to the
    /// first that admits it and fails over to the next. Empty on a member.
    pub attach: Vec<String>,
    /// A member's client listener (UDP, QUIC), on `address`'s IP: clients attach there.
    /// `None`: it serves no clients.
    pub client_port: Option<u16>,
}

impl Node {
    /// Where this member's clients attach, if it serves clients.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_port
            .map(|p| SocketAddr::new(self.address.ip(), p))
    }

    /// True for a group member (not a client).
    pub fn is_member(&self) -> bool {
        self.tier == Tier::Member
    }
}

/// The name node `node` has in the group layer and in its certificate: its own for a
/// member, `client.<node>` for a client.
pub fn gcs_name(node: &str, tier: Tier) -> String {
    match tier {
        Tier::Member => node.to_owned(),
        Tier::Client => format!("{CLIENT_PREFIX}{node}"),
    }
}

// ----------------------------------------------------------------------------------------
// Raw form, as written in the file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: Spanned<String>,
    #[serde(default)]
    timing: Option<Spanned<RawTiming>>,
    #[serde(default)]
    controller: Option<Spanned<ControllerKnobs>>,
    #[serde(default)]
    dns: Option<Spanned<RawDns>>,
    #[serde(default)]
    notify: Option<Spanned<NotifyKnobs>>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    reporter: Option<Spanned<ReporterKnobs>>,
    areas: Spanned<BTreeMap<String, Spanned<RawArea>>>,
    clusters: Spanned<BTreeMap<String, Spanned<RawCluster>>>,
    nodes: Spanned<BTreeMap<String, Spanned<RawNode>>>,
    #[serde(default)]
    replicator: Option<Spanned<ReplicatorKnobs>>,
    #[serde(default)]
    http: Option<Spanned<RawHttp>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    token_file: Option<PathBuf>,
    metrics_open: Option<bool>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    allow_plain_public: Option<bool>,
    #[serde(default)]
    admins: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    #[serde(default, with = "human_duration")]
    round_period: Option<Duration>,
    #[serde(default, with = "human_duration")]
    report_timeout: Option<Duration>,
    #[serde(default, with = "human_duration")]
    report_interval: Option<Duration>,
    #[serde(default)]
    gcs_profile: GcsProfile,
    fast_failover: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    #[serde(default)]
    backend: DnsBackend,
    #[serde(default)]
    mode: DnsMode,
    #[serde(default, with = "human_duration")]
    ttl: Option<Duration>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    steering: Vec<AreaSteerRule>,
    learned: Option<Spanned<LearnedKnobs>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<PathBuf>,
    dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArea {
    zone: String,
    name_server: SocketAddr,
    home_cluster: String,
    tsig_key_file: Option<PathBuf>,
    #[serde(default)]
    ns_addresses: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    servers: BTreeMap<String, Spanned<RawServer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    addresses: Vec<IpAddr>,
    status: StatusKind,
    status_url: String,
    max_workers: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    address: SocketAddr,
    roles: Vec<Role>,
    server: Option<String>,
    area: Option<String>,
    status_addr: Option<SocketAddr>,
    replicator_root: Option<PathBuf>,
    rsync_url: Option<String>,
    #[serde(default)]
    tier: Tier,
    attach: Option<Vec<String>>,
    client_port: Option<u16>,
}

/// Durations written as human strings ("500ms", "30s", "5m").
mod human_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. \"500ms\", \"30s\" or \"5m\""
            ))
        })
    }
}

// ----------------------------------------------------------------------------------------
// Validation.

/// Turns byte offsets into lines and builds errors that name file, line and field.
struct Locator<'a> {
    file: &'a Path,
    source: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error about `field` (a dotted path) found in the table or value at `span`. When
    /// `span` is a table and its text sets the field's last key (`key = ...`), the line of
    /// that key is named, not the table's header.
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let field = field.into();
        let line = span.map(|s| {
            let key = field.rsplit('.').next().unwrap_or_default();
            self.key_line_in(&s, key)
                .unwrap_or_else(|| self.line_of(s.start))
        });
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            field,
            message: message.into(),
        }
    }

    /// The line of `key = ...` inside the table that starts at `span` (up to the next
    /// table header), if there is one.
    fn key_line_in(&self, span: &std::ops::Range<usize>, key: &str) -> Option<usize> {
        if key.is_empty() {
            return None;
        }
        let start = span.start.min(self.source.len());
        let text = self.source.get(start..)?;
        let mut offset = start;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') {
                return None;
            }
            let rest = t
                .strip_prefix(key)
                .or_else(|| t.strip_prefix(&format!("\"{key}\"")));
            if i > 0 && rest.is_some_and(|r| r.trim_start().starts_with('=')) {
                return Some(self.line_of(offset));
            }
            offset += line.len();
        }
        None
    }
}

/// Why a client sending from `client` cannot reach a member at `member`, if it cannot:
/// another address family, or a loopback source towards another host.
fn unreachable_from(client: IpAddr, member: IpAddr) -> Option<&'static str> {
    if client.is_ipv4() != member.is_ipv4() {
        Some("another address family; give the client an address of the members' family")
    } else if client.is_loopback() && !member.is_loopback() {
        Some("a loopback address reaches no other host; give the client its host's address")
    } else {
        None
    }
}

fn known<'k>(keys: impl Iterator<Item = &'k String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() {
        "none are defined".to_owned()
    } else {
        format!("known: {}", list.join(", "))
    }
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The largest group of members measured (issue 24: 3, 5, 7 and 9 nodes at full load).
pub const MEASURED_MEMBERS: usize = 9;

/// The most client nodes measured (issue 24: 9 members and 1,000 clients). A view change
/// of the members carries every client session's group records (376 kB at 1,000 clients,
/// in chunks of at most 1 MiB since December 2026: before, one message, which stopped
/// view changes near 2,800 clients).
pub const MEASURED_CLIENTS: usize = 1000;

impl Config {
    /// What is valid but probably not what the operator wants, one sentence each:
    /// `check-config` prints them and `run` logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .located_warnings
            .iter()
            .map(|w| w.to_string())
            .collect();
        if self.dns.backend == DnsBackend::Rfc2136 && self.dns.mode == DnsMode::Director {
            for (name, area) in &self.areas {
                let directors: Vec<(&String, &Node)> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| {
                        n.roles.contains(&Role::Director) && n.area.as_ref() == Some(name)
                    })
                    .collect();
                match directors[..] {
                    [] => out.push(format!(
                        "area {name}: no Director; only the master's node writes its name server \
                         {}, and only if the area's TSIG key file is on that host",
                        area.name_server
                    )),
                    [(d, n)] if n.address.ip() != area.name_server.ip() => out.push(format!(
                        "area {name}: one Director ({d}, on {}) and its name server on another \
                         host ({}): if {d}'s host is lost, only a master holding the area's TSIG \
                         key writes the area; give the area a second Director",
                        n.address.ip(),
                        area.name_server
                    )),
                    _ => {}
                }
            }
        }
        let members = self.nodes.values().filter(|n| n.is_member()).count();
        if members > MEASURED_MEMBERS {
            out.push(format!(
                "{members} nodes are members of the group-communication layer: measurements \
                 support at most {MEASURED_MEMBERS} members (heartbeats grow with the square of \
                 the members, and every member's crash is a view change for all); make the web \
                 hosts (Reporters, replicas) clients: tier = \"client\" with attach = [its \
                 area's members], and give those members a client_port. Only Controllers and \
                 Directors need to be members"
            ));
        }
        let clients = self.nodes.len() - members;
        if clients > MEASURED_CLIENTS {
            out.push(format!(
                "{clients} nodes are clients of the group-communication layer: measurements \
                 cover at most {MEASURED_CLIENTS} (every client's attach and crash is an \
                 ordered event for all members, and each view change of the members carries \
                 every client's group records, about 376 bytes a client); watch the members' \
                 view-change times and CPU, or split the site into several deployments"
            ));
        }
        for (name, n) in &self.nodes {
            if let [only] = &n.attach[..] {
                out.push(format!(
                    "node {name} is a client of one member ({only}): while {only} is down it \
                     cannot attach anywhere, so its server is silent and counted dead; list a \
                     second member in attach"
                ));
            }
        }
        for (name, area) in &self.areas {
            let port = area.name_server.port();
            if port != 53 {
                out.push(format!(
                    "area {name}: name_server port {port}: resolvers reach an area's name server \
                     through the delegation to ns.{} at {:?}, always on port 53; this works only \
                     for tests that ask it directly, or behind a forward from port 53",
                    area.zone, area.ns_addresses
                ));
            }
        }
        out
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Config::from_toml(path, &source)
    }

    /// Parses and validates `source`, which came from `file` (named in errors).
    pub fn from_toml(file: &Path, source: &str) -> Result<Config, ConfigError> {
        let loc = Locator { file, source };
        let raw: RawConfig = toml::from_str(source).map_err(|e| {
            // toml's message already names the unknown or missing field; keep its first
            // line and add ours.
            let mut message = e.message().trim().to_owned();
            if message == "duplicate key" {
                // Name the key: the span covers it (`site`, or `[timing]`).
                if let Some(key) = e.span().and_then(|r| source.get(r)) {
                    let key = key.trim().trim_matches(|c| c == '[' || c == ']');
                    message = format!("duplicate key `{key}`: it is already set above");
                }
            }
            ConfigError {
                file: file.to_path_buf(),
                line: e.span().map(|r| loc.line_of(r.start)),
                field: String::new(),
                message,
            }
        })?;
        validate(&loc, raw)
    }

    /// The areas and clusters as the Controller sees them.
    pub fn topology(&self) -> Topology {
        Topology {
            areas: self
                .areas
                .iter()
                .map(|(name, area)| {
                    (
                        name.clone(),
                        AreaSpec {
                            home_cluster: area.home_cluster.clone(),
                        },
                    )
                })
                .collect(),
            clusters: self
                .clusters
                .iter()
                .map(|(name, cluster)| {
                    (
                        name.clone(),
                        ClusterSpec {
                            servers: cluster
                                .servers
                                .iter()
                                .map(|(s, server)| (s.clone(), server.addresses.clone()))
                                .collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// This configuration with node `node`'s roles replaced (the `--roles` flag of
    /// `walrus-node run`), checked as the file's roles are: a reporter needs `server`, a
    /// director needs `area`, and the roles may not be empty.
    pub fn with_roles(mut self, node: &str, roles: &[Role]) -> Result<Config, ConfigError> {
        let file = self.file.clone();
        let err = |field: &str, message: &str| ConfigError {
            file: file.clone(),
            line: None,
            field: format!("nodes.{node}.{field}"),
            message: format!("{message} (roles given with --roles)"),
        };
        self.node(node)?;
        let Some(n) = self.nodes.get_mut(node) else {
            return Err(err("roles", "no such node"));
        };
        if roles.is_empty() {
            return Err(err("roles", "a node needs at least one role"));
        }
        let roles: BTreeSet<Role> = roles.iter().copied().collect();
        if roles.contains(&Role::Reporter) && n.server.is_none() {
            return Err(err(
                "server",
                "the `reporter` role needs the web server it reports on",
            ));
        }
        if roles.contains(&Role::Director) && n.area.is_none() {
            return Err(err("area", "the `director` role needs the area it serves"));
        }
        if !n.is_member() && (roles.contains(&Role::Controller) || roles.contains(&Role::Director))
        {
            return Err(err(
                "tier",
                "a node with the `controller` or `director` role must be a member; this node is a client",
            ));
        }
        n.roles = roles;
        Ok(self)
    }

    /// The node called `name`, or an error listing the known ones.
    pub fn node(&self, name: &str) -> Result<&Node, ConfigError> {
        self.nodes.get(name).ok_or_else(|| ConfigError {
            file: self.file.clone(),
            line: None,
            field: "nodes".to_owned(),
            message: format!("there is no node `{name}`; {}", known(self.nodes.keys())),
        })
    }
}

fn validate(loc: &Locator<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let site = raw.site.get_ref().trim_end_matches('.').to_owned();
    if !is_dns_name(&site) {
        return Err(loc.err(
            Some(raw.site.span()),
            "site",
            format!("`{site}` is not a DNS name; write e.g. \"example.com\""),
        ));
    }

    let http = validate_http(loc, raw.http)?;
    let timing = validate_timing(loc, raw.timing)?;
    let controller = knobs_section(loc, "controller", raw.controller)?;
    let dns_span = raw.dns.as_ref().map(|d| d.span());
    let dns = validate_dns(loc, raw.dns)?;
    let notify = knobs_section(loc, "notify", raw.notify)?;
    let reporter = knobs_section(loc, "reporter", raw.reporter)?;
    let tls = Tls {
        ca: raw
            .tls
            .as_ref()
            .and_then(|t| t.ca.clone())
            .unwrap_or_else(|| PathBuf::from("certs/ca.pem")),
        dir: raw
            .tls
            .as_ref()
            .and_then(|t| t.dir.clone())
            .unwrap_or_else(|| PathBuf::from("certs")),
    };

    let clusters = validate_clusters(loc, &raw.clusters)?;
    let cluster_names: Vec<String> = clusters.keys().map(|c| c.0.clone()).collect();
    let areas = validate_areas(loc, &raw.areas, &clusters, &cluster_names, dns.backend)?;
    if let Some((i, rule)) = dns
        .steering
        .iter()
        .enumerate()
        .find(|(_, r)| !areas.contains_key(&r.area))
    {
        return Err(loc.err(
            dns_span,
            format!("dns.steering[{i}].area"),
            format!(
                "`{}` is not an area; {}",
                rule.area.0,
                known(areas.keys().map(|a| &a.0))
            ),
        ));
    }
    let servers: BTreeSet<&ServerName> = clusters.values().flat_map(|c| c.servers.keys()).collect();
    let nodes = validate_nodes(loc, &raw.nodes, &servers, &areas, &http)?;
    let located_warnings = attach_warnings(loc, &raw.nodes, &nodes, &areas, &clusters);

    let replicator = raw
        .replicator
        .map(|r| validate_replicator(loc, r, &nodes))
        .transpose()?;

    Ok(Config {
        file: loc.file.to_path_buf(),
        site,
        timing,
        controller,
        dns,
        notify,
        reporter,
        tls,
        areas,
        clusters,
        nodes,
        replicator,
        http,
        digest: digest_of(loc.source),
        located_warnings,
    })
}

/// The areas a node belongs to: its `area` if it names one, else every area whose home
/// cluster holds its server (none for a node with neither, such as a Controller's host).
fn areas_of<'a>(
    node: &'a Node,
    areas: &'a BTreeMap<AreaName, Area>,
    clusters: &BTreeMap<ClusterName, Cluster>,
) -> BTreeSet<&'a AreaName> {
    if let Some(a) = &node.area {
        return [a].into();
    }
    let Some(server) = &node.server else {
        return BTreeSet::new();
    };
    areas
        .iter()
        .filter(|(_, a)| {
            clusters
                .get(&a.home_cluster)
                .is_some_and(|c| c.servers.contains_key(server))
        })
        .map(|(name, _)| name)
        .collect()
}

/// A client whose first `attach` entry is a member outside the client's area while its
/// own area has members: its reports and pulls cross areas (a WAN link, in production)
/// for as long as that member is up, and its own area's member is only a fall-back.
///
/// A warning, not an error: it can be meant (the area's member is small, or being
/// drained), and the file works as written. What is certainly wrong about an attach list
/// (an unknown node, a client, a member without `client_port`, a name twice, an empty
/// list) is refused by [`validate_nodes`].
fn attach_warnings(
    loc: &Locator<'_>,
    raw: &Spanned<BTreeMap<String, Spanned<RawNode>>>,
    nodes: &BTreeMap<String, Node>,
    areas: &BTreeMap<AreaName, Area>,
    clusters: &BTreeMap<ClusterName, Cluster>,
) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    for (name, n) in nodes.iter().filter(|(_, n)| !n.is_member()) {
        let Some(first) = n.attach.first() else {
            continue;
        };
        let mine = areas_of(n, areas, clusters);
        let theirs = nodes
            .get(first)
            .map(|m| areas_of(m, areas, clusters))
            .unwrap_or_default();
        if mine.is_empty() || !mine.is_disjoint(&theirs) {
            continue;
        }
        let local: Vec<&str> = nodes
            .iter()
            .filter(|(_, m)| m.is_member() && !areas_of(m, areas, clusters).is_disjoint(&mine))
            .map(|(m, _)| m.as_str())
            .collect();
        if local.is_empty() {
            continue;
        }
        let names = |s: &BTreeSet<&AreaName>| {
            s.iter()
                .map(|a| a.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let where_first = if theirs.is_empty() {
            "in no area".to_owned()
        } else {
            format!("in area {}", names(&theirs))
        };
        let span = raw.get_ref().get(name).map(|s| s.span());
        out.push(ConfigWarning(loc.err(
            span,
            format!("nodes.{name}.attach"),
            format!(
                "client `{name}` is in area {} but attaches first to `{first}`, {where_first}, \
                 while its own area has the member{} {}: its reports and replica pulls cross \
                 areas as long as `{first}` is up; list {} first (with client_port) unless \
                 this is meant",
                names(&mine),
                if local.len() == 1 { "" } else { "s" },
                local.join(", "),
                local.join(" or "),
            ),
        )));
    }
    out
}

/// `[replicator]`: its ranges are walrus-actors' ([`ReplicatorKnobs::validate`]); here the
/// checks that need the node table: `primary` is a node with the replicator role, and with
/// the rsync method every replica names its rsync daemon.
fn validate_replicator(
    loc: &Locator<'_>,
    raw: Spanned<ReplicatorKnobs>,
    nodes: &BTreeMap<String, Node>,
) -> Result<ReplicatorKnobs, ConfigError> {
    let span = Some(raw.span());
    let r = raw.into_inner();
    r.validate().map_err(|e| {
        loc.err(
            span.clone(),
            format!("replicator.{}", e.field()),
            e.to_string(),
        )
    })?;
    let primary = r.primary.as_str();
    match nodes.get(primary) {
        None => {
            return Err(loc.err(
                span,
                "replicator.primary",
                format!("`{primary}` is not a node; {}", known(nodes.keys())),
            ))
        }
        Some(node) if !node.roles.contains(&Role::Replicator) => {
            return Err(loc.err(
                span,
                "replicator.primary",
                format!("node `{primary}` does not run the `replicator` role; add it to its roles"),
            ))
        }
        Some(node) if !node.is_member() => {
            return Err(loc.err(
                span,
                "replicator.primary",
                format!(
                    "the primary `{primary}` is a client: it must be a member (replicas and \
                     Controllers take a generation only from the primary's own node, and a \
                     client's messages come through the member it attaches to)"
                ),
            ))
        }
        Some(_) => {}
    }
    let quic = r.method == ReplicationMethod::Walrus && r.transport == TransferTransport::Quic;
    if let Some((name, _)) = nodes
        .iter()
        .find(|(_, n)| !n.is_member() && n.roles.contains(&Role::Replicator))
        .filter(|_| r.method == ReplicationMethod::Rsync || quic)
    {
        return Err(loc.err(
            span,
            format!("nodes.{name}.tier"),
            format!(
                "replica `{name}` is a client: a client has no QUIC streams to the primary and \
                 the rsync primary finds its replicas by their own group sessions; set \
                 [replicator] method = \"walrus\" and transport = \"tls-tcp\" (the replica \
                 pulls over TLS/TCP with its client certificate), or make `{name}` a member"
            ),
        ));
    }
    if r.method == ReplicationMethod::Rsync {
        let missing = nodes.iter().find(|(name, n)| {
            name.as_str() != primary
                && n.roles.contains(&Role::Replicator)
                && !n
                    .rsync_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("rsync://"))
        });
        if let Some((name, _)) = missing {
            return Err(loc.err(
                span,
                format!("nodes.{name}.rsync_url"),
                format!(
                    "replicator.method = \"rsync\": replica `{name}` needs rsync_url = \"rsync://HOST:PORT/MODULE\" (its rsync daemon's module, whose path is its replicator root)"
                ),
            ));
        }
    }
    Ok(r)
}

fn validate_http(loc: &Locator<'_>, raw: Option<Spanned<RawHttp>>) -> Result<Http, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Http {
            metrics_open: true,
            ..Http::default()
        });
    };
    let span = Some(raw.span());
    let r = raw.into_inner();
    let tls = match (r.tls.as_deref(), r.tls_cert, r.tls_key) {
        (None | Some("off"), None, None) => HttpTls::Off,
        (Some("cluster"), None, None) => HttpTls::Cluster,
        (Some("files"), Some(cert), Some(key)) => HttpTls::Files { cert, key },
        (Some("files"), _, _) => {
            return Err(loc.err(
                span,
                "http.tls",
                "tls = \"files\" needs both tls_cert and tls_key (PEM files)",
            ))
        }
        (None | Some("off") | Some("cluster"), _, _) => {
            return Err(loc.err(
                span,
                "http.tls_cert",
                "tls_cert and tls_key are used only with tls = \"files\"",
            ))
        }
        (Some(other), _, _) => {
            return Err(loc.err(
                span,
                "http.tls",
                format!(
                    "`{other}` is not a choice: \"off\" (plain HTTP), \"cluster\" (the node's \
                     certificate from [tls] dir) or \"files\" (tls_cert and tls_key)"
                ),
            ))
        }
    };
    if !r.admins.is_empty() && tls != HttpTls::Cluster {
        return Err(loc.err(
            span,
            "http.admins",
            "admins authenticate with certificates from the cluster CA: set tls = \"cluster\"",
        ));
    }
    for a in &r.admins {
        if walrus_gcs::transport::certs::check_node_name(&format!("{ADMIN_PREFIX}{a}")).is_err() {
            return Err(loc.err(
                span,
                "http.admins",
                format!(
                    "`{a}` is not a name an admin certificate can carry (letters, digits, '-')"
                ),
            ));
        }
    }
    Ok(Http {
        token_file: r.token_file,
        metrics_open: r.metrics_open.unwrap_or(true),
        tls,
        allow_plain_public: r.allow_plain_public.unwrap_or(false),
        admins: r.admins,
    })
}

/// FNV-1a 64 of `text`, as 16 hex digits: tells two files apart, nothing more (not a
/// security property: the nodes already trust each other's certificates).
fn digest_of(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn validate_timing(
    loc: &Locator<'_>,
    raw: Option<Spanned<RawTiming>>,
) -> Result<Timing, ConfigError> {
    let span = raw.as_ref().map(|r| r.span());
    let raw = raw.map(Spanned::into_inner).unwrap_or_default();
    // The `wan` profile's defaults (issue 18, docs/wan): across links of 20-150 ms one
    // way, a round's last report arrives after 0.36 s (median) to 0.75 s (max) at 1 %
    // loss and 0.83 s to 1.42 s at 3 %, so the LAN's 400 ms timeout counted live servers
    // dead and moved their areas; 3 s rounds with a 2.25 s timeout leave 1.6 times the
    // worst case seen at 3 % loss.
    let wan = raw.gcs_profile == GcsProfile::Wan;
    let round_period = raw.round_period.unwrap_or(if wan {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(1)
    });
    if round_period < Duration::from_millis(100) || round_period > Duration::from_secs(3600) {
        return Err(loc.err(
            span,
            "timing.round_period",
            format!("{round_period:?} is out of range; expected 100ms to 1h"),
        ));
    }
    let report_timeout = raw.report_timeout.unwrap_or(if wan {
        round_period * 3 / 4
    } else {
        round_period * 2 / 5
    });
    if report_timeout.is_zero() || report_timeout >= round_period {
        return Err(loc.err(
            span,
            "timing.report_timeout",
            format!(
                "{report_timeout:?} must be above zero and below round_period ({round_period:?})"
            ),
        ));
    }
    let report_interval = raw.report_interval.unwrap_or(Duration::from_secs(1));
    if report_interval < Duration::from_millis(50) {
        return Err(loc.err(
            span,
            "timing.report_interval",
            format!("{report_interval:?} is too short; expected at least 50ms"),
        ));
    }
    Ok(Timing {
        round_period,
        report_timeout,
        report_interval,
        gcs_profile: raw.gcs_profile,
        fast_failover: raw.fast_failover.unwrap_or(true),
    })
}

/// A knobs section that deserializes straight into its walrus-actors type (`[controller]`,
/// `[reporter]`, `[notify]`): absent means the type's defaults; the type's own `validate()`
/// holds the ranges, and the file gives its error a place (file:line:`section.field`).
trait KnobsSection: Default {
    /// The type's own range check: the field at fault and why.
    fn check(&self) -> Result<(), (&'static str, String)>;
}

impl KnobsSection for ControllerKnobs {
    fn check(&self) -> Result<(), (&'static str, String)> {
        self.validate().map_err(|e| (e.field(), e.to_string()))
    }
}

impl KnobsSection for ReporterKnobs {
    fn check(&self) -> Result<(), (&'static str, String)> {
        self.validate().map_err(|e| (e.field(), e.to_string()))
    }
}

impl KnobsSection for NotifyKnobs {
    fn check(&self) -> Result<(), (&'static str, String)> {
        self.validate().map_err(|e| (e.field(), e.to_string()))
    }
}

/// Section `section` of the file, read by [`KnobsSection`].
fn knobs_section<K: KnobsSection>(
    loc: &Locator<'_>,
    section: &str,
    raw: Option<Spanned<K>>,
) -> Result<K, ConfigError> {
    let span = raw.as_ref().map(|r| r.span());
    let knobs = raw.map(Spanned::into_inner).unwrap_or_default();
    knobs
        .check()
        .map_err(|(field, why)| loc.err(span, format!("{section}.{field}"), why))?;
    Ok(knobs)
}

fn validate_dns(loc: &Locator<'_>, raw: Option<Spanned<RawDns>>) -> Result<Dns, ConfigError> {
    let span = raw.as_ref().map(|r| r.span());
    let raw = raw.map(Spanned::into_inner).unwrap_or_default();
    let ttl = raw.ttl.unwrap_or(Duration::from_secs(30));
    if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
        return Err(loc.err(
            span,
            "dns.ttl",
            format!("{ttl:?} is not allowed; expected whole seconds, at least 1s"),
        ));
    }
    if raw.mode == DnsMode::Direct && raw.backend == DnsBackend::Embedded {
        return Err(loc.err(
            span,
            "dns.mode",
            "\"direct\" needs backend = \"rfc2136\": the master cannot write another host's embedded server; use mode = \"director\"",
        ));
    }
    if !raw.steering.is_empty() && raw.backend != DnsBackend::Embedded {
        return Err(loc.err(
            span.clone(),
            "dns.steering",
            "source steering needs backend = \"embedded\" (the answer depends on the query's source, which an RFC 2136 update cannot express)",
        ));
    }
    let mut steering = Vec::new();
    for (i, rule) in raw.steering.into_iter().enumerate() {
        let rule = rule.validate().map_err(|e| {
            loc.err(
                span.clone(),
                format!("dns.steering[{i}].{}", e.field()),
                e.to_string(),
            )
        })?;
        steering.push(rule);
    }
    let learned = validate_learned(loc, raw.learned, raw.backend)?;
    Ok(Dns {
        backend: raw.backend,
        mode: raw.mode,
        ttl,
        state_dir: raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/walrus/dns")),
        steering,
        learned,
    })
}

fn validate_learned(
    loc: &Locator<'_>,
    raw: Option<Spanned<LearnedKnobs>>,
    backend: DnsBackend,
) -> Result<Option<walrus_actors::director::learned::LearnedConfig>, ConfigError> {
    let span = raw.as_ref().map(|r| r.span());
    let knobs = raw.map(Spanned::into_inner).unwrap_or_default();
    if !knobs.enabled {
        return Ok(None);
    }
    if backend != DnsBackend::Embedded {
        return Err(loc.err(
            span,
            "dns.learned.enabled",
            "learned steering needs backend = \"embedded\" (the embedded name server measures and answers by the query's source)",
        ));
    }
    // The ranges are walrus-actors' (`LearnedKnobs::validate`); the file gives the place.
    knobs
        .validate()
        .map_err(|e| loc.err(span, format!("dns.learned.{}", e.field()), e.to_string()))?;
    Ok(knobs.config())
}

fn validate_clusters(
    loc: &Locator<'_>,
    raw: &Spanned<BTreeMap<String, Spanned<RawCluster>>>,
) -> Result<BTreeMap<ClusterName, Cluster>, ConfigError> {
    if raw.get_ref().is_empty() {
        return Err(loc.err(
            Some(raw.span()),
            "clusters",
            "no cluster is defined; add e.g. [clusters.c1.servers.web1]",
        ));
    }
    let mut clusters = BTreeMap::new();
    let mut seen_servers: BTreeMap<String, String> = BTreeMap::new();
    for (name, cluster) in raw.get_ref() {
        let field = format!("clusters.{name}");
        if cluster.get_ref().servers.is_empty() {
            return Err(loc.err(
                Some(cluster.span()),
                format!("{field}.servers"),
                "a cluster needs at least one server",
            ));
        }
        let mut servers = BTreeMap::new();
        for (server_name, server) in &cluster.get_ref().servers {
            let sfield = format!("{field}.servers.{server_name}");
            if let Some(other) = seen_servers.insert(server_name.clone(), name.clone()) {
                return Err(loc.err(
                    Some(server.span()),
                    sfield,
                    format!("server names must be unique across the site; `{server_name}` is also in cluster `{other}`"),
                ));
            }
            let s = server.get_ref();
            if s.addresses.is_empty() {
                return Err(loc.err(
                    Some(server.span()),
                    format!("{sfield}.addresses"),
                    "a server needs at least one address to hand out",
                ));
            }
            if !(s.status_url.starts_with("http://") || s.status_url.starts_with("https://")) {
                return Err(loc.err(
                    Some(server.span()),
                    format!("{sfield}.status_url"),
                    format!("`{}` is not an http:// or https:// URL", s.status_url),
                ));
            }
            servers.insert(
                ServerName(server_name.clone()),
                Server {
                    addresses: s.addresses.clone(),
                    status: Status {
                        kind: s.status,
                        url: s.status_url.clone(),
                        max_workers: s.max_workers.unwrap_or(512),
                    },
                },
            );
        }
        clusters.insert(ClusterName(name.clone()), Cluster { servers });
    }
    Ok(clusters)
}

fn validate_areas(
    loc: &Locator<'_>,
    raw: &Spanned<BTreeMap<String, Spanned<RawArea>>>,
    clusters: &BTreeMap<ClusterName, Cluster>,
    cluster_names: &[String],
    backend: DnsBackend,
) -> Result<BTreeMap<AreaName, Area>, ConfigError> {
    if raw.get_ref().is_empty() {
        return Err(loc.err(
            Some(raw.span()),
            "areas",
            "no area is defined; add e.g. [areas.eu]",
        ));
    }
    let mut areas = BTreeMap::new();
    for (name, area) in raw.get_ref() {
        let field = format!("areas.{name}");
        let a = area.get_ref();
        let home = ClusterName(a.home_cluster.clone());
        if !clusters.contains_key(&home) {
            return Err(loc.err(
                Some(area.span()),
                format!("{field}.home_cluster"),
                format!(
                    "`{}` is not a cluster; {}",
                    a.home_cluster,
                    known(cluster_names.iter())
                ),
            ));
        }
        let zone = a.zone.trim_end_matches('.').to_owned();
        if !is_dns_name(&zone) {
            return Err(loc.err(
                Some(area.span()),
                format!("{field}.zone"),
                format!("`{zone}` is not a DNS name; write e.g. \"area-{name}.example.com\""),
            ));
        }
        if backend == DnsBackend::Rfc2136 && a.tsig_key_file.is_none() {
            return Err(loc.err(
                Some(area.span()),
                format!("{field}.tsig_key_file"),
                "the rfc2136 backend needs a TSIG key file for every area (see `walrus-node dns bind-config`)",
            ));
        }
        areas.insert(
            AreaName(name.clone()),
            Area {
                zone,
                name_server: a.name_server,
                home_cluster: home,
                tsig_key_file: a.tsig_key_file.clone(),
                ns_addresses: if a.ns_addresses.is_empty() {
                    vec![a.name_server.ip()]
                } else {
                    a.ns_addresses.clone()
                },
            },
        );
    }
    // An area zone inside another area's zone would be served by the outer area's server
    // alone (it delegates nothing): the inner area's answer could never be reached.
    for (name, area) in &areas {
        for (other, outer) in &areas {
            let below = area.zone.len() > outer.zone.len()
                && area.zone.ends_with(&format!(".{}", outer.zone));
            if name != other && (below || area.zone == outer.zone) {
                let span = raw.get_ref().get(&name.0).map(|a| a.span());
                return Err(loc.err(
                    span,
                    format!("areas.{name}.zone"),
                    format!(
                        "`{}` is {} area {other}'s zone `{}`; every area needs a zone of its own, \
                         beside the others (e.g. area-{name}.{})",
                        area.zone,
                        if below { "inside" } else { "the same as" },
                        outer.zone,
                        outer
                            .zone
                            .split_once('.')
                            .map(|(_, p)| p)
                            .unwrap_or(&outer.zone)
                    ),
                ));
            }
        }
    }
    Ok(areas)
}

fn validate_nodes(
    loc: &Locator<'_>,
    raw: &Spanned<BTreeMap<String, Spanned<RawNode>>>,
    servers: &BTreeSet<&ServerName>,
    areas: &BTreeMap<AreaName, Area>,
    http: &Http,
) -> Result<BTreeMap<String, Node>, ConfigError> {
    if raw.get_ref().is_empty() {
        return Err(loc.err(
            Some(raw.span()),
            "nodes",
            "no node is defined; add e.g. [nodes.n1]",
        ));
    }
    let mut nodes = BTreeMap::new();
    let mut addresses: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for (name, node) in raw.get_ref() {
        let field = format!("nodes.{name}");
        let n = node.get_ref();
        let span = Some(node.span());
        if name.starts_with(ADMIN_PREFIX) {
            return Err(loc.err(
                span,
                field,
                format!("a node name may not start with `{ADMIN_PREFIX}`: that names admin certificates"),
            ));
        }
        if name.starts_with(CLIENT_PREFIX) {
            return Err(loc.err(
                span,
                field,
                format!(
                    "a node name may not start with `{CLIENT_PREFIX}`: that names client \
                     certificates (a client node `web1` has the certificate `{CLIENT_PREFIX}web1`)"
                ),
            ));
        }
        if walrus_gcs::transport::certs::check_node_name(name).is_err() {
            return Err(loc.err(
                span,
                field,
                "a node name must be a DNS name (letters, digits, '-' and '.'; no '_'): \
                 it is the name in the node's certificate, which peers check",
            ));
        }
        if let Some(other) = addresses.insert(n.address, name.clone()) {
            return Err(loc.err(
                span,
                format!("{field}.address"),
                format!("{} is also the address of node `{other}`", n.address),
            ));
        }
        let roles: BTreeSet<Role> = n.roles.iter().copied().collect();
        if roles.is_empty() {
            return Err(loc.err(
                span,
                format!("{field}.roles"),
                "a node needs at least one role: controller, reporter, replicator, director",
            ));
        }
        let server = match (&n.server, roles.contains(&Role::Reporter)) {
            (Some(s), _) => {
                let s = ServerName(s.clone());
                if !servers.contains(&s) {
                    let names: Vec<String> = servers.iter().map(|s| s.0.clone()).collect();
                    return Err(loc.err(
                        span,
                        format!("{field}.server"),
                        format!(
                            "`{s}` is not a server of any cluster; {}",
                            known(names.iter())
                        ),
                    ));
                }
                Some(s)
            }
            (None, true) => {
                return Err(loc.err(
                    span,
                    format!("{field}.server"),
                    "a node with the `reporter` role must name the web server it reports on",
                ))
            }
            (None, false) => None,
        };
        let area = match (&n.area, roles.contains(&Role::Director)) {
            (Some(a), _) => {
                let a = AreaName(a.clone());
                if !areas.contains_key(&a) {
                    let names: Vec<String> = areas.keys().map(|a| a.0.clone()).collect();
                    return Err(loc.err(
                        span,
                        format!("{field}.area"),
                        format!("`{a}` is not an area; {}", known(names.iter())),
                    ));
                }
                Some(a)
            }
            (None, true) => return Err(loc.err(
                span,
                format!("{field}.area"),
                "a node with the `director` role must name the area whose name server it updates",
            )),
            (None, false) => None,
        };
        match n.tier {
            Tier::Member => {
                if n.attach.is_some() {
                    return Err(loc.err(
                        span,
                        format!("{field}.attach"),
                        "`attach` lists the members a client attaches to; this node is a \
                         member (set tier = \"client\" to make it a client)",
                    ));
                }
                if let Some(port) = n.client_port {
                    let at = SocketAddr::new(n.address.ip(), port);
                    if port == n.address.port() {
                        return Err(loc.err(
                            span,
                            format!("{field}.client_port"),
                            format!("{port} is also the node's group port (address); give clients another port"),
                        ));
                    }
                    if let Some(other) = addresses.insert(at, name.clone()) {
                        return Err(loc.err(
                            span,
                            format!("{field}.client_port"),
                            format!("{at} is also an address of node `{other}`"),
                        ));
                    }
                }
            }
            Tier::Client => {
                if let Some(role) = roles
                    .iter()
                    .find(|r| matches!(r, Role::Controller | Role::Director))
                {
                    return Err(loc.err(
                        span,
                        format!("{field}.tier"),
                        format!(
                            "a node with the `{role}` role must be a member (tier = \"member\"): \
                             Controllers elect their master and Directors their writer from \
                             their groups' membership, which names the member a client attaches \
                             through. Clients are for the web hosts: Reporters and replicas"
                        ),
                    ));
                }
                if n.client_port.is_some() {
                    return Err(loc.err(
                        span,
                        format!("{field}.client_port"),
                        "a client serves no clients: `client_port` is for members",
                    ));
                }
                if n.attach.as_ref().is_none_or(Vec::is_empty) {
                    return Err(loc.err(
                        span,
                        format!("{field}.attach"),
                        "a client needs the members it may attach to, in order of preference \
                         (its area's first), e.g. attach = [\"eu-a\", \"us-a\"]",
                    ));
                }
            }
        }
        if let Some(addr) = n.status_addr {
            if http.is_open_on(addr) && !http.allow_plain_public {
                return Err(loc.err(
                    span,
                    format!("{field}.status_addr"),
                    format!(
                        "{addr} is not a loopback address: /status and the dashboard would be \
                         open to anyone who reaches it. Set [http] tls (\"cluster\" or \"files\") \
                         and token_file, bind it to 127.0.0.1, or set [http] \
                         allow_plain_public = true"
                    ),
                ));
            }
        }
        nodes.insert(
            name.clone(),
            Node {
                address: n.address,
                roles,
                server,
                area,
                status_addr: n.status_addr,
                replicator_root: n.replicator_root.clone(),
                rsync_url: n.rsync_url.clone(),
                tier: n.tier,
                attach: n.attach.clone().unwrap_or_default(),
                client_port: n.client_port,
            },
        );
    }
    for (name, n) in &nodes {
        let span = raw.get_ref().get(name).map(|s| s.span());
        let field = format!("nodes.{name}.attach");
        let mut seen = BTreeSet::new();
        for m in &n.attach {
            if !seen.insert(m) {
                return Err(loc.err(span, field, format!("`{m}` is listed twice")));
            }
            match nodes.get(m) {
                None => {
                    return Err(loc.err(
                        span,
                        field,
                        format!("`{m}` is not a node; {}", known(nodes.keys())),
                    ))
                }
                Some(target) if !target.is_member() => {
                    return Err(loc.err(
                        span,
                        field,
                        format!("`{m}` is a client: a client attaches to members only"),
                    ))
                }
                Some(target) if target.client_port.is_none() => {
                    return Err(loc.err(
                        span,
                        field,
                        format!(
                            "member `{m}` serves no clients: give it client_port = PORT (its \
                             client listener, on its address's IP)"
                        ),
                    ))
                }
                Some(target) => {
                    if let Some(why) = unreachable_from(n.address.ip(), target.address.ip()) {
                        return Err(loc.err(
                            span,
                            field,
                            format!(
                                "member `{m}` is at {}, and a client sends from its own address \
                                 ({}): {why}",
                                target.address.ip(),
                                n.address.ip()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if !nodes
        .values()
        .any(|n: &Node| n.roles.contains(&Role::Controller))
    {
        return Err(loc.err(
            Some(raw.span()),
            "nodes",
            "no node runs the `controller` role; at least one must (two or more for failover)",
        ));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/walrus.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("walrus.toml"), text)
    }

    /// Issue 18: without timing values, `gcs_profile = "wan"` gets 3 s rounds and a 2.25 s
    /// report timeout; given values win; the LAN keeps 1 s / 400 ms; the deploy grace is
    /// read.
    #[test]
    fn the_wan_profile_has_its_own_timing_defaults() {
        let bare = EXAMPLE
            .replace("round_period = \"1s\"\n", "")
            .replace("report_timeout = \"400ms\"\n", "");
        let lan = parse(&bare).unwrap();
        assert_eq!(lan.timing.round_period, Duration::from_secs(1));
        assert_eq!(lan.timing.report_timeout, Duration::from_millis(400));
        let wan = parse(&bare.replace("gcs_profile = \"lan\"", "gcs_profile = \"wan\"")).unwrap();
        assert_eq!(wan.timing.round_period, Duration::from_secs(3));
        assert_eq!(wan.timing.report_timeout, Duration::from_millis(2250));
        let given =
            parse(&EXAMPLE.replace("gcs_profile = \"lan\"", "gcs_profile = \"wan\"")).unwrap();
        assert_eq!(given.timing.report_timeout, Duration::from_millis(400));
        assert_eq!(lan.controller.generation_grace, Duration::from_secs(600));
        let g = parse(&EXAMPLE.replace("generation_grace = \"10m\"", "generation_grace = \"90s\""))
            .unwrap();
        assert_eq!(g.controller.generation_grace, Duration::from_secs(90));
    }

    #[test]
    fn a_public_status_addr_needs_tls_and_a_token_or_an_explicit_opt_in() {
        let public = EXAMPLE.replacen(
            "status_addr = \"127.0.1.1:9400\"",
            "status_addr = \"0.0.0.0:9400\"",
            1,
        );
        let e = parse(&public).unwrap_err();
        assert_eq!(e.field, "nodes.eu-a.status_addr", "{e}");
        assert!(e.to_string().contains("not a loopback address"), "{e}");
        assert!(e.line.is_some(), "{e}");
        let tls_only = public.replacen("tls = \"off\"", "tls = \"cluster\"", 1);
        assert!(
            parse(&tls_only).is_err(),
            "TLS without a token is still open"
        );
        let both = tls_only.replacen(
            "# token_file = \"/etc/walrus/http-token\"",
            "token_file = \"/etc/walrus/http-token\"",
            1,
        );
        let c = parse(&both).unwrap();
        assert_eq!(c.http.tls, HttpTls::Cluster);
        assert!(c.http.metrics_open);
        let opted = public.replacen("[http]\n", "[http]\nallow_plain_public = true\n", 1);
        assert!(parse(&opted).is_ok());
        let files = EXAMPLE.replacen("tls = \"off\"", "tls = \"files\"", 1);
        let e = parse(&files).unwrap_err();
        assert!(e.to_string().contains("tls_cert and tls_key"), "{e}");
        let typo = EXAMPLE.replacen("tls = \"off\"", "tls = \"on\"", 1);
        assert!(parse(&typo)
            .unwrap_err()
            .to_string()
            .contains("\"cluster\""));
    }

    #[test]
    fn webhook_headers_and_body_templates_are_checked_with_their_line() {
        let with = |extra: &str| {
            EXAMPLE.replacen(
                "dead_after = \"5m\"",
                &format!("dead_after = \"5m\"\nwebhook = \"https://h.example/x\"\n{extra}"),
                1,
            )
        };
        let ok = parse(&with(
            "webhook_headers = { Authorization = \"Bearer t\" }\nwebhook_body = '{\"text\": \"{summary}\"}'",
        ))
        .unwrap();
        assert_eq!(
            ok.notify.webhook_headers,
            [("Authorization".to_owned(), "Bearer t".to_owned())]
        );
        let e = parse(&with("webhook_body = '{\"text\": \"{sumary}\"}'")).unwrap_err();
        assert_eq!(e.field, "notify.webhook_body", "{e}");
        assert!(e.to_string().contains("sumary") && e.line.is_some(), "{e}");
        let e = parse(&with("webhook_headers = { \"Bad Name\" = \"x\" }")).unwrap_err();
        assert_eq!(e.field, "notify.webhook_headers", "{e}");
        let e = parse(&EXAMPLE.replacen(
            "dead_after = \"5m\"",
            "dead_after = \"5m\"\nwebhook_body = \"{json}\"",
            1,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("need a webhook URL"), "{e}");
    }

    #[test]
    fn the_digest_tells_files_apart_and_is_stable() {
        let a = parse(EXAMPLE).unwrap().digest;
        assert_eq!(a.len(), 16);
        assert_eq!(a, parse(EXAMPLE).unwrap().digest);
        let edited = format!("# edited\n{EXAMPLE}");
        assert_ne!(a, parse(&edited).unwrap().digest);
        // FNV-1a 64 of the empty string: the offset basis (a fixed, published value).
        assert_eq!(digest_of(""), "cbf29ce484222325");
    }

    #[test]
    fn the_annotated_example_is_valid() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.areas.len(), 3);
        assert_eq!(config.clusters.len(), 3);
        assert_eq!(config.timing.round_period, Duration::from_secs(1));
        assert_eq!(config.timing.report_timeout, Duration::from_millis(400));
        assert!(config.timing.fast_failover);
        let off = parse(&EXAMPLE.replace("fast_failover = true", "fast_failover = false")).unwrap();
        assert!(!off.timing.fast_failover);
        let err = parse(&EXAMPLE.replace("fast_failover = true", "fast_failover = \"yes\""))
            .unwrap_err()
            .to_string();
        let line = EXAMPLE
            .lines()
            .position(|l| l.starts_with("fast_failover"))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("walrus.toml:{line}")) && err.contains("expected a boolean"),
            "{err}"
        );
        let topology = config.topology();
        assert_eq!(
            topology.areas[&AreaName::from("eu")].home_cluster,
            ClusterName::from("c-eu")
        );
    }

    #[test]
    fn an_unknown_home_cluster_names_file_line_field_and_the_known_ones() {
        let text = EXAMPLE.replace("home_cluster = \"c-eu\"", "home_cluster = \"c9\"");
        let err = parse(&text).unwrap_err();
        // The field's own line, not its table's.
        let line = text
            .lines()
            .position(|l| l.starts_with("home_cluster = \"c9\""))
            .unwrap()
            + 1;
        assert_eq!(err.line, Some(line));
        assert_eq!(err.field, "areas.eu.home_cluster");
        assert_eq!(
            err.to_string(),
            format!("walrus.toml:{line}: `areas.eu.home_cluster`: `c9` is not a cluster; known: c-asia, c-eu, c-us")
        );
    }

    #[test]
    fn an_area_zone_inside_another_areas_zone_is_refused() {
        let text = EXAMPLE.replace(
            "zone = \"area-us.example.com\"",
            "zone = \"us.area-eu.example.com\"",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "areas.us.zone");
        assert!(err.message.contains("inside area eu's zone"), "{err}");
        let text = EXAMPLE.replace(
            "zone = \"area-us.example.com\"",
            "zone = \"area-eu.example.com\"",
        );
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("the same as"), "{err}");
    }

    #[test]
    fn an_area_with_a_single_director_on_another_host_is_a_warning_with_rfc2136() {
        let text = EXAMPLE
            .replace("backend = \"embedded\"", "backend = \"rfc2136\"")
            .replace(
                "home_cluster = \"c-eu\"",
                "home_cluster = \"c-eu\"\ntsig_key_file = \"/k/eu.key\"",
            )
            .replace(
                "home_cluster = \"c-us\"",
                "home_cluster = \"c-us\"\ntsig_key_file = \"/k/us.key\"",
            )
            .replace(
                "home_cluster = \"c-asia\"",
                "home_cluster = \"c-asia\"\ntsig_key_file = \"/k/asia.key\"",
            );
        let w = parse(&text).unwrap().warnings();
        assert_eq!(
            w.iter().filter(|w| w.contains("one Director")).count(),
            3,
            "{w:?}"
        );
        assert!(w[0].contains("give the area a second Director"), "{w:?}");
        // A second Director for eu silences eu's.
        let two = text.replace(
            "[nodes.eu-b]\naddress = \"127.0.1.2:7400\"\nroles = [\"reporter\", \"replicator\"]",
            "[nodes.eu-b]\naddress = \"127.0.1.2:7400\"\nroles = [\"reporter\", \"replicator\", \"director\"]\narea = \"eu\"",
        );
        assert_ne!(two, text);
        let w = parse(&two).unwrap().warnings();
        assert!(!w.iter().any(|w| w.starts_with("area eu:")), "{w:?}");
        // The embedded backend: the Director is its area's name server.
        assert!(parse(EXAMPLE).unwrap().warnings().is_empty());
    }

    #[test]
    fn more_members_than_measured_is_a_warning() {
        let mut config = parse(EXAMPLE).unwrap();
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        let node = config.nodes.values().next().unwrap().clone();
        for i in config.nodes.len()..=MEASURED_MEMBERS {
            config.nodes.insert(format!("extra{i}"), node.clone());
        }
        let w = config.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("at most 9 members"), "{w:?}");
        assert!(w[0].contains("web hosts"), "{w:?}");
        // The same nodes with the extra ones as clients: no warning (only members count).
        for n in config.nodes.values_mut().skip(MEASURED_MEMBERS) {
            n.tier = Tier::Client;
        }
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }

    #[test]
    fn more_clients_than_measured_is_a_warning() {
        let mut config = parse(EXAMPLE).unwrap();
        let mut client = config.nodes.values().next().unwrap().clone();
        client.tier = Tier::Client;
        let members = config.nodes.len();
        for i in 0..MEASURED_CLIENTS {
            config.nodes.insert(format!("c{i}"), client.clone());
        }
        assert_eq!(config.nodes.len() - members, MEASURED_CLIENTS);
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        config.nodes.insert("one-more".into(), client);
        let w = config.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("1001 nodes are clients"), "{w:?}");
    }

    #[test]
    fn a_name_server_off_port_53_is_a_warning() {
        let config = parse(EXAMPLE).unwrap();
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
        let config = parse(&EXAMPLE.replace("127.0.0.12:53", "127.0.0.12:5353")).unwrap();
        let w = config.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("area us: name_server port 5353"), "{w:?}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let text = EXAMPLE.replace("[timing]", "[timing]\nround_perod = \"2s\"");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("round_perod"), "{err}");
        let line = EXAMPLE.lines().position(|l| l == "[timing]").unwrap() + 2;
        assert_eq!(err.line, Some(line), "{err}");
    }

    #[test]
    fn bad_durations_and_ranges_are_explained() {
        let err = parse(&EXAMPLE.replace("round_period = \"1s\"", "round_period = \"soon\""))
            .unwrap_err();
        assert!(err.message.contains("not a duration"), "{err}");
        let err = parse(&EXAMPLE.replace("threshold = 0.8", "threshold = -1.0")).unwrap_err();
        assert_eq!(err.field, "controller.threshold");
        // A knob walrus-actors' ControllerKnobs owns (config parsing does not name it).
        let err =
            parse(&EXAMPLE.replace("return_margin = 0.1", "return_margin = 0.9")).unwrap_err();
        assert_eq!(err.field, "controller.return_margin");
        assert!(err.line.is_some(), "{err}");
        let c = parse(&EXAMPLE.replace("return_margin = 0.1", "return_margin = 0.3")).unwrap();
        assert_eq!(c.controller.return_margin, 0.3);
        let err = parse(&EXAMPLE.replace("ttl = \"30s\"", "ttl = \"500ms\"")).unwrap_err();
        assert_eq!(err.field, "dns.ttl");
    }

    #[test]
    fn max_generation_lag_and_replicator_root_are_read_and_bad_ones_named() {
        let c =
            parse(&EXAMPLE.replace("max_generation_lag = 1", "max_generation_lag = 3")).unwrap();
        assert_eq!(c.controller.max_generation_lag, 3);
        let line = EXAMPLE
            .lines()
            .position(|l| l.starts_with("max_generation_lag"))
            .unwrap()
            + 1;
        let err = parse(&EXAMPLE.replace("max_generation_lag = 1", "max_generation_lag = -1"))
            .unwrap_err();
        assert_eq!(err.line, Some(line), "{err}");
        assert!(err.to_string().starts_with("walrus.toml:"), "{err}");
        let text = EXAMPLE.replace(
            "[nodes.eu-b]\n",
            "[nodes.eu-b]\nreplicator_root = \"/srv/other\"\n",
        );
        let c = parse(&text).unwrap();
        let r = c.replicator.as_ref().unwrap();
        let root_of = |n: &str| r.root_of(c.nodes[n].replicator_root.as_deref());
        assert_eq!(root_of("eu-b"), PathBuf::from("/srv/other"));
        assert_eq!(root_of("eu-a"), r.root);
    }

    #[test]
    fn a_replicator_knob_out_of_range_names_file_line_and_field() {
        // The range is walrus-actors' (`ReplicatorKnobs::validate`); the file gives the place.
        let line = EXAMPLE.lines().position(|l| l == "keep = 2").unwrap() + 1;
        let err = parse(&EXAMPLE.replace("\nkeep = 2\n", "\nkeep = 1000\n")).unwrap_err();
        assert_eq!(
            (err.file.as_path(), err.line, err.field.as_str()),
            (Path::new("walrus.toml"), Some(line), "replicator.keep"),
            "{err}"
        );
        assert!(err.message.contains("at most 100"), "{err}");
        assert!(
            err.to_string().starts_with(&format!("walrus.toml:{line}")),
            "{err}"
        );
        let err =
            parse(&EXAMPLE.replace("root = \"/srv/walrus/site\"", "root = \"\"")).unwrap_err();
        assert_eq!(err.field, "replicator.root", "{err}");
        let err = parse(&EXAMPLE.replace("\nkeep = 2\n", "\nkeeep = 2\n")).unwrap_err();
        assert!(err.message.contains("keeep"), "{err}");
    }

    #[test]
    fn the_transfer_transport_is_quic_unless_the_file_says_tls_tcp() {
        assert_eq!(
            parse(EXAMPLE).unwrap().replicator.unwrap().transport,
            TransferTransport::Quic
        );
        let text = EXAMPLE.replace("transport = \"quic\"", "transport = \"tls-tcp\"");
        let c = parse(&text).unwrap();
        assert_eq!(c.replicator.unwrap().transport, TransferTransport::TlsTcp);
        let text = EXAMPLE.replace("transport = \"quic\"", "transport = \"tcp\"");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("tls-tcp"), "{err}");
    }

    #[test]
    fn the_rsync_method_needs_every_replicas_daemon_url() {
        let text = EXAMPLE.replace("method = \"walrus\"", "method = \"rsync\"");
        let err = parse(&text).unwrap_err();
        assert!(err.field.ends_with(".rsync_url"), "{err}");
        assert!(err.message.contains("rsync://HOST:PORT/MODULE"), "{err}");
        let mut text = text;
        let replicas: Vec<String> = parse(EXAMPLE)
            .unwrap()
            .nodes
            .iter()
            .filter(|(n, node)| *n != "eu-a" && node.roles.contains(&Role::Replicator))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &replicas {
            text = text.replace(
                &format!("[nodes.{n}]\n"),
                &format!("[nodes.{n}]\nrsync_url = \"rsync://127.0.0.1:8873/walrus\"\n"),
            );
        }
        let c = parse(&text).unwrap();
        assert_eq!(c.replicator.unwrap().method, ReplicationMethod::Rsync);
    }

    /// The example with its b hosts (Reporters and replicas) as clients of their area's
    /// member first, and the a hosts serving clients on port 7500.
    fn with_clients(text: &str) -> String {
        let mut t = text
            .replace("transport = \"quic\"", "transport = \"tls-tcp\"")
            .replace(
                "status_addr = \"127.0.1.1:9400\"\n",
                "status_addr = \"127.0.1.1:9400\"\nclient_port = 7500\n",
            )
            .replace(
                "status_addr = \"127.0.2.1:9400\"\n",
                "status_addr = \"127.0.2.1:9400\"\nclient_port = 7500\n",
            );
        for (b, first, second) in [("eu-b", "eu-a", "us-a"), ("us-b", "us-a", "eu-a")] {
            let head = format!("[nodes.{b}]\n");
            t = t.replace(
                &head,
                &format!("{head}tier = \"client\"\nattach = [\"{first}\", \"{second}\"]\n"),
            );
        }
        t
    }

    /// The 1-based line of the first line of `text` that starts with `prefix` after the
    /// line `after`.
    fn line_after(text: &str, after: &str, prefix: &str) -> usize {
        let start = text.lines().position(|l| l == after).unwrap();
        start
            + text
                .lines()
                .skip(start)
                .position(|l| l.starts_with(prefix))
                .unwrap()
            + 1
    }

    #[test]
    fn a_client_attaching_first_outside_its_area_is_a_located_warning() {
        let text = with_clients(EXAMPLE);
        let c = parse(&text).unwrap();
        assert!(c.located_warnings.is_empty(), "{:?}", c.located_warnings);
        // Planted: eu-b (server eu-1's cluster c-eu, area eu) lists us-a first.
        let planted = text.replace(
            "[nodes.eu-b]\ntier = \"client\"\nattach = [\"eu-a\", \"us-a\"]",
            "[nodes.eu-b]\ntier = \"client\"\nattach = [\"us-a\", \"eu-a\"]",
        );
        assert_ne!(planted, text);
        let c = parse(&planted).unwrap();
        let [ConfigWarning(w)] = &c.located_warnings[..] else {
            panic!("{:?}", c.located_warnings)
        };
        assert_eq!(w.file, PathBuf::from("walrus.toml"));
        assert_eq!(w.field, "nodes.eu-b.attach");
        assert_eq!(w.line, Some(line_after(&planted, "[nodes.eu-b]", "attach")));
        assert!(
            w.message
                .contains("in area eu but attaches first to `us-a`, in area us")
                && w.message.contains("the member eu-a"),
            "{w}"
        );
        // It is among the warnings check-config prints, with file and line.
        let line = w.line.unwrap();
        assert!(
            c.warnings()
                .iter()
                .any(|s| s.starts_with(&format!("walrus.toml:{line}: `nodes.eu-b.attach`: "))),
            "{:?}",
            c.warnings()
        );
        // A client whose area has no member to prefer: no warning (asia-b's area has
        // asia-a; make asia-b attach to eu-a while asia-a is the only asia member and
        // see it named, then without any asia member nothing is said).
        let asia = text.replace(
            "[nodes.asia-b]\n",
            "[nodes.asia-b]\ntier = \"client\"\nattach = [\"eu-a\", \"us-a\"]\n",
        );
        let c = parse(&asia).unwrap();
        assert_eq!(c.located_warnings.len(), 1, "{:?}", c.located_warnings);
        assert!(c.located_warnings[0]
            .0
            .message
            .contains("the member asia-a"));
        let alone = asia.replace(
            "[nodes.asia-a]\naddress = \"127.0.3.1:7400\"\nroles = [\"controller\", \"reporter\", \"director\", \"replicator\"]\nserver = \"asia-1\"\narea = \"asia\"\n",
            "[nodes.asia-a]\naddress = \"127.0.3.1:7400\"\nroles = [\"controller\"]\n",
        );
        assert_ne!(alone, asia);
        // asia-a is now a Controller's host in no area: asia has no member, so there is
        // nothing better for asia-b to attach to first.
        let c = parse(&alone).unwrap();
        assert!(c.located_warnings.is_empty(), "{:?}", c.located_warnings);
    }

    #[test]
    fn clients_are_read_with_their_members_in_order() {
        let c = parse(&with_clients(EXAMPLE)).unwrap();
        let b = &c.nodes["eu-b"];
        assert_eq!(b.tier, Tier::Client);
        assert_eq!(b.attach, vec!["eu-a".to_owned(), "us-a".to_owned()]);
        assert_eq!(b.client_port, None);
        let a = &c.nodes["eu-a"];
        assert!(a.is_member());
        assert_eq!(a.client_addr(), Some("127.0.1.1:7500".parse().unwrap()));
        assert_eq!(c.nodes["asia-a"].client_addr(), None);
        assert_eq!(gcs_name("eu-b", Tier::Client), "client.eu-b");
        assert_eq!(gcs_name("eu-a", Tier::Member), "eu-a");
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // One member only: valid, with a warning (no fail-over).
        let one = parse(
            &with_clients(EXAMPLE)
                .replace("\nattach = [\"eu-a\", \"us-a\"]", "\nattach = [\"eu-a\"]"),
        )
        .unwrap();
        let w = one.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("eu-b is a client of one member (eu-a)"),
            "{w:?}"
        );
    }

    #[test]
    fn a_controller_or_director_must_be_a_member_and_the_error_says_so() {
        let text = EXAMPLE.replace(
            "[nodes.eu-a]\n",
            "[nodes.eu-a]\ntier = \"client\"\nattach = [\"us-a\"]\n",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "nodes.eu-a.tier");
        assert_eq!(err.line, Some(line_after(&text, "[nodes.eu-a]", "tier")));
        assert!(
            err.message.contains("`controller` role must be a member"),
            "{err}"
        );
        // --roles is checked the same way.
        let c = parse(&with_clients(EXAMPLE)).unwrap();
        let err = c.with_roles("eu-b", &[Role::Controller]).unwrap_err();
        assert!(err.message.contains("must be a member"), "{err}");
    }

    #[test]
    fn a_clients_attach_list_is_checked_with_file_line_and_field() {
        let text = with_clients(EXAMPLE);
        let cases = [
            (
                "\nattach = [\"eu-a\", \"us-a\"]",
                "\nattach = [\"eu-a\", \"nope\"]",
                "`nope` is not a node",
            ),
            (
                "\nattach = [\"eu-a\", \"us-a\"]",
                "\nattach = [\"eu-a\", \"asia-a\"]",
                "serves no clients: give it client_port",
            ),
            (
                "\nattach = [\"eu-a\", \"us-a\"]",
                "\nattach = [\"eu-a\", \"us-b\"]",
                "is a client",
            ),
            (
                "\nattach = [\"eu-a\", \"us-a\"]",
                "\nattach = [\"eu-a\", \"eu-a\"]",
                "listed twice",
            ),
            (
                "\nattach = [\"eu-a\", \"us-a\"]",
                "\nattach = []",
                "needs the members it may attach to",
            ),
        ];
        for (from, to, says) in cases {
            let t = text.replacen(from, to, 1);
            let err = parse(&t).unwrap_err();
            assert_eq!(err.field, "nodes.eu-b.attach", "{err}");
            assert!(err.message.contains(says), "{says}: {err}");
            assert!(err.to_string().starts_with("walrus.toml:"), "{err}");
            assert!(err.line.is_some(), "{err}");
        }
        // A client whose address cannot reach a member: another family, or a loopback
        // source towards another host (a client sends from its own address).
        let v6 = text.replace("address = \"127.0.1.2:7400\"", "address = \"[::1]:7400\"");
        let err = parse(&v6).unwrap_err();
        assert_eq!(err.field, "nodes.eu-b.attach", "{err}");
        assert!(err.message.contains("another address family"), "{err}");
        let remote = text.replace(
            "address = \"127.0.1.1:7400\"",
            "address = \"192.0.2.1:7400\"",
        );
        let err = parse(&remote).unwrap_err();
        assert_eq!(err.field, "nodes.eu-b.attach", "{err}");
        assert_eq!(
            err.message,
            "member `eu-a` is at 192.0.2.1, and a client sends from its own address \
             (127.0.1.2): a loopback address reaches no other host; give the client its \
             host's address"
        );
        // A member with an attach list, a client with a client port.
        let err = parse(&text.replace("[nodes.asia-a]\n", "[nodes.asia-a]\nattach = [\"eu-a\"]\n"))
            .unwrap_err();
        assert_eq!(err.field, "nodes.asia-a.attach");
        let err = parse(&text.replace("[nodes.eu-b]\n", "[nodes.eu-b]\nclient_port = 7600\n"))
            .unwrap_err();
        assert_eq!(err.field, "nodes.eu-b.client_port");
        // A client port that is the group port.
        let err =
            parse(&text.replacen("\nclient_port = 7500", "\nclient_port = 7400", 1)).unwrap_err();
        assert_eq!(err.field, "nodes.eu-a.client_port");
        // A node named like a client certificate.
        let err = parse(&text.replace("[nodes.asia-b]", "[nodes.\"client.asia-b\"]")).unwrap_err();
        assert!(err.message.contains("client certificates"), "{err}");
        // An unknown tier.
        let err =
            parse(&text.replacen("\ntier = \"client\"", "\ntier = \"guest\"", 1)).unwrap_err();
        assert!(err.message.contains("guest"), "{err}");
    }

    #[test]
    fn a_client_replica_needs_tls_tcp_and_the_primary_a_member() {
        let text = with_clients(EXAMPLE);
        let err =
            parse(&text.replace("transport = \"tls-tcp\"", "transport = \"quic\"")).unwrap_err();
        assert_eq!(err.field, "nodes.eu-b.tier");
        assert!(err.message.contains("tls-tcp"), "{err}");
        let err = parse(&text.replace("primary = \"eu-a\"", "primary = \"eu-b\"")).unwrap_err();
        assert_eq!(err.field, "replicator.primary");
        assert!(err.message.contains("must be a member"), "{err}");
    }

    #[test]
    fn a_reporter_must_name_a_known_server() {
        let err = parse(&EXAMPLE.replace("server = \"eu-1\"", "server = \"eu-9\"")).unwrap_err();
        assert_eq!(err.field, "nodes.eu-a.server");
        assert!(err.message.contains("known: asia-1"), "{err}");
    }

    #[test]
    fn duplicate_server_names_are_refused() {
        let err = parse(&EXAMPLE.replace(
            "[clusters.c-us.servers.us-2]",
            "[clusters.c-us.servers.eu-1]",
        ))
        .unwrap_err();
        assert!(err.message.contains("unique"), "{err}");
    }

    #[test]
    fn rfc2136_needs_a_tsig_key_per_area() {
        let text = EXAMPLE.replace("backend = \"embedded\"", "backend = \"rfc2136\"");
        let err = parse(&text).unwrap_err();
        assert!(err.field.ends_with("tsig_key_file"), "{err}");
    }

    #[test]
    fn state_dir_and_bypass_file_have_defaults_and_can_be_set() {
        let bare = EXAMPLE
            .lines()
            .filter(|l| {
                !l.starts_with("state_dir")
                    && !l.starts_with("bypass_file")
                    && !l.starts_with("panic_after")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&bare).unwrap();
        assert_eq!(config.dns.state_dir, PathBuf::from("/var/lib/walrus/dns"));
        assert_eq!(
            config.reporter.bypass_file,
            PathBuf::from("/var/lib/walrus/bypass")
        );
        assert_eq!(config.reporter.panic_after, 3);
        let text = EXAMPLE
            .replace(
                "state_dir = \"/var/lib/walrus/dns\"",
                "state_dir = \"/tmp/w/dns\"",
            )
            .replace(
                "bypass_file = \"/var/lib/walrus/bypass\"",
                "bypass_file = \"/tmp/w/bypass\"",
            )
            .replace("panic_after = 3", "panic_after = 2");
        let config = parse(&text).unwrap();
        assert_eq!(config.dns.state_dir, PathBuf::from("/tmp/w/dns"));
        assert_eq!(config.reporter.bypass_file, PathBuf::from("/tmp/w/bypass"));
        assert_eq!(config.reporter.panic_after, 2);
    }

    #[test]
    fn a_reporter_knob_out_of_range_names_file_line_and_field() {
        // The range is walrus-actors' (`ReporterKnobs::validate`); the file gives the place.
        let err = parse(&EXAMPLE.replace("panic_after = 3", "panic_after = 0")).unwrap_err();
        assert_eq!(err.field, "reporter.panic_after");
        assert!(err.line.is_some(), "{err}");
        assert!(err.message.contains("must be at least 1"), "{err}");
        let err = parse(&EXAMPLE.replace("panic_after = 3", "panic_afterr = 3")).unwrap_err();
        assert!(err.message.contains("panic_afterr"), "{err}");
    }

    #[test]
    fn direct_mode_needs_rfc2136() {
        let err = parse(&EXAMPLE.replace("mode = \"director\"", "mode = \"direct\"")).unwrap_err();
        assert_eq!(err.field, "dns.mode");
    }

    #[test]
    fn roles_from_the_command_line_are_checked_like_the_files() {
        let c = parse(EXAMPLE).unwrap();
        let c2 = c.clone().with_roles("eu-a", &[Role::Controller]).unwrap();
        assert_eq!(c2.nodes["eu-a"].roles, [Role::Controller].into());
        let err = c.clone().with_roles("eu-b", &[Role::Director]).unwrap_err();
        assert_eq!(err.field, "nodes.eu-b.area");
        assert!(c.clone().with_roles("eu-a", &[]).is_err());
        assert!(c.with_roles("nobody", &[Role::Controller]).is_err());
        assert!("boss".parse::<Role>().is_err());
        assert_eq!("director".parse::<Role>(), Ok(Role::Director));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/walrus.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/walrus.toml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn steering_rules_and_published_ns_addresses_are_read_and_checked() {
        let c = parse(EXAMPLE).unwrap();
        assert!(c.dns.steering.is_empty());
        assert_eq!(
            c.areas[&AreaName::from("eu")].ns_addresses,
            vec!["127.0.0.11".parse::<IpAddr>().unwrap()]
        );
        let text = EXAMPLE
            .replace(
                "state_dir = \"/var/lib/walrus/dns\"",
                "state_dir = \"/var/lib/walrus/dns\"\nsteering = [{ source = \"10.1.0.0/16\", area = \"us\" }]",
            )
            .replace(
                "home_cluster = \"c-eu\"",
                "home_cluster = \"c-eu\"\nns_addresses = [\"192.0.2.53\"]",
            );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.dns.steering,
            vec![AreaSteerRule {
                source: "10.1.0.0/16".into(),
                area: AreaName::from("us")
            }]
        );
        assert_eq!(
            c.areas[&AreaName::from("eu")].ns_addresses,
            vec!["192.0.2.53".parse::<IpAddr>().unwrap()]
        );
        let err = parse(&text.replace("area = \"us\"", "area = \"mars\"")).unwrap_err();
        assert_eq!(err.field, "dns.steering[0].area");
        assert!(err.message.contains("known: asia, eu, us"), "{err}");
        let err = parse(&text.replace("10.1.0.0/16", "10.1.0.0/99")).unwrap_err();
        assert_eq!(err.field, "dns.steering[0].source");
        let err =
            parse(&text.replace("backend = \"embedded\"", "backend = \"rfc2136\"")).unwrap_err();
        assert_eq!(err.field, "dns.steering");
    }

    #[test]
    fn learned_steering_is_off_by_default_and_read_with_its_knobs() {
        assert_eq!(parse(EXAMPLE).unwrap().dns.learned, None);
        let on = format!("{EXAMPLE}\n[dns.learned]\nenabled = true\n");
        let c = parse(&on).unwrap();
        assert_eq!(
            c.dns.learned,
            Some(walrus_actors::director::learned::LearnedConfig::default())
        );
        let off = format!("{EXAMPLE}\n[dns.learned]\nenabled = false\nmin_samples = 2\n");
        assert_eq!(parse(&off).unwrap().dns.learned, None);
        let tuned = format!(
            "{EXAMPLE}\n[dns.learned]\nenabled = true\nprobe_interval = \"1s\"\nmin_samples = 2\nshare_interval = \"200ms\"\n"
        );
        let l = parse(&tuned).unwrap().dns.learned.unwrap();
        assert_eq!(l.table.probe_interval, Duration::from_secs(1));
        assert_eq!((l.table.min_samples, l.table.samples_kept), (2, 5));
        assert_eq!(l.share_interval, Duration::from_millis(200));
        let lines = EXAMPLE.lines().count();
        let err =
            parse(&on.replace("backend = \"embedded\"", "backend = \"rfc2136\"")).unwrap_err();
        assert_eq!(err.field, "dns.learned.enabled", "{err}");
        assert_eq!(err.line, Some(lines + 3), "{err}");
        let err = parse(&tuned.replace("min_samples = 2", "min_samples = 6")).unwrap_err();
        assert_eq!(err.field, "dns.learned.min_samples", "{err}");
        assert_eq!(err.line, Some(lines + 5), "{err}");
        let err = parse(&format!("{on}typo = 1\n")).unwrap_err();
        assert!(err.message.contains("typo"), "{err}");
    }
}
