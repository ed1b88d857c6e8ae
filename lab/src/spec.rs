//! What one lab run builds: areas, regions, the latency matrix, the resolvers, the
//! answers the area name servers give; and the address plan every part derives from it.
//!
//! Address plan (all inside the lab's own namespaces, never on the host):
//!
//! ```text
//!   backbone 10.255.0.0/24 (one bridge in namespace <prefix>net)
//!     root name server    10.255.0.1        (namespace <prefix>root, BIND, zone ".")
//!     area A              10.255.0.(10+A)   (namespace <prefix>aA: embedded name server :53,
//!                                            web server k on port 8000+k, nginx)
//!     region R            10.255.0.(100+R)  (namespace <prefix>rR)
//!   public addresses, present only inside every region namespace (on lo), each one a
//!   delay relay to the backbone address behind it:
//!     ns.aA.walrus-areas.test   10.A.0.53   → 10.255.0.(10+A):53      (UDP and TCP)
//!     web server k of area A    10.A.1.k:80 → 10.255.0.(10+A):8000+k  (TCP)
//!   resolvers of region R       10.200.R.(1+kind index)
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The site zone clients look up (`www.<SITE>`).
pub const SITE: &str = "walrus.test";
/// Parent of every area zone: area A's zone is `aA.<AREAS_PARENT>`.
pub const AREAS_PARENT: &str = "walrus-areas.test";
/// Port of web server k is `WEB_PORT_BASE + k` on its area's backbone address.
pub const WEB_PORT_BASE: u16 = 8000;

/// An area, 1-based (`a1`, `a2`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Area(pub u8);

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

impl Area {
    /// The area's own zone, e.g. `a1.walrus-areas.test.`.
    pub fn zone(self) -> String {
        format!("a{}.{AREAS_PARENT}.", self.0)
    }
    /// The name of its name server.
    pub fn ns_name(self) -> String {
        format!("ns.{}", self.zone())
    }
    /// The public (relayed) address of its name server.
    pub fn ns_public(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.0, 0, 53)
    }
    /// Its address on the backbone (name server and web servers listen there).
    pub fn backbone(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 255, 0, 10 + self.0)
    }
    /// Public address of web server `k` (1-based) of its home cluster.
    pub fn web_public(self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.0, 1, k)
    }
    /// The area whose cluster holds a public web address, if any.
    pub fn of_web(ip: IpAddr) -> Option<(Area, u8)> {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                (o[0] == 10 && o[2] == 1 && (1..=9).contains(&o[1])).then_some((Area(o[1]), o[3]))
            }
            IpAddr::V6(_) => None,
        }
    }
    /// The area named by a CNAME target `www.aN.walrus-areas.test.`.
    pub fn of_cname(target: &str) -> Option<Area> {
        let t = target.trim_end_matches('.').to_ascii_lowercase();
        let rest = t.strip_prefix("www.a")?;
        let (n, parent) = rest.split_once('.')?;
        (parent == AREAS_PARENT).then_some(())?;
        n.parse().ok().map(Area)
    }
}

/// A client region, 1-based (`r1`, ...): a namespace with resolvers and clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Region(pub u8);

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl Region {
    /// Its address on the backbone: the source area servers see for its HTTP clients'
    /// relayed connections (not for its resolvers: see [`Region::resolver_prefix`]).
    pub fn backbone(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 255, 0, 100 + self.0)
    }
    /// The /24 of its resolvers' addresses (`10.200.R.0/24`): the source area servers
    /// see for their queries, a prefix of its own per region.
    pub fn resolver_prefix(self) -> String {
        format!("10.200.{}.0/24", self.0)
    }
}

/// The root name server's backbone address.
pub const ROOT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

/// A real recursive resolver the lab runs in every region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolverKind {
    /// Unbound with its defaults (Debian `unbound`).
    Unbound,
    /// Unbound with `fast-server-permil: 900`, `fast-server-num: 1` and
    /// `infra-cache-min-rtt: 2` (the resolver-side fix; the default 50 ms floor on its RTT
    /// estimates makes every server nearer than 50 ms look alike).
    UnboundFast,
    /// BIND 9 as a resolver (Debian `bind9`).
    Bind,
    /// Knot Resolver (Debian `knot-resolver`).
    Knot,
    /// PowerDNS Recursor (Debian `pdns-recursor`).
    Pdns,
    /// Unbound sending EDNS Client Subnet (RFC 7871): `subnetcache` module,
    /// `send-client-subnet` for the area servers, otherwise its defaults.
    UnboundEcs,
    /// PowerDNS Recursor sending EDNS Client Subnet: `ecs-add-for` the lab's clients,
    /// `edns-subnet-allow-list` the area servers.
    PdnsEcs,
}

impl ResolverKind {
    /// Whether it sends EDNS Client Subnet.
    pub fn sends_ecs(self) -> bool {
        matches!(self, ResolverKind::UnboundEcs | ResolverKind::PdnsEcs)
    }

    /// Every kind, in a fixed order (the address index).
    pub const ALL: [ResolverKind; 7] = [
        ResolverKind::Unbound,
        ResolverKind::UnboundFast,
        ResolverKind::Bind,
        ResolverKind::Knot,
        ResolverKind::Pdns,
        ResolverKind::UnboundEcs,
        ResolverKind::PdnsEcs,
    ];

    /// Short name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            ResolverKind::Unbound => "unbound",
            ResolverKind::UnboundFast => "unbound-fast",
            ResolverKind::Bind => "bind",
            ResolverKind::Knot => "knot",
            ResolverKind::Pdns => "pdns",
            ResolverKind::UnboundEcs => "unbound-ecs",
            ResolverKind::PdnsEcs => "pdns-ecs",
        }
    }

    /// Parses [`ResolverKind::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    fn index(self) -> u8 {
        match self {
            ResolverKind::Unbound => 0,
            ResolverKind::UnboundFast => 1,
            ResolverKind::Bind => 2,
            ResolverKind::Knot => 3,
            ResolverKind::Pdns => 4,
            ResolverKind::UnboundEcs => 5,
            ResolverKind::PdnsEcs => 6,
        }
    }

    /// Its listening (and query source) address in `region`.
    pub fn addr(self, region: Region) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, region.0, 1 + self.index())
    }

    /// The kind listening on `ip`, if any.
    pub fn of_addr(ip: IpAddr) -> Option<(Region, ResolverKind)> {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if o[0] != 10 || o[1] != 200 {
                    return None;
                }
                let kind = Self::ALL.into_iter().find(|k| k.index() + 1 == o[3])?;
                Some((Region(o[2]), kind))
            }
            IpAddr::V6(_) => None,
        }
    }

    /// The program to run and the Debian package that ships it.
    pub fn program(self) -> (&'static str, &'static str) {
        match self {
            ResolverKind::Unbound | ResolverKind::UnboundFast | ResolverKind::UnboundEcs => {
                ("unbound", "unbound")
            }
            ResolverKind::Bind => ("named", "bind9"),
            ResolverKind::Knot => ("kresd", "knot-resolver"),
            ResolverKind::Pdns | ResolverKind::PdnsEcs => ("pdns_recursor", "pdns-recursor"),
        }
    }
}

/// What the area name servers answer for `www` in a run.
///
/// Three modes are *oracles*: they use the lab's ground truth (which region is nearest
/// to which area), which no operator of a real site knows. Their names say so, and the
/// report labels them: they are the bar the others are measured against, not Walrus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Walrus with static answers: each area answers with its home cluster (paper §6.1
    /// locality preference when everything is up and below threshold); the resolver's
    /// choice of name server by RTT is the only steering (the paper's rule).
    Walrus,
    /// Oracle: Walrus plus source steering in every area server (`director::steering`)
    /// by a table the lab writes from its own ground truth (each region's resolvers → its
    /// nearest area). Was called `walrus-steered`.
    #[serde(rename = "walrus-oracle-table", alias = "walrus-steered")]
    OracleTable,
    /// One site: every area answers with area 1's cluster.
    Single,
    /// Round-robin DNS: every area answers with every server of every cluster.
    RoundRobin,
    /// Oracle: clients skip DNS and always use their region's nearest cluster.
    Oracle,
    /// The real Walrus: `walrus-node run` processes in the area namespaces (Controllers,
    /// Reporters reading nginx `stub_status`, Directors with the embedded name server),
    /// group communication over QUIC across the backbone, **no steering table** (the
    /// paper's rule: the resolver picks the area server by RTT). Answers start at each
    /// area's home cluster and then are whatever the master Controller decides
    /// (`super::runtime`).
    #[serde(rename = "walrus-runtime")]
    Runtime,
    /// Oracle: the real runtime with a `[[dns.steering]]` table written from the lab's
    /// ground truth.
    #[serde(rename = "walrus-runtime-oracle-table")]
    RuntimeOracleTable,
    /// The real runtime with learned steering (issue 21): no `[[dns.steering]]` table,
    /// `[dns.learned] enabled = true` in every node's configuration; the area name servers
    /// measure their RTT to the resolvers and share it over walrus-gcs.
    #[serde(rename = "walrus-learned")]
    Learned,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 8] = [
        Mode::Walrus,
        Mode::OracleTable,
        Mode::Single,
        Mode::RoundRobin,
        Mode::Oracle,
        Mode::Runtime,
        Mode::RuntimeOracleTable,
        Mode::Learned,
    ];

    /// Short name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Walrus => "walrus",
            Mode::OracleTable => "walrus-oracle-table",
            Mode::Single => "single",
            Mode::RoundRobin => "round-robin",
            Mode::Oracle => "oracle",
            Mode::Runtime => "walrus-runtime",
            Mode::RuntimeOracleTable => "walrus-runtime-oracle-table",
            Mode::Learned => "walrus-learned",
        }
    }

    /// Parses [`Mode::name`] (and `walrus-steered`, the oracle table's old name).
    pub fn parse(s: &str) -> Option<Self> {
        if s == "walrus-steered" {
            return Some(Mode::OracleTable);
        }
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether it uses the lab's ground truth (an oracle, not something Walrus can do).
    pub fn is_oracle(self) -> bool {
        matches!(
            self,
            Mode::Oracle | Mode::OracleTable | Mode::RuntimeOracleTable
        )
    }

    /// Whether it runs the real Walrus (`walrus-node` processes).
    pub fn is_runtime(self) -> bool {
        matches!(
            self,
            Mode::Runtime | Mode::RuntimeOracleTable | Mode::Learned
        )
    }
}

/// One lab run, as every process of the run reads it (written to `<dir>/spec.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabSpec {
    /// Namespace name prefix, unique per run (`wl<pid>x`): cleanup finds them by it.
    pub prefix: String,
    /// Work directory of the run: configurations, logs, records.
    pub dir: PathBuf,
    /// Number of areas (2..=9); each has one name server and one home cluster.
    pub areas: u8,
    /// Web servers per cluster (1..=9).
    pub servers_per_cluster: u8,
    /// Number of client regions (1..=9).
    pub regions: u8,
    /// Round-trip time in milliseconds, `rtt_ms[region-1][area-1]`; half is added each way.
    pub rtt_ms: Vec<Vec<u32>>,
    /// Resolvers run in every region.
    pub resolvers: Vec<ResolverKind>,
    /// What the area servers answer.
    pub mode: Mode,
    /// TTL of the site's records, seconds.
    pub ttl_secs: u32,
    /// How long clients and probes run, seconds.
    pub seconds: u32,
    /// HTTP clients per region and resolver (0: only probes).
    pub clients_per_resolver: u32,
    /// Pause between two requests of one client, milliseconds.
    pub think_ms: u64,
    /// Unique-name queries per second per resolver (the convergence probes; 0: none).
    pub probe_rate: u32,
    /// Seed of the clients' random choices.
    pub seed: u64,
    /// A cluster that dies during the run, if any.
    #[serde(default)]
    pub failure: Option<Failure>,
    /// What happens to the real Walrus during the run ([`Mode::Runtime`] only, except an
    /// overload, which the scripted baselines can meet too).
    #[serde(default)]
    pub event: Option<ScenarioEvent>,
    /// The spoofing test (real runtime only; see [`super::learned`]).
    #[serde(default)]
    pub spoof: Option<super::learned::Spoof>,
}

/// A scenario event played against the real runtime ([`Mode::Runtime`]); times are
/// seconds after the clients' start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ScenarioEvent {
    /// Every nginx of `area`'s home cluster is killed (SIGKILL); nothing else is told:
    /// the Reporters see connection refused (PANIC), the master moves the area.
    ClusterDies {
        /// The area whose cluster dies.
        area: Area,
        /// When.
        at_secs: u32,
    },
    /// `conns` slow clients (connections that send half a request line and wait) are
    /// held on every server of `area`'s home cluster from `at_secs` for `secs`: nginx
    /// counts them as busy (`Reading`), so the Reporters measure a load of about
    /// `conns / max_workers`, above the threshold.
    Overload {
        /// The area whose cluster overloads.
        area: Area,
        /// When it starts.
        at_secs: u32,
        /// How long it lasts.
        secs: u32,
        /// Slow connections per server.
        conns: u32,
    },
    /// The master Controller's process is killed (SIGKILL) at `at_secs`; a backup takes
    /// over.
    MasterDies {
        /// When.
        at_secs: u32,
    },
    /// Group-communication traffic between `area` and every other area is dropped
    /// (nftables in `area`'s namespace) from `at_secs` for `secs`, then let through
    /// again. DNS and HTTP from the regions are not cut: each side keeps serving.
    Partition {
        /// The area cut off.
        area: Area,
        /// When.
        at_secs: u32,
        /// How long.
        secs: u32,
    },
}

impl ScenarioEvent {
    /// Short name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            ScenarioEvent::ClusterDies { .. } => "cluster-dies",
            ScenarioEvent::Overload { .. } => "overload",
            ScenarioEvent::MasterDies { .. } => "master-dies",
            ScenarioEvent::Partition { .. } => "partition",
        }
    }
    /// Parses `KIND[:AREA]@AT[+SECS]`, e.g. `cluster-dies:2@10`, `overload:2@8+12`,
    /// `master-dies@10`, `partition:3@8+12` (overload: [`ScenarioEvent::Overload`] with `conns`
    /// slow connections per server).
    pub fn parse(s: &str, conns: u32) -> Option<ScenarioEvent> {
        let (head, when) = s.split_once('@')?;
        let (at, secs) = match when.split_once('+') {
            Some((a, d)) => (a.parse().ok()?, Some(d.parse().ok()?)),
            None => (when.parse().ok()?, None),
        };
        let (kind, area) = match head.split_once(':') {
            Some((k, a)) => (k, Some(Area(a.parse().ok()?))),
            None => (head, None),
        };
        match (kind, area, secs) {
            ("cluster-dies", Some(area), None) => {
                Some(ScenarioEvent::ClusterDies { area, at_secs: at })
            }
            ("overload", Some(area), Some(secs)) => Some(ScenarioEvent::Overload {
                area,
                at_secs: at,
                secs,
                conns,
            }),
            ("master-dies", None, None) => Some(ScenarioEvent::MasterDies { at_secs: at }),
            ("partition", Some(area), Some(secs)) => Some(ScenarioEvent::Partition {
                area,
                at_secs: at,
                secs,
            }),
            _ => None,
        }
    }

    /// When it starts, seconds after the clients' start.
    pub fn at_secs(&self) -> u32 {
        match *self {
            ScenarioEvent::ClusterDies { at_secs, .. }
            | ScenarioEvent::Overload { at_secs, .. }
            | ScenarioEvent::MasterDies { at_secs }
            | ScenarioEvent::Partition { at_secs, .. } => at_secs,
        }
    }
    /// How long it lasts, when it ends by itself.
    pub fn secs(&self) -> Option<u32> {
        match *self {
            ScenarioEvent::Overload { secs, .. } | ScenarioEvent::Partition { secs, .. } => {
                Some(secs)
            }
            ScenarioEvent::ClusterDies { .. } | ScenarioEvent::MasterDies { .. } => None,
        }
    }
    /// The area it strikes, if one.
    pub fn area(&self) -> Option<Area> {
        match *self {
            ScenarioEvent::ClusterDies { area, .. }
            | ScenarioEvent::Overload { area, .. }
            | ScenarioEvent::Partition { area, .. } => Some(area),
            ScenarioEvent::MasterDies { .. } => None,
        }
    }
}

/// "A cluster dies": every web server of `area`'s home cluster is killed (SIGKILL) `at_secs`
/// after the clients start; `detect_ms` later, when `redirect` is set, area `area`'s name
/// server is given the servers of `to`'s cluster instead — what the master Controller's
/// next round does (paper §6.1, ensure availability), scripted (the real runtime: [`ScenarioEvent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The area whose home cluster dies.
    pub area: Area,
    /// Seconds after the clients' start.
    pub at_secs: u32,
    /// The cluster its area is moved to.
    pub to: Area,
    /// Detection plus one round, milliseconds.
    pub detect_ms: u64,
    /// Whether the area's answer is changed at all (false: round-robin DNS, no Director).
    pub redirect: bool,
}

impl LabSpec {
    /// Checks what the address plan needs: 2..=9 areas, 1..=9 regions and servers per
    /// cluster, a full region×area matrix, at least one resolver unless the mode is the
    /// oracle, a failure naming two different existing areas.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=9).contains(&self.areas) {
            return Err(format!("areas must be 2..=9, not {}", self.areas));
        }
        if !(1..=9).contains(&self.regions) || !(1..=9).contains(&self.servers_per_cluster) {
            return Err("regions and servers per cluster must be 1..=9".into());
        }
        if self.rtt_ms.len() != usize::from(self.regions)
            || self
                .rtt_ms
                .iter()
                .any(|row| row.len() != usize::from(self.areas))
        {
            return Err(format!(
                "the latency matrix must have {} rows of {} RTTs",
                self.regions, self.areas
            ));
        }
        if self.resolvers.is_empty() && self.mode != Mode::Oracle {
            return Err("no resolver: clients could not resolve".into());
        }
        if self.ttl_secs == 0 {
            return Err("the TTL must be at least 1 s".into());
        }
        match (self.event, self.mode) {
            (None, _) => {}
            (Some(_), m) if m.is_runtime() => {}
            // Slow clients need no runtime: the baselines' requests per cluster under the
            // same overload.
            (Some(ScenarioEvent::Overload { .. }), m) if m != Mode::Oracle => {}
            (Some(_), _) => {
                return Err("this event needs the real runtime (mode walrus-runtime)".into())
            }
        }
        if self.spoof.is_some()
            && (!self.mode.is_runtime() || self.regions < 2 || self.event.is_some())
        {
            return Err(
                "the spoofing test needs the real runtime, two regions and no event".into(),
            );
        }
        if let Some(a) = self.event.and_then(|e| e.area()) {
            if !(1..=self.areas).contains(&a.0) {
                return Err(format!("the event strikes {a}, which does not exist"));
            }
        }
        if let Some(f) = self.failure {
            let ok = |a: Area| (1..=self.areas).contains(&a.0);
            if !ok(f.area) || !ok(f.to) || f.area == f.to {
                return Err(format!("bad failure: {} moved to {}", f.area, f.to));
            }
        }
        Ok(())
    }

    /// Every area.
    pub fn all_areas(&self) -> impl Iterator<Item = Area> {
        (1..=self.areas).map(Area)
    }
    /// Every region.
    pub fn all_regions(&self) -> impl Iterator<Item = Region> {
        (1..=self.regions).map(Region)
    }
    /// The round-trip time between a region and an area, milliseconds.
    pub fn rtt(&self, r: Region, a: Area) -> u32 {
        self.rtt_ms
            .get(usize::from(r.0).wrapping_sub(1))
            .and_then(|row| row.get(usize::from(a.0).wrapping_sub(1)))
            .copied()
            .unwrap_or(0)
    }
    /// The nearest area of a region (smallest RTT, lowest number among equals).
    pub fn nearest(&self, r: Region) -> Area {
        self.all_areas()
            .min_by_key(|a| (self.rtt(r, *a), a.0))
            .unwrap_or(Area(1))
    }
    /// Namespace names.
    pub fn ns_net(&self) -> String {
        format!("{}net", self.prefix)
    }
    /// Namespace of the root server.
    pub fn ns_root(&self) -> String {
        format!("{}root", self.prefix)
    }
    /// Namespace of an area.
    pub fn ns_area(&self, a: Area) -> String {
        format!("{}{a}", self.prefix)
    }
    /// Namespace of a region.
    pub fn ns_region(&self, r: Region) -> String {
        format!("{}{r}", self.prefix)
    }
    /// Public addresses of an area's home cluster.
    pub fn cluster(&self, a: Area) -> Vec<Ipv4Addr> {
        (1..=self.servers_per_cluster)
            .map(|k| a.web_public(k))
            .collect()
    }
    /// What area `a`'s name server answers for `www` in this run's mode (at the start).
    pub fn answer_of(&self, a: Area) -> Vec<Ipv4Addr> {
        match self.mode {
            Mode::Walrus
            | Mode::OracleTable
            | Mode::Oracle
            | Mode::Runtime
            | Mode::RuntimeOracleTable
            | Mode::Learned => self.cluster(a),
            Mode::Single => self.cluster(Area(1)),
            Mode::RoundRobin => self.all_areas().flat_map(|a| self.cluster(a)).collect(),
        }
    }
    /// A relay's backend for a public address and port, if the address is one of ours.
    pub fn backend_of(&self, public: SocketAddr) -> Option<SocketAddr> {
        let IpAddr::V4(v4) = public.ip() else {
            return None;
        };
        let o = v4.octets();
        if o[0] != 10 || o[1] == 0 || o[1] > self.areas {
            return None;
        }
        let a = Area(o[1]);
        match (o[2], o[3], public.port()) {
            (0, 53, 53) => Some(SocketAddr::new(a.backbone().into(), 53)),
            (1, k, 80) if (1..=self.servers_per_cluster).contains(&k) => Some(SocketAddr::new(
                a.backbone().into(),
                WEB_PORT_BASE + u16::from(k),
            )),
            _ => None,
        }
    }

    /// The default matrix: region r's nearest area is area r (wrapping), `near` ms away;
    /// each further step of |r−a| adds `step` ms.
    pub fn ring_matrix(regions: u8, areas: u8, near: u32, step: u32) -> Vec<Vec<u32>> {
        (1..=regions)
            .map(|r| {
                let home = (r - 1) % areas + 1;
                (1..=areas)
                    .map(|a| near + step * u32::from(home.abs_diff(a)))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LabSpec {
        LabSpec {
            prefix: "wlt".into(),
            dir: "/tmp/x".into(),
            areas: 3,
            servers_per_cluster: 2,
            regions: 3,
            rtt_ms: LabSpec::ring_matrix(3, 3, 10, 30),
            resolvers: vec![ResolverKind::Bind],
            mode: Mode::Walrus,
            ttl_secs: 1,
            seconds: 1,
            clients_per_resolver: 1,
            think_ms: 100,
            probe_rate: 1,
            seed: 1,
            failure: None,
            event: None,
            spoof: None,
        }
    }

    #[test]
    fn address_plan_round_trips() {
        let s = spec();
        assert_eq!(s.nearest(Region(2)), Area(2));
        assert_eq!(s.rtt(Region(1), Area(3)), 70);
        assert_eq!(
            Area::of_web("10.2.1.2".parse().unwrap()),
            Some((Area(2), 2))
        );
        assert_eq!(Area::of_cname("www.a3.walrus-areas.test."), Some(Area(3)));
        assert_eq!(Area::of_cname("www.a3.example.test."), None);
        for k in ResolverKind::ALL {
            assert_eq!(
                ResolverKind::of_addr(k.addr(Region(2)).into()),
                Some((Region(2), k))
            );
        }
        assert_eq!(
            s.backend_of("10.2.1.2:80".parse().unwrap()),
            Some("10.255.0.12:8002".parse().unwrap())
        );
        assert_eq!(s.backend_of("10.4.0.53:53".parse().unwrap()), None);
        assert_eq!(s.answer_of(Area(2)).len(), 2);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.areas = 10;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.rtt_ms[1].pop();
        assert!(s.validate().unwrap_err().contains("latency matrix"));
        let mut s = spec();
        s.failure = Some(Failure {
            area: Area(2),
            at_secs: 1,
            to: Area(2),
            detect_ms: 1,
            redirect: true,
        });
        assert!(s.validate().is_err());
        let mut s = spec();
        s.event = Some(ScenarioEvent::MasterDies { at_secs: 3 });
        assert!(s.validate().unwrap_err().contains("runtime"));
        let mut o = spec();
        o.mode = Mode::RoundRobin;
        o.event = Some(ScenarioEvent::Overload {
            area: Area(2),
            at_secs: 1,
            secs: 1,
            conns: 1,
        });
        assert!(o.validate().is_ok());
        s.mode = Mode::Runtime;
        assert!(s.validate().is_ok());
        s.event = Some(ScenarioEvent::Partition {
            area: Area(7),
            at_secs: 1,
            secs: 1,
        });
        assert!(s.validate().is_err());
    }

    #[test]
    fn events_parse_from_the_command_line() {
        assert_eq!(
            ScenarioEvent::parse("cluster-dies:2@10", 5),
            Some(ScenarioEvent::ClusterDies {
                area: Area(2),
                at_secs: 10
            })
        );
        assert_eq!(
            ScenarioEvent::parse("overload:2@8+12", 5),
            Some(ScenarioEvent::Overload {
                area: Area(2),
                at_secs: 8,
                secs: 12,
                conns: 5
            })
        );
        assert_eq!(
            ScenarioEvent::parse("master-dies@4", 5),
            Some(ScenarioEvent::MasterDies { at_secs: 4 })
        );
        assert_eq!(ScenarioEvent::parse("partition:3@8", 5), None);
        assert_eq!(ScenarioEvent::parse("master-dies:1@4", 5), None);
        assert_eq!(ScenarioEvent::parse("meteor@4", 5), None);
    }
}
