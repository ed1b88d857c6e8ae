//! The node runtime: from the validated [`Config`] and a node name to the running roles of
//! that node over one group-communication layer.
//!
//! ```text
//!  Config ─┬─ gcs_config ───────────▶ walrus_gcs::Gcs (QUIC, mutual TLS from tls.dir)
//!          ├─ controller_settings ──▶ controller::actor  (joins Controllers)
//!          ├─ reporter_config ──────▶ reporter::spawn + reporter::actor (joins Reporters)
//!          ├─ replicator_settings ──▶ replicator::shell (joins Replicators; transfers on
//!          │                           the gcs point-to-point streams); its generation
//!          │                           goes into this node's Reporter's reports
//!          └─ zone_layout, ... ─────▶ embedded server / RFC 2136 updater
//!                                      + director::driver + director::actor (joins Directors)
//! ```
//!
//! [`run`] is the entry point (it takes a shutdown future, like mini-redis's
//! `server::run`); [`NodeRuntime`] is the running node, which the binary reloads on
//! SIGHUP and the in-process launcher ([`crate::cluster`]) stops or kills.
//!
//! What a reload (SIGHUP) changes, without a restart and without the node losing its
//! place in the group ([`NodeRuntime::reload`]; the rules are [`plan_reload`]'s):
//! - `[timing]` `round_period` and `report_timeout`, `[controller]`, `[notify]`;
//! - the topology: web servers, clusters, areas and nodes added, removed or changed. The
//!   Controller runs the new topology from its next round (the master decides with its
//!   own file; reports from servers it does not know are ignored and logged once per
//!   server); each embedded name server's site zone delegates the areas of the new file;
//!   the group layer dials new nodes and drops removed ones once every node in the group
//!   runs the same file ([`admit_peers`] says why it waits);
//! - this node's config digest, announced on `Nodes` ([`walrus_actors::digests`]), so
//!   `/status`, `walrus-node status` and `/metrics` show which node runs which file.
//!
//! What cannot change live (this node's own entry, its server's status page or its
//! area's zone when it serves them, the site, `[tls]`, `[dns]`, `[http]`, `[reporter]`,
//! `[replicator]`, `report_interval`, `fast_failover`, `gcs_profile`, and areas added or
//! removed in `dns.mode = "direct"` on a Controller) refuses the whole reload with every
//! reason; the running configuration is kept whole. A new area's own Director is the new
//! area's node (started with the new file); a Controller with an RFC 2136 backend gets no
//! fallback writer for an area added live until it restarts.

use crate::config::{
    Config, ConfigError, DnsBackend, DnsMode, GcsProfile, ReplicationMethod, Role, StatusKind,
    TransferTransport,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use walrus_actors::controller::actor::{
    self as controller_actor, ControllerHandle, ControllerSettings, ControllerStatus, DirectDrivers,
};
use walrus_actors::controller::notify::NotifyConfig;
use walrus_actors::controller::round::RoundConfig;
use walrus_actors::digests::{self, Digests};
use walrus_actors::director::actor::fallback_may_write;
use walrus_actors::director::core::{
    CoreConfig as DirectorCoreConfig, DirectorCore, DirectorStatus,
};
use walrus_actors::director::embedded::EmbeddedServer;
use walrus_actors::director::retry::RetryPolicy;
use walrus_actors::director::rfc2136::{Rfc2136Config, Rfc2136Updater, TsigKey};
use walrus_actors::director::steering::Steering;
use walrus_actors::director::zone::{fqdn, AreaServer, RecordTtl, WwwRecords, ZoneLayout};
use walrus_actors::director::{self, AreaDirector, NameServer};
use walrus_actors::group::{GroupLayer, PeerStreams};
use walrus_actors::model::{AreaName, ClusterName, Decision, ServerName};
use walrus_actors::replicator::actor::{
    BackoffConfig, ReplicatorRole, ReplicatorSettings, ReplicatorStatus, TransferMethod,
};
use walrus_actors::replicator::shell::{self as replicator_shell, ReplicatorActor};
use walrus_actors::replicator::store::StoreConfig;
use walrus_actors::replicator::watcher::WatchConfig;
use walrus_actors::reporter::actor::ReporterActor;
use walrus_actors::reporter::{self, ReporterConfig, ReporterHandle, WebSource};
use walrus_actors::supervision::{ActorHome, RestartLimit, Supervision};
use walrus_gcs::transport::bulk::TcpStreams;
use walrus_gcs::transport::{certs, Limits, Listen, NodeIdentity, TransportConfig};
use walrus_gcs::{CoreConfig, Gcs, GcsConfig, NodeId};

/// Why a node could not start (or a reload was refused).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is invalid or does not name this node.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate or key could not be read.
    #[error("node {node}: TLS: {source}")]
    Certs {
        /// The node.
        node: String,
        /// What failed.
        source: certs::CertError,
    },
    /// walrus-gcs could not start or refused a session.
    #[error("node {node}: group communication: {source}")]
    Gcs {
        /// The node.
        node: String,
        /// What failed.
        source: walrus_gcs::DriverError,
    },
    /// The Reporter could not start.
    #[error(transparent)]
    Reporter(#[from] reporter::ReporterError),
    /// The Controller could not start.
    #[error(transparent)]
    Controller(#[from] controller_actor::ControllerError),
    /// A Director's name server could not be set up.
    #[error("area {area}: {detail}")]
    Director {
        /// The area.
        area: AreaName,
        /// What failed.
        detail: String,
    },
    /// The actors' arbiter could not start.
    #[error("node {node}: actor system: {source}")]
    Actors {
        /// The node.
        node: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A reload changes what cannot change while the node runs; nothing was applied.
    #[error("node {node}: reload refused, the running configuration is kept: {}", reasons.join("; "))]
    ReloadRefused {
        /// The node.
        node: String,
        /// Each change that needs a restart, and why.
        reasons: Vec<String>,
    },
    /// A node's role needs a setting the file does not give.
    #[error("node {node}: {detail}")]
    Role {
        /// The node.
        node: String,
        /// What is missing.
        detail: String,
    },
}

// ----------------------------------------------------------------------------------------
// Config → each role's configuration (pure; unit-tested below).

/// The Controller's round configuration: timings from `[timing]`, the assignment's
/// parameters from `[controller]` (others keep their documented defaults), the dead-server
/// notification delay from `[notify]`.
pub fn round_config(config: &Config) -> RoundConfig {
    let mut round = RoundConfig {
        round_period: config.timing.round_period,
        report_timeout: config.timing.report_timeout,
        fast_failover: config.timing.fast_failover,
        ..RoundConfig::default()
    };
    round.params.dead_after = config.notify.dead_after;
    config.controller.apply(&mut round);
    round
}

/// The notification channels of `[notify]`, for the site.
pub fn notify_config(config: &Config) -> NotifyConfig {
    NotifyConfig {
        site: config.site.clone(),
        command: config.notify.command.clone(),
        webhook: config.notify.webhook.clone(),
        webhook_headers: config.notify.webhook_headers.clone(),
        webhook_body: config.notify.webhook_body.clone(),
        webhook_ca: config.notify.webhook_ca.clone(),
        ..NotifyConfig::default()
    }
}

/// Everything a Controller runs with.
pub fn controller_settings(config: &Config) -> ControllerSettings {
    ControllerSettings {
        round: round_config(config),
        topology: config.topology(),
        notify: notify_config(config),
        replication_primary: config.replicator.as_ref().map(|r| r.primary.clone()),
    }
}

/// The Reporter of node `node`: its server's status page, the reporting interval, the
/// bypass file.
pub fn reporter_config(config: &Config, node: &str) -> Result<ReporterConfig, RunError> {
    let n = config.node(node)?;
    let server_name = n.server.clone().ok_or_else(|| RunError::Role {
        node: node.to_owned(),
        detail: "the reporter role needs `server`".into(),
    })?;
    let server = config
        .clusters
        .values()
        .find_map(|c| c.servers.get(&server_name))
        .ok_or_else(|| RunError::Role {
            node: node.to_owned(),
            detail: format!("server {server_name} is in no cluster"),
        })?;
    let url = server.status.url.clone();
    let max = server.status.max_workers;
    let web = match server.status.kind {
        StatusKind::Nginx => WebSource::Nginx {
            url,
            max_workers: max,
        },
        StatusKind::Apache => WebSource::Apache {
            url,
            max_workers: None,
        },
        StatusKind::Probe => WebSource::Probe {
            url,
            expect_status: None,
            body_contains: None,
            max_workers: max,
        },
    };
    let mut rc = ReporterConfig::new(server_name, web);
    rc.interval = config.timing.report_interval;
    rc.bypass_file = config.reporter.bypass_file.clone();
    rc.panic_after = config.reporter.panic_after;
    rc.os_stats = config.reporter.os_stats;
    if !config.timing.fast_failover {
        rc.fast_failover = None;
    }
    Ok(rc)
}

/// The Replicator of node `node`: primary or replica, its directory (the node's
/// `replicator_root` or `[replicator] root`), `keep` old generations beside the current
/// one. The primary keeps its generation numbering in `<root>.walrus-state`. With the
/// rsync method the primary pushes to every replica's `rsync_url`.
pub fn replicator_settings(config: &Config, node: &str) -> Result<ReplicatorSettings, RunError> {
    let n = config.node(node)?;
    let role_err = |detail: String| RunError::Role {
        node: node.to_owned(),
        detail,
    };
    let r = config
        .replicator
        .as_ref()
        .ok_or_else(|| role_err("the replicator role needs a [replicator] section".into()))?;
    let method = match r.method {
        ReplicationMethod::Walrus => TransferMethod::Walrus,
        ReplicationMethod::Rsync => TransferMethod::Rsync {
            program: PathBuf::from("rsync"),
            replicas: config
                .nodes
                .iter()
                .filter(|(name, n)| **name != r.primary && n.roles.contains(&Role::Replicator))
                .filter_map(|(name, n)| Some((name.clone(), n.rsync_url.clone()?)))
                .collect(),
        },
    };
    let root = r.root_of(n);
    let role = if r.primary == node {
        let mut state = root.clone().into_os_string();
        state.push(".walrus-state");
        ReplicatorRole::Primary {
            root,
            state_dir: PathBuf::from(state),
            watch: WatchConfig::default(),
        }
    } else {
        ReplicatorRole::Replica {
            store: root,
            config: StoreConfig {
                keep: r.keep + 1,
                ..StoreConfig::default()
            },
        }
    };
    Ok(ReplicatorSettings {
        me: node.to_owned(),
        primary: r.primary.clone(),
        role,
        backoff: BackoffConfig::default(),
        method,
    })
}

fn director_error(area: &AreaName, e: impl std::fmt::Display) -> RunError {
    RunError::Director {
        area: area.clone(),
        detail: e.to_string(),
    }
}

/// How long resolvers may keep NS records and name-server addresses. Only the www
/// answer needs a low TTL; NS records served with it made BIND's resolver fail with
/// "loop detected" within seconds (found by the steering lab, `docs/lab/`).
const NS_TTL: Duration = Duration::from_secs(3600);

/// The §7.2 zone layout of `area`: the site zone, the area zone, the name server
/// `ns.<area zone>` at the area's `name_server` address, the configured TTL for the www
/// answer, [`NS_TTL`] for NS records, and every other area (its zone, `ns.<zone>` and its
/// `ns_addresses`): the site zone lists every area's name server and delegates every area
/// zone inside it.
pub fn zone_layout(config: &Config, area: &AreaName) -> Result<ZoneLayout, RunError> {
    let a = config.areas.get(area).ok_or_else(|| RunError::Director {
        area: area.clone(),
        detail: "not an area of the configuration".into(),
    })?;
    let ttl = RecordTtl::try_from(config.dns.ttl).map_err(|e| director_error(area, e))?;
    let ns_ttl = RecordTtl::try_from(NS_TTL).map_err(|e| director_error(area, e))?;
    let others = config
        .areas
        .iter()
        .filter(|(name, _)| *name != area)
        .map(|(name, other)| {
            AreaServer::new(&other.zone, None, other.ns_addresses.clone())
                .map_err(|e| director_error(name, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    ZoneLayout::new(&config.site, &a.zone, None, a.ns_addresses.clone(), ttl)
        .map(|layout| layout.with_ns_ttl(ns_ttl).with_other_areas(others))
        .map_err(|e| director_error(area, e))
}

/// The embedded name servers' source steering from `[[dns.steering]]`: each rule's
/// source prefix mapped to its area's zone (empty: the paper's §7.2 answer).
pub fn steering(config: &Config) -> Result<Steering, walrus_actors::director::DirectorError> {
    let pairs: Vec<(String, String)> = config
        .dns
        .steering
        .iter()
        .filter_map(|r| {
            config
                .areas
                .get(&r.area)
                .map(|a| (r.source.clone(), a.zone.clone()))
        })
        .collect();
    Steering::from_pairs(pairs.iter().map(|(s, z)| (s.as_str(), z.as_str())))
}

/// What an area's embedded server answers before its first decision (no state file yet):
/// its home cluster's addresses, at most `max_records`.
pub fn initial_answer(config: &Config, area: &AreaName) -> WwwRecords {
    let ttl = RecordTtl::try_from(config.dns.ttl).unwrap_or_default();
    let addrs = config
        .areas
        .get(area)
        .and_then(|a| config.clusters.get(&a.home_cluster))
        .map(|c| {
            c.servers
                .values()
                .flat_map(|s| s.addresses.iter().copied())
                .take(config.controller.max_records)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    WwwRecords::from_addrs(addrs, ttl)
}

/// The embedded server's state file of `area`.
pub fn state_file(config: &Config, area: &AreaName) -> PathBuf {
    config.dns.state_dir.join(format!("{area}.state"))
}

/// The RFC 2136 updater of `area` (its name server, zone and TSIG key file).
pub fn rfc2136_updater(config: &Config, area: &AreaName) -> Result<Rfc2136Updater, RunError> {
    let a = config.areas.get(area).ok_or_else(|| RunError::Director {
        area: area.clone(),
        detail: "not an area of the configuration".into(),
    })?;
    let path = a.tsig_key_file.as_ref().ok_or_else(|| RunError::Director {
        area: area.clone(),
        detail: "the rfc2136 backend needs tsig_key_file".into(),
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| director_error(area, format!("TSIG key file {}: {e}", path.display())))?;
    let key = TsigKey::from_bind_key(&text)
        .map_err(|e| director_error(area, format!("TSIG key file {}: {e}", path.display())))?;
    let area_zone = fqdn(&a.zone).map_err(|e| director_error(area, e))?;
    Rfc2136Updater::new(Rfc2136Config {
        area: area.clone(),
        server: a.name_server,
        area_zone,
        key,
        timeout: Duration::from_secs(2),
    })
    .map_err(|e| director_error(area, e))
}

/// The walrus-gcs configuration of `node`: its address, every other node as a peer, its
/// certificate `<tls.dir>/<node>.pem` and key `<tls.dir>/<node>.key`, the CA `tls.ca`, and
/// the LAN or WAN timeouts.
pub fn gcs_config(config: &Config, node: &str) -> Result<GcsConfig, RunError> {
    let n = config.node(node)?;
    let transport = TransportConfig {
        me: NodeId::new(node),
        listen: Listen::Addr(n.address),
        peers: peer_addresses(config, node),
        identity: node_identity(config, node)?,
        limits: Limits::default(),
    };
    // The profile sets the transport's limits and the core's timeouts together.
    Ok(match config.timing.gcs_profile {
        GcsProfile::Lan => GcsConfig::lan(transport),
        GcsProfile::Wan => GcsConfig::wan(transport),
    })
}

/// Node `node`'s certificate and key (`<tls.dir>/<node>.pem`, `.key`) and the CA.
fn node_identity(config: &Config, node: &str) -> Result<NodeIdentity, RunError> {
    let certs_err = |source| RunError::Certs {
        node: node.to_owned(),
        source,
    };
    Ok(NodeIdentity {
        ca: certs::read_cert(&config.tls.ca).map_err(certs_err)?,
        cert: certs::read_cert(&config.tls.dir.join(format!("{node}.pem"))).map_err(certs_err)?,
        key: certs::read_key(&config.tls.dir.join(format!("{node}.key"))).map_err(certs_err)?,
    })
}

/// Every node but `node`, with its address.
fn peer_addresses(config: &Config, node: &str) -> Vec<(NodeId, SocketAddr)> {
    config
        .nodes
        .iter()
        .filter(|(name, _)| name.as_str() != node)
        .map(|(name, p)| (NodeId::new(name.as_str()), p.address))
        .collect()
}

/// The Replicator's point-to-point streams: the group layer's QUIC streams, or with
/// `[replicator] transport = "tls-tcp"` TLS over TCP on the node's address (same port
/// number) with the same certificates.
async fn replicator_streams(
    config: &Config,
    node: &str,
    layer: Option<Arc<dyn PeerStreams>>,
) -> Result<Arc<dyn PeerStreams>, RunError> {
    let tls_tcp = config.replicator.as_ref().is_some_and(|r| {
        r.method == ReplicationMethod::Walrus && r.transport == TransferTransport::TlsTcp
    });
    if !tls_tcp {
        return layer.ok_or_else(|| RunError::Role {
            node: node.to_owned(),
            detail: "the group layer has no point-to-point streams for the replicator".into(),
        });
    }
    let n = config.node(node)?;
    let limits = match config.timing.gcs_profile {
        GcsProfile::Lan => Limits::lan(),
        GcsProfile::Wan => Limits::wan(),
    };
    let streams = TcpStreams::bind(
        n.address,
        peer_addresses(config, node),
        &node_identity(config, node)?,
        &limits,
    )
    .await
    .map_err(|e| RunError::Role {
        node: node.to_owned(),
        detail: format!("replicator transport tls-tcp: {e}"),
    })?;
    tracing::info!(addr = %streams.local_addr(), "replicator: transfers over TLS/TCP");
    Ok(Arc::new(streams))
}

/// How long a Controller waits for its node to share a view with another node before it
/// joins `Controllers` alone (see [`GroupLayer::settled`]): five failure timeouts of the
/// gcs profile (2 s on a LAN, 20 s on a WAN).
pub fn join_grace(config: &Config) -> Duration {
    match config.timing.gcs_profile {
        GcsProfile::Lan => CoreConfig::lan().failure_timeout * 5,
        GcsProfile::Wan => CoreConfig::wan().failure_timeout * 5,
    }
}

// ----------------------------------------------------------------------------------------
// The running node.

/// What a reload did: one line per change applied ("controller", "server s4 added to
/// cluster c1", "node n4 added", ...), in the order of [`plan_reload`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The changes applied to the running node.
    pub applied: Vec<String>,
}

/// What a reload of node `node` from `old` to `new` changes, or why it is refused (every
/// reason at once). Pure; [`NodeRuntime::reload`] applies the plan.
///
/// Applied live: `[timing]` `round_period` and `report_timeout`, `[controller]`,
/// `[notify]`, and the topology of the other nodes: web servers, clusters, areas and
/// nodes added, removed or changed (an area's home cluster, a server's addresses, a
/// node's address or roles), including this node's own area's home cluster.
///
/// Refused (needs a restart), each with the reason: the site; `[tls]` (the group's
/// certificates are loaded at start); `[dns]` (backend, mode, TTL, state directory and
/// steering are the Directors' at start); `[http]` (the HTTP side reads its token and
/// certificate at start); `[reporter]`, `report_interval` and `fast_failover` (the
/// Reporter's at start); `gcs_profile` (the group's timeouts); `[replicator]`; this
/// node's own entry (address, roles, server, area, status address: they are its
/// identity in the group and what it runs); this node's own web server's status page,
/// when it reports; this node's own area's zone, name server or TSIG key, when it is
/// its Director; with `dns.mode = "direct"` on a Controller, areas added or removed (its
/// updaters are made at start).
pub fn plan_reload(old: &Config, new: &Config, node: &str) -> Result<Vec<String>, Vec<String>> {
    let t = (&old.timing, &new.timing);
    let fixed: [(bool, &str); 8] = [
        (
            old.site != new.site,
            "site: the zones served and the notifications name it",
        ),
        (
            old.tls != new.tls,
            "[tls]: the group's certificates are loaded at start",
        ),
        (
            old.dns != new.dns,
            "[dns]: backend, mode, TTL, state directory and steering are set up at start",
        ),
        (
            old.http != new.http,
            "[http]: the HTTP side reads its token and certificate at start",
        ),
        (
            old.reporter != new.reporter,
            "[reporter]: the Reporter's settings are read at start",
        ),
        (
            t.0.report_interval != t.1.report_interval || t.0.fast_failover != t.1.fast_failover,
            "[timing] report_interval, fast_failover: the Reporter's settings are read at start",
        ),
        (
            t.0.gcs_profile != t.1.gcs_profile,
            "[timing] gcs_profile: the group's timeouts are set at start",
        ),
        (
            old.replicator != new.replicator,
            "[replicator]: the Replicator's settings are read at start",
        ),
    ];
    let mut refused: Vec<String> = fixed
        .iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, why)| (*why).to_owned())
        .collect();
    let (Some(me_old), Some(me_new)) = (old.nodes.get(node), new.nodes.get(node)) else {
        refused.push(format!("the file does not name this node ({node})"));
        return Err(refused);
    };
    if me_old != me_new {
        refused.push(format!(
            "[nodes.{node}]: this node's own address, roles, server, area and status address              are its identity in the group and what it runs"
        ));
    }
    let server_of = |c: &Config, s: &ServerName| {
        c.clusters
            .iter()
            .find_map(|(cn, cl)| cl.servers.get(s).map(|x| (cn.clone(), x.status.clone())))
    };
    if let (Some(s), true) = (&me_old.server, me_old.roles.contains(&Role::Reporter)) {
        if server_of(old, s) != server_of(new, s) {
            refused.push(format!(
                "server {s}: this node reports it; its cluster and status page are the                  Reporter's at start"
            ));
        }
    }
    if let (Some(a), true) = (&me_old.area, me_old.roles.contains(&Role::Director)) {
        let fixed = |c: &Config| {
            c.areas
                .get(a)
                .map(|x| (x.zone.clone(), x.name_server, x.tsig_key_file.clone()))
        };
        if fixed(old) != fixed(new) {
            refused.push(format!(
                "area {a}: this node is its Director; its zone, name server and TSIG key are                  set up at start"
            ));
        }
    }
    let areas_added_or_removed = old.areas.keys().ne(new.areas.keys());
    if areas_added_or_removed
        && old.dns.mode == DnsMode::Direct
        && me_old.roles.contains(&Role::Controller)
    {
        refused.push(
            "areas added or removed with dns.mode = \"direct\": the master's per-area updaters              are made at start"
                .to_owned(),
        );
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let mut applied = Vec::new();
    if old.timing.round_period != new.timing.round_period
        || old.timing.report_timeout != new.timing.report_timeout
    {
        applied.push("timing".to_owned());
    }
    if old.controller != new.controller {
        applied.push("controller".to_owned());
    }
    if old.notify != new.notify {
        applied.push("notify".to_owned());
    }
    diff_keys(&mut applied, "area", &old.areas, &new.areas);
    diff_keys(&mut applied, "cluster", &old.clusters, &new.clusters);
    let servers = |c: &Config| -> BTreeMap<ServerName, (ClusterName, Vec<std::net::IpAddr>)> {
        c.clusters
            .iter()
            .flat_map(|(cn, cl)| {
                cl.servers
                    .iter()
                    .map(move |(s, x)| (s.clone(), (cn.clone(), x.addresses.clone())))
            })
            .collect()
    };
    diff_keys(&mut applied, "server", &servers(old), &servers(new));
    diff_keys(&mut applied, "node", &old.nodes, &new.nodes);
    Ok(applied)
}

/// One line per key added, removed or changed between `old` and `new`.
fn diff_keys<K: std::fmt::Display + Ord, V: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{what} {k} added")),
            Some(o) if o != v => out.push(format!("{what} {k} changed")),
            Some(_) => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} {k} removed"));
    }
}

/// One area's Director on this node (or one of the master's direct-mode updaters).
pub struct DirectorView {
    /// Its status (last application, attempts, in sync).
    pub status: watch::Receiver<DirectorStatus>,
    /// The embedded server, when the backend is embedded.
    pub embedded: Option<(EmbeddedServer, SocketAddr)>,
}

/// A running node: its roles' tasks and handles.
pub struct NodeRuntime<L: GroupLayer> {
    name: String,
    config: Config,
    layer: Arc<L>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// The arbiter the role actors run in, and their supervision record.
    home: Option<ActorHome>,
    supervision: Supervision,
    controller: Option<ControllerHandle>,
    reporter: Option<ReporterHandle>,
    reporter_actor: Option<ReporterActor>,
    director_actors: Vec<director::actor::DirectorActor>,
    replicator: Option<watch::Receiver<ReplicatorStatus>>,
    replicator_actor: Option<ReplicatorActor>,
    directors: BTreeMap<AreaName, DirectorView>,
    /// The configuration in force, watched by the status page and the peer admission.
    config_tx: watch::Sender<Config>,
    /// Each node's config digest as announced on `Nodes` ([`walrus_actors::digests`]).
    digests: watch::Receiver<Digests>,
}

impl<L: GroupLayer> NodeRuntime<L> {
    /// Starts the roles the configuration gives node `node` over `layer`. On error every
    /// role started so far is stopped and the layer shut down.
    pub async fn start(config: &Config, node: &str, layer: L) -> Result<Self, RunError> {
        Self::start_with_limit(config, node, layer, RestartLimit::default()).await
    }

    /// [`Self::start`] with a given restart limit for the role actors.
    pub async fn start_with_limit(
        config: &Config,
        node: &str,
        layer: L,
        limit: RestartLimit,
    ) -> Result<Self, RunError> {
        let (stop, _) = watch::channel(false);
        let home = ActorHome::start(node).map_err(|source| RunError::Actors {
            node: node.to_owned(),
            source,
        })?;
        let mut rt = NodeRuntime {
            name: node.to_owned(),
            config: config.clone(),
            layer: Arc::new(layer),
            stop,
            tasks: Vec::new(),
            home: Some(home),
            supervision: Supervision::new(node, limit, tokio::runtime::Handle::current()),
            controller: None,
            reporter: None,
            reporter_actor: None,
            director_actors: Vec::new(),
            replicator: None,
            replicator_actor: None,
            directors: BTreeMap::new(),
            config_tx: watch::channel(config.clone()).0,
            digests: watch::channel(Digests::default()).1,
        };
        rt.start_digests();
        match rt.start_roles().await {
            Ok(()) => Ok(rt),
            Err(e) => {
                rt.stop().await;
                Err(e)
            }
        }
    }

    /// This node's config digest on `Nodes` ([`walrus_actors::digests`]), and the peer
    /// admission that follows reloads ([`admit_peers`]).
    fn start_digests(&mut self) {
        let (tx, rx) = watch::channel(Digests::default());
        self.digests = rx.clone();
        let mut config = self.config_tx.subscribe();
        let (mine_tx, mine_rx) = watch::channel(self.config.digest.clone());
        let mut stop = self.stop.subscribe();
        self.spawn("config digest", async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    r = config.changed() => {
                        if r.is_err() { return Ok(()) }
                        let d = config.borrow_and_update().digest.clone();
                        mine_tx.send_replace(d);
                    }
                }
            }
        });
        let layer = self.layer.clone();
        let me = self.name.clone();
        let stop = self.shutdown_signal();
        self.spawn("digests", digests::run(layer, me, mine_rx, tx, stop));
        let layer = self.layer.clone();
        let me = self.name.clone();
        let config = self.config_tx.subscribe();
        let stop = self.shutdown_signal();
        self.spawn("peer admission", admit_peers(layer, me, config, rx, stop));
    }

    async fn start_roles(&mut self) -> Result<(), RunError> {
        let n = self.config.node(&self.name)?.clone();
        let roles: Vec<String> = n.roles.iter().map(|r| r.to_string()).collect();
        tracing::info!(node = %self.name, roles = %roles.join(","), "starting roles");
        if n.roles.contains(&Role::Director) {
            if self.config.dns.mode == DnsMode::Direct {
                tracing::warn!(node = %self.name, "dns.mode = direct: the master updates every area itself; this node's director role is idle");
            } else if let Some(area) = &n.area {
                // With an RFC 2136 server, the area's Directors elect one writer (see
                // `director::actor`); an embedded server is its own Director's alone.
                let election =
                    (self.config.dns.backend == DnsBackend::Rfc2136).then(|| self.election(area));
                let writer = election.as_ref().map(|(_, rx)| {
                    let me = self.name.clone();
                    self.writer_flag(
                        rx.clone(),
                        move |w, _| w.as_deref() == Some(me.as_str()),
                        None,
                    )
                });
                let tx = self.start_area_director(area, writer).await?;
                let election = election.map(|(e, _)| e);
                self.start_director_actor(tx, election);
            }
        }
        if n.roles.contains(&Role::Reporter) {
            let rc = reporter_config(&self.config, &self.name)?;
            let (handle, gatherer) = reporter::spawn(rc, self.shutdown_signal())?;
            self.tasks.push(("reporter gatherer", gatherer));
            self.reporter_actor = Some(reporter::actor::start(
                self.home()?,
                &self.supervision,
                self.layer.clone(),
                handle.clone(),
            ));
            self.reporter = Some(handle);
        }
        if n.roles.contains(&Role::Controller) {
            let mut direct = DirectDrivers::new();
            if self.config.dns.mode == DnsMode::Direct {
                let areas: Vec<AreaName> = self.config.areas.keys().cloned().collect();
                for area in areas {
                    let ns = rfc2136_updater(&self.config, &area)?;
                    let tx = self.start_driver(&area, ns, None, None, true);
                    direct.insert(area, tx);
                }
            }
            let grace = if self.config.nodes.len() > 1 {
                join_grace(&self.config)
            } else {
                Duration::ZERO
            };
            let handle = controller_actor::start(
                self.home()?,
                &self.supervision,
                self.layer.clone(),
                controller_settings(&self.config),
                direct,
                grace,
            )?;
            self.controller = Some(handle);
            self.start_fallback_directors().await?;
        }
        if n.roles.contains(&Role::Replicator) {
            self.start_replicator().await?;
        }
        Ok(())
    }

    /// The Replicator, over the layer's point-to-point streams; its generation goes into
    /// the Reporter's reports when this node also reports.
    async fn start_replicator(&mut self) -> Result<(), RunError> {
        let settings = replicator_settings(&self.config, &self.name)?;
        let streams =
            replicator_streams(&self.config, &self.name, self.layer.peer_streams()).await?;
        let actor = replicator_shell::start(
            self.home()?,
            &self.supervision,
            self.layer.clone(),
            streams,
            settings,
        );
        let status = actor.watch();
        self.replicator_actor = Some(actor);
        if let Some(reporter) = self.reporter.clone() {
            let mut rx = status.clone();
            let mut stop = self.stop.subscribe();
            self.spawn("replicator generation", async move {
                loop {
                    let g = rx.borrow_and_update().generation;
                    reporter.set_generation(g);
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(()),
                        r = rx.changed() => if r.is_err() { return Ok(()) },
                    }
                }
            });
        }
        self.replicator = Some(status);
        Ok(())
    }

    /// `area`'s writer election: its configured Directors, and the watch of its writer.
    fn election(
        &self,
        area: &AreaName,
    ) -> (director::actor::Election, watch::Receiver<Option<String>>) {
        let directors = self
            .config
            .nodes
            .iter()
            .filter(|(_, n)| n.roles.contains(&Role::Director) && n.area.as_ref() == Some(area))
            .map(|(name, _)| name.clone())
            .collect();
        let (tx, rx) = watch::channel(None);
        (
            director::actor::Election {
                area: area.clone(),
                directors,
                writer: tx,
            },
            rx,
        )
    }

    /// A driver's writer flag: `decide(writer, is_master)` recomputed whenever the area's
    /// writer changes or (with `master`) this node's Controller gains or loses mastership.
    fn writer_flag(
        &mut self,
        mut writer: watch::Receiver<Option<String>>,
        decide: impl Fn(&Option<String>, Option<&ControllerStatus>) -> bool + Send + 'static,
        master: Option<watch::Receiver<ControllerStatus>>,
    ) -> watch::Receiver<bool> {
        let now = move |w: &watch::Receiver<Option<String>>,
                        m: &Option<watch::Receiver<ControllerStatus>>| {
            let status = m.as_ref().map(|m| m.borrow().clone());
            decide(&w.borrow(), status.as_ref())
        };
        let mut master = master;
        let (tx, rx) = watch::channel(now(&writer, &master));
        let mut stop = self.stop.subscribe();
        self.spawn("director writer flag", async move {
            loop {
                let new = now(&writer, &master);
                tx.send_if_modified(|v| std::mem::replace(v, new) != new);
                let master_changed = async {
                    match master.as_mut() {
                        Some(m) => {
                            if m.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    r = writer.changed() => if r.is_err() { return Ok(()) },
                    _ = master_changed => {}
                }
            }
        });
        rx
    }

    /// On a Controller node with an RFC 2136 backend in `director` mode: for every area
    /// this node is no Director of and whose TSIG key is on this host, a fallback
    /// Director that writes the area's name server while no Director of the area is in
    /// this component and this node's Controller is master (see `director::actor`).
    async fn start_fallback_directors(&mut self) -> Result<(), RunError> {
        if self.config.dns.backend != DnsBackend::Rfc2136
            || self.config.dns.mode != DnsMode::Director
        {
            return Ok(());
        }
        let Some(master) = self.controller.as_ref().map(|c| c.watch()) else {
            return Ok(());
        };
        let areas: Vec<AreaName> = self.config.areas.keys().cloned().collect();
        for area in areas {
            if self.directors.contains_key(&area) {
                continue;
            }
            let ns = match rfc2136_updater(&self.config, &area) {
                Ok(ns) => ns,
                Err(e) => {
                    tracing::info!(%area, error = %e, "no fallback writer for this area on this node (its TSIG key is not here)");
                    continue;
                }
            };
            let (election, rx) = self.election(&area);
            // The area's home servers, from the running file (a reload may change them).
            let config = self.config_tx.subscribe();
            let area_of_flag = area.clone();
            let home = move || -> Vec<ServerName> {
                let c = config.borrow();
                c.areas
                    .get(&area_of_flag)
                    .and_then(|a| c.clusters.get(&a.home_cluster))
                    .map(|cl| cl.servers.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let flag = self.writer_flag(
                rx,
                move |w, master| {
                    w.is_none()
                        && master.is_some_and(|m| {
                            m.is_master && fallback_may_write(&home(), m.last_round.as_ref())
                        })
                },
                Some(master.clone()),
            );
            let tx = self.start_driver(&area, ns, None, Some(flag), false);
            tracing::info!(%area, "fallback writer ready: writes the area's name server while this node is master and no Director of the area is in the view, as long as it hears from some server of the area's home cluster");
            self.start_director_actor(tx, Some(election));
        }
        Ok(())
    }

    /// The Director of `area` beside its name server: the embedded server (bound on the
    /// area's `name_server` address) or an RFC 2136 updater, and the driver (writing
    /// while `writer` says so, when given).
    async fn start_area_director(
        &mut self,
        area: &AreaName,
        writer: Option<watch::Receiver<bool>>,
    ) -> Result<mpsc::Sender<Decision>, RunError> {
        match self.config.dns.backend {
            DnsBackend::Embedded => {
                let layout = zone_layout(&self.config, area)?;
                let file = state_file(&self.config, area);
                if let Some(dir) = file.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        director_error(area, format!("state dir {}: {e}", dir.display()))
                    })?;
                }
                let server = EmbeddedServer::open_or(
                    area.clone(),
                    layout,
                    file,
                    initial_answer(&self.config, area),
                )
                .map_err(|e| director_error(area, e))?;
                server.set_steering(
                    steering(&self.config)
                        .map_err(|e| director_error(area, format!("dns.steering: {e}")))?,
                );
                let listen = self.config.areas[area].name_server;
                let listening = server
                    .bind(listen)
                    .await
                    .map_err(|e| director_error(area, e))?;
                let addr = listening.local_addr();
                tracing::info!(%area, %addr, "embedded name server listening");
                let stop = self.shutdown_signal();
                self.spawn("embedded dns", async move {
                    listening.run(stop).await;
                    Ok(())
                });
                Ok(self.start_driver(area, server.clone(), Some((server, addr)), None, false))
            }
            DnsBackend::Rfc2136 => {
                let ns = rfc2136_updater(&self.config, area)?;
                Ok(self.start_driver(area, ns, None, writer, false))
            }
        }
    }

    fn start_driver<N: NameServer + Clone + 'static>(
        &mut self,
        area: &AreaName,
        ns: N,
        embedded: Option<(EmbeddedServer, SocketAddr)>,
        writer: Option<watch::Receiver<bool>>,
        direct: bool,
    ) -> mpsc::Sender<Decision> {
        let ttl = RecordTtl::try_from(self.config.dns.ttl).unwrap_or_default();
        let core = DirectorCore::new(
            AreaDirector {
                area: area.clone(),
                ttl,
            },
            ns.describe(),
            DirectorCoreConfig {
                // The master's direct updaters get only the answers that changed: each
                // must be applied at once (a Director fed every decision confirms first).
                confirm_after_start: if direct {
                    0
                } else {
                    DirectorCoreConfig::default().confirm_after_start
                },
                ..DirectorCoreConfig::default()
            },
        );
        let (tx, rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(core.status().clone());
        let stop = self.shutdown_signal();
        self.spawn("director driver", async move {
            director::driver::run_with_writer(
                ns,
                core,
                RetryPolicy::default(),
                rx,
                writer,
                status_tx,
                stop,
            )
            .await;
            Ok(())
        });
        self.directors.insert(
            area.clone(),
            DirectorView {
                status: status_rx,
                embedded,
            },
        );
        tx
    }

    fn home(&self) -> Result<&ActorHome, RunError> {
        self.home.as_ref().ok_or_else(|| RunError::Actors {
            node: self.name.clone(),
            source: std::io::Error::other("the actor system has stopped"),
        })
    }

    fn start_director_actor(
        &mut self,
        decisions: mpsc::Sender<Decision>,
        election: Option<director::actor::Election>,
    ) {
        let Some(home) = self.home.as_ref() else {
            return;
        };
        let actor = director::actor::start(
            home,
            &self.supervision,
            self.layer.clone(),
            decisions,
            election,
        );
        self.director_actors.push(actor);
    }

    fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn spawn(
        &mut self,
        what: &'static str,
        f: impl Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let node = self.name.clone();
        self.tasks.push((
            what,
            tokio::spawn(async move {
                if let Err(e) = f.await {
                    tracing::error!(%node, role = what, error = %e, "role stopped");
                }
            }),
        ));
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The group layer (e.g. the [`Gcs`] node, for its view).
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The group layer, shared (e.g. for the status page's sampler).
    pub fn shared_layer(&self) -> Arc<L> {
        self.layer.clone()
    }

    /// The role actors' supervision record (restarts, mailboxes; `/metrics`).
    pub fn supervision(&self) -> &Supervision {
        &self.supervision
    }

    /// Completes with the node's failure once a role went over its restart limit.
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let mut rx = self.supervision.failed();
        async move {
            let failure = match rx.wait_for(Option::is_some).await {
                Ok(f) => f.clone(),
                Err(_) => None,
            };
            match failure {
                Some(f) => f,
                None => std::future::pending().await,
            }
        }
    }

    /// The Reporter's actor, if this node runs one.
    pub fn reporter_actor(&self) -> Option<&ReporterActor> {
        self.reporter_actor.as_ref()
    }

    /// The Director actors (this node's area Director, and fallback writers).
    pub fn director_actors(&self) -> &[director::actor::DirectorActor] {
        &self.director_actors
    }

    /// The Controller, if this node runs one.
    pub fn controller(&self) -> Option<&ControllerHandle> {
        self.controller.as_ref()
    }

    /// The Reporter, if this node runs one.
    pub fn reporter(&self) -> Option<&ReporterHandle> {
        self.reporter.as_ref()
    }

    /// The Replicator's actor, if this node runs one.
    pub fn replicator_actor(&self) -> Option<&ReplicatorActor> {
        self.replicator_actor.as_ref()
    }

    /// The Replicator's status, if this node runs one.
    pub fn replicator(&self) -> Option<&watch::Receiver<ReplicatorStatus>> {
        self.replicator.as_ref()
    }

    /// The Directors (one in Directors mode; one per area on a direct-mode Controller).
    pub fn directors(&self) -> &BTreeMap<AreaName, DirectorView> {
        &self.directors
    }

    /// Each node's config digest as this node knows it (announced on `Nodes`).
    pub fn digests(&self) -> watch::Receiver<Digests> {
        self.digests.clone()
    }

    /// The configuration in force, watched (it changes on a reload).
    pub fn watch_config(&self) -> watch::Receiver<Config> {
        self.config_tx.subscribe()
    }

    /// Applies `new` as a whole (see [`plan_reload`] for what may change), or refuses it
    /// with every reason and keeps the running configuration: nothing is applied unless
    /// everything can be. The Controller gets the new topology (from its next round), the
    /// embedded name servers the new site-zone delegations, the group layer the new peers
    /// (once every node runs this file, see [`admit_peers`]), the status page the new
    /// areas, clusters, servers and digest.
    pub async fn reload(&mut self, new: &Config) -> Result<ReloadReport, RunError> {
        let applied = plan_reload(&self.config, new, &self.name).map_err(|reasons| {
            RunError::ReloadRefused {
                node: self.name.clone(),
                reasons,
            }
        })?;
        // Everything that can fail is prepared before anything is applied.
        let settings = controller_settings(new);
        settings
            .round
            .validate()
            .map_err(controller_actor::ControllerError::from)?;
        let mut layouts = Vec::new();
        for (area, view) in &self.directors {
            if let Some((server, _)) = &view.embedded {
                if new.areas.contains_key(area) {
                    layouts.push((server.clone(), zone_layout(new, area)?));
                }
            }
        }
        if let Some(c) = &self.controller {
            c.reconfigure(settings).await?;
        }
        for (server, layout) in layouts {
            if let Err(e) = server.set_layout(layout) {
                // Cannot happen: the plan refuses a change of the site or the area's zone.
                tracing::error!(error = %e, "zone layout not changed");
            }
        }
        for area in new.areas.keys() {
            if !self.config.areas.contains_key(area) && !self.directors.contains_key(area) {
                tracing::info!(%area, "area added: served by its own Directors; this node's Controller assigns it from its next round");
            }
        }
        self.config = new.clone();
        self.config_tx.send_replace(new.clone());
        tracing::info!(node = %self.name, digest = %new.digest, applied = ?applied, "configuration reloaded");
        Ok(ReloadReport { applied })
    }

    /// Stops cleanly: every role leaves its group and closes its session, then the group
    /// layer shuts down (peers are told).
    pub async fn stop(mut self) {
        self.supervision.close();
        let leave = Duration::from_secs(5);
        if let Some(c) = &self.controller {
            let _ = tokio::time::timeout(leave, c.shutdown()).await;
        }
        if let Some(r) = &self.reporter_actor {
            let _ = tokio::time::timeout(leave, r.shutdown()).await;
        }
        for d in &self.director_actors {
            let _ = tokio::time::timeout(leave, d.shutdown()).await;
        }
        if let Some(r) = &self.replicator_actor {
            let _ = tokio::time::timeout(leave, r.role().shutdown()).await;
        }
        if let Some(home) = self.home.take() {
            home.stop();
        }
        let _ = self.stop.send(true);
        for (what, task) in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!(node = %self.name, role = what, "did not stop in 5 s; aborted");
                abort.abort();
            }
        }
        self.layer.shutdown().await;
        tracing::info!(node = %self.name, "node stopped");
    }

    /// Stops without goodbye: every task is aborted at once, nothing is sent. The caller
    /// crashes the group layer first when it can (see [`crate::cluster`]), so that peers
    /// see a failure rather than a departure.
    pub fn abort(mut self) -> Arc<L> {
        self.supervision.close();
        if let Some(home) = self.home.take() {
            home.stop();
        }
        for (_, task) in &self.tasks {
            task.abort();
        }
        self.layer
    }
}

/// Keeps the group layer's peers in step with the configuration in force, once it is
/// safe: every other node the file names that is in the group (a member of `Nodes`) runs
/// the same file (announces the same digest).
///
/// Why wait: the transport admits only configured peers (mutual TLS names them), so a
/// node listed by some members and not by others is connected to part of the group only.
/// The membership protocol then sees a view that is not a clique of the connectivity
/// matrix, and a newcomer's proposals can pull members out of the running view: the view
/// flaps, rounds lose their reports, and areas may move for nothing. Applying the change
/// when every member lists the same nodes makes it one clean view change. Meanwhile the
/// Controller already runs the new topology (the master decides with its own file), a new
/// node waits alone, and a removed one stays until the last file is pushed. A digest that
/// differs for another reason (any edit) also holds the change back; the log says who.
pub async fn admit_peers<L: GroupLayer>(
    layer: Arc<L>,
    me: String,
    mut config: watch::Receiver<Config>,
    mut digests: watch::Receiver<Digests>,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut applied = {
        let c = config.borrow_and_update();
        peer_addresses(&c, &me)
    };
    let mut waiting_for: Vec<String> = Vec::new();
    tokio::pin!(stop);
    loop {
        let (target, listed, digest) = {
            let c = config.borrow_and_update();
            (
                peer_addresses(&c, &me),
                c.nodes.keys().cloned().collect::<Vec<_>>(),
                c.digest.clone(),
            )
        };
        if target != applied {
            let d = digests.borrow_and_update().clone();
            // Only members that announced the file this node runs count as having it.
            let others = d
                .members
                .iter()
                .filter(|n| **n != me && listed.contains(*n))
                .map(String::as_str);
            let late = d.disagreeing(others);
            if d.mine != digest {
                // This node's own announcement of the reloaded file is on its way: the
                // digests change again in a moment.
            } else if late.is_empty() {
                match layer.set_peers(&target).await {
                    Ok(()) => {
                        let names: Vec<&str> = target.iter().map(|(n, _)| n.as_str()).collect();
                        tracing::info!(peers = ?names, "group peers changed: every node in the group runs this file");
                        applied = target;
                        waiting_for.clear();
                    }
                    Err(e) => tracing::error!(error = %e, "group peers not changed"),
                }
            } else if late != waiting_for {
                tracing::info!(nodes = ?late, "the group's peers change once these nodes run this file (their config digest differs)");
                waiting_for = late;
            }
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            r = config.changed() => if r.is_err() { return Ok(()) },
            r = digests.changed() => if r.is_err() { return Ok(()) },
        }
    }
}

/// Runs node `node` of `config` over walrus-gcs until `shutdown` completes, then stops it
/// cleanly. The binary's `walrus-node run` uses [`start`] directly (it also reloads).
pub async fn run(
    config: Config,
    node: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let rt = start(&config, node).await?;
    shutdown.await;
    rt.stop().await;
    Ok(())
}

/// Starts walrus-gcs with the node's certificate, then the node's roles.
pub async fn start(config: &Config, node: &str) -> Result<NodeRuntime<Gcs>, RunError> {
    let gcs = Gcs::start(gcs_config(config, node)?)
        .await
        .map_err(|source| RunError::Gcs {
            node: node.to_owned(),
            source,
        })?;
    NodeRuntime::start(config, node, gcs).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const EXAMPLE: &str = include_str!("../../config/walrus.toml");

    fn example() -> Config {
        Config::from_toml(Path::new("walrus.toml"), EXAMPLE).unwrap()
    }

    #[test]
    fn round_config_takes_timings_parameters_and_dead_after() {
        let text = EXAMPLE
            .replace("round_period = \"1s\"", "round_period = \"2s\"")
            .replace("report_timeout = \"400ms\"", "report_timeout = \"700ms\"")
            .replace("threshold = 0.8", "threshold = 0.7")
            .replace("margin = 0.2", "margin = 0.3")
            .replace("max_records = 20", "max_records = 5")
            .replace("dead_after = \"5m\"", "dead_after = \"90s\"");
        let c = Config::from_toml(Path::new("w.toml"), &text).unwrap();
        let r = round_config(&c);
        assert_eq!(r.round_period, Duration::from_secs(2));
        assert_eq!(r.report_timeout, Duration::from_millis(700));
        assert_eq!(r.params.threshold, 0.7);
        assert_eq!(r.params.margin, 0.3);
        assert_eq!(r.params.max_records, 5);
        assert_eq!(r.params.dead_after, Duration::from_secs(90));
        assert_eq!(
            r.params.return_margin,
            walrus_actors::controller::assign::Params::default().return_margin
        );
        assert!(r.fast_failover);
        r.validate().unwrap();
        // fast_failover = false: no early rounds, no probe in the Reporter.
        let off = EXAMPLE.replace("fast_failover = true", "fast_failover = false");
        let c = Config::from_toml(Path::new("w.toml"), &off).unwrap();
        assert!(!round_config(&c).fast_failover);
        assert_eq!(reporter_config(&c, "eu-a").unwrap().fast_failover, None);
        assert!(reporter_config(&example(), "eu-a")
            .unwrap()
            .fast_failover
            .is_some());
    }

    #[test]
    fn reporter_config_follows_the_nodes_server() {
        let c = example();
        let r = reporter_config(&c, "eu-a").unwrap();
        assert_eq!(r.server.0, "eu-1");
        assert_eq!(
            r.web,
            WebSource::Nginx {
                url: "http://127.0.1.1:8080/nginx_status".into(),
                max_workers: 1024
            }
        );
        assert_eq!(r.interval, Duration::from_secs(1));
        assert_eq!(r.bypass_file, PathBuf::from("/var/lib/walrus/bypass"));
        let r = reporter_config(&c, "eu-b").unwrap();
        assert!(matches!(r.web, WebSource::Apache { .. }));
        let r = reporter_config(&c, "us-b").unwrap();
        assert!(matches!(
            r.web,
            WebSource::Probe {
                max_workers: 512,
                ..
            }
        ));
        assert!(reporter_config(&c, "nobody").is_err());
    }

    #[test]
    fn zone_layout_and_initial_answer_of_an_area() {
        let c = example();
        let eu = AreaName::from("eu");
        let l = zone_layout(&c, &eu).unwrap();
        assert_eq!(l.site.to_ascii(), "example.com.");
        assert_eq!(l.area_zone.to_ascii(), "area-eu.example.com.");
        assert_eq!(l.ns_name.to_ascii(), "ns.area-eu.example.com.");
        assert_eq!(
            l.ns_addrs,
            vec!["127.0.0.11".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(l.ttl.secs(), 30);
        // NS records live long; every area's server is listed for the site zone.
        assert_eq!(l.ns_ttl.secs(), 3600);
        let mut others: Vec<String> = l
            .other_areas
            .iter()
            .map(|a| format!("{} {} {:?}", a.zone, a.ns_name, a.ns_addrs))
            .collect();
        others.sort();
        assert_eq!(
            others,
            vec![
                "area-asia.example.com. ns.area-asia.example.com. [127.0.0.13]",
                "area-us.example.com. ns.area-us.example.com. [127.0.0.12]"
            ]
        );
        let w = initial_answer(&c, &eu);
        assert_eq!(w.v4.len(), 2, "{w:?}");
        assert_eq!(
            state_file(&c, &eu),
            PathBuf::from("/var/lib/walrus/dns/eu.state")
        );
        assert!(zone_layout(&c, &AreaName::from("mars")).is_err());
    }

    #[test]
    fn steering_and_published_ns_addresses_reach_the_embedded_server() {
        assert!(steering(&example()).unwrap().is_empty());
        let text = EXAMPLE
            .replace(
                "state_dir = \"/var/lib/walrus/dns\"",
                "state_dir = \"/var/lib/walrus/dns\"\nsteering = [{ source = \"10.1.0.0/16\", area = \"us\" }]",
            )
            .replace(
                "home_cluster = \"c-eu\"",
                "home_cluster = \"c-eu\"\nns_addresses = [\"192.0.2.53\"]",
            );
        let c = Config::from_toml(Path::new("w.toml"), &text).unwrap();
        let s = steering(&c).unwrap();
        assert_eq!(
            s.target_for("10.1.2.3".parse().unwrap())
                .map(|n| n.to_ascii()),
            Some("area-us.example.com.".to_owned())
        );
        assert_eq!(s.target_for("10.2.0.1".parse().unwrap()), None);
        let l = zone_layout(&c, &AreaName::from("eu")).unwrap();
        assert_eq!(
            l.ns_addrs,
            vec!["192.0.2.53".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn controller_settings_carry_topology_and_notify() {
        let text = EXAMPLE
            .replace(
                "# webhook = \"https://hooks.slack.com/services/T000/B000/XXXX\"",
                "webhook = \"http://127.0.0.1:9099/walrus\"",
            )
            .replace("# webhook_body = '{\"text\"", "webhook_body = '{\"text\"");
        let c = Config::from_toml(Path::new("w.toml"), &text).unwrap();
        let s = controller_settings(&c);
        assert_eq!(s.topology.areas.len(), 3);
        assert_eq!(s.notify.site, "example.com");
        assert_eq!(
            s.notify.webhook.as_deref(),
            Some("http://127.0.0.1:9099/walrus")
        );
        assert_eq!(
            s.notify.webhook_body.as_deref(),
            Some("{\"text\": \"Walrus: {summary}\"}")
        );
    }

    #[test]
    fn a_reload_applies_topology_and_refuses_this_nodes_own_identity_whole() {
        let old = example();
        let added = EXAMPLE.to_owned()
            + "\n[clusters.c-eu.servers.eu-3]\naddresses = [\"127.0.1.3\"]\nstatus = \"probe\"\n\
               status_url = \"http://127.0.1.3:8080/\"\n\
               [areas.sa]\nzone = \"area-sa.example.com\"\nname_server = \"127.0.0.14:53\"\n\
               home_cluster = \"c-sa\"\n\
               [clusters.c-sa.servers.sa-1]\naddresses = [\"127.0.4.1\"]\nstatus = \"probe\"\n\
               status_url = \"http://127.0.4.1:8080/\"\n\
               [nodes.eu-c]\naddress = \"127.0.1.3:7400\"\nroles = [\"reporter\"]\nserver = \"eu-3\"\n";
        let new = Config::from_toml(Path::new("w.toml"), &added).unwrap();
        let applied = plan_reload(&old, &new, "eu-a").unwrap();
        assert_eq!(
            applied,
            vec![
                "area sa added",
                "cluster c-eu changed",
                "cluster c-sa added",
                "server eu-3 added",
                "server sa-1 added",
                "node eu-c added"
            ]
        );
        // And back: everything removed again.
        let back = plan_reload(&new, &old, "eu-a").unwrap();
        assert!(back.contains(&"node eu-c removed".to_owned()), "{back:?}");
        // This node's own address, its area's name server, the site, [tls]: all refused at
        // once, with the reasons.
        let text = added
            .replace(
                "address = \"127.0.1.1:7400\"",
                "address = \"127.0.1.1:7401\"",
            )
            .replace(
                "name_server = \"127.0.0.11:53\"",
                "name_server = \"127.0.0.11:5353\"",
            )
            .replace("site = \"example.com\"", "site = \"example.org\"")
            .replace(
                "ca = \"/etc/walrus/certs/ca.pem\"",
                "ca = \"/etc/walrus/ca.pem\"",
            );
        let bad = Config::from_toml(Path::new("w.toml"), &text).unwrap();
        let reasons = plan_reload(&old, &bad, "eu-a").unwrap_err();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].starts_with("site"), "{reasons:?}");
        assert!(reasons[1].starts_with("[tls]"), "{reasons:?}");
        assert!(reasons[2].starts_with("[nodes.eu-a]"), "{reasons:?}");
        assert!(
            reasons[3].starts_with("area eu: this node is its Director"),
            "{reasons:?}"
        );
        // Another node's address and another area's name server are live changes.
        let other = EXAMPLE
            .replace(
                "address = \"127.0.2.2:7400\"",
                "address = \"127.0.2.2:7401\"",
            )
            .replace(
                "name_server = \"127.0.0.12:53\"",
                "name_server = \"127.0.0.12:5353\"",
            );
        let other = Config::from_toml(Path::new("w.toml"), &other).unwrap();
        assert_eq!(
            plan_reload(&old, &other, "eu-a").unwrap(),
            vec!["area us changed", "node us-b changed"]
        );
        // With dns.mode = "direct" a Controller cannot add areas live (its updaters are
        // made at start); a node without a Controller can.
        let (mut a, mut b) = (old.clone(), new.clone());
        a.dns.mode = DnsMode::Direct;
        b.dns.mode = DnsMode::Direct;
        let r = plan_reload(&a, &b, "eu-a").unwrap_err();
        assert!(r[0].contains("direct"), "{r:?}");
        assert!(plan_reload(&a, &b, "eu-b").is_ok());
    }

    #[test]
    fn gcs_config_names_missing_certificates() {
        let c = example();
        let Err(e) = gcs_config(&c, "eu-a") else {
            panic!("no certificates exist at /etc/walrus/certs here")
        };
        assert!(e.to_string().contains("node eu-a: TLS"), "{e}");
    }

    #[test]
    fn gcs_config_lists_every_other_node_as_peer() {
        let dir = std::env::temp_dir().join(format!("walrus-rt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        certs::write_new_ca(&dir).unwrap();
        certs::write_node_cert(&dir, "eu-a").unwrap();
        let mut c = example();
        c.tls.ca = dir.join("ca.pem");
        c.tls.dir = dir.clone();
        let g = gcs_config(&c, "eu-a").unwrap();
        assert_eq!(g.transport.me, NodeId::new("eu-a"));
        assert_eq!(g.transport.peers.len(), 5);
        assert!(g.transport.peers.iter().all(|(n, _)| n.as_str() != "eu-a"));
        assert_eq!(g.core, CoreConfig::lan());
        assert_eq!(g.transport.limits, Limits::lan());
        // The WAN profile lengthens the transport's timeouts too, not only the core's.
        c.timing.gcs_profile = GcsProfile::Wan;
        let g = gcs_config(&c, "eu-a").unwrap();
        assert_eq!(g.core, CoreConfig::wan());
        assert_eq!(g.transport.limits, Limits::wan());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
