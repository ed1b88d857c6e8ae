//! The node runtime: from the validated [`Config`] and a node name to the running roles of
//! that node over one group-communication layer.
//!
//! ```text
//!  Config ─┬─ gcs_config ───────────▶ walrus_gcs::Gcs (QUIC, mutual TLS from tls.dir)
//!          ├─ controller_settings ──▶ controller::actor  (joins Controllers)
//!          ├─ reporter_config ──────▶ reporter::spawn + reporter::actor (joins Reporters)
//!          ├─ replicator_settings ──▶ replicator::actor (joins Replicators; transfers on
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
//! What a reload changes (safely, without touching the group or DNS): `[timing]`
//! `round_period` and `report_timeout`, the `[controller]` parameters and `[notify]`.
//! Everything else (areas, clusters, nodes, DNS, TLS, the Reporter's interval) needs a
//! restart; [`NodeRuntime::reload`] says which sections it did not apply.

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
use walrus_actors::model::{AreaName, Decision};
use walrus_actors::replicator::actor::{
    self as replicator_actor, BackoffConfig, ReplicatorRole, ReplicatorSettings, ReplicatorStatus,
    TransferMethod,
};
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

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sections applied to the running roles.
    pub applied: Vec<&'static str>,
    /// Sections that changed but need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
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
    directors: BTreeMap<AreaName, DirectorView>,
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
            directors: BTreeMap::new(),
        };
        match rt.start_roles().await {
            Ok(()) => Ok(rt),
            Err(e) => {
                rt.stop().await;
                Err(e)
            }
        }
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
        let session = self
            .layer
            .open_session()
            .await
            .map_err(|source| RunError::Gcs {
                node: self.name.clone(),
                source,
            })?;
        let (status, task) =
            replicator_actor::spawn(session, streams, settings, self.shutdown_signal());
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
        self.spawn("replicator", async move {
            match task.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
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
        decide: impl Fn(&Option<String>, bool) -> bool + Send + 'static,
        master: Option<watch::Receiver<ControllerStatus>>,
    ) -> watch::Receiver<bool> {
        let is_master = |m: &Option<watch::Receiver<ControllerStatus>>| {
            m.as_ref().is_some_and(|m| m.borrow().is_master)
        };
        let mut master = master;
        let (tx, rx) = watch::channel(decide(&writer.borrow(), is_master(&master)));
        let mut stop = self.stop.subscribe();
        self.spawn("director writer flag", async move {
            loop {
                let m = is_master(&master);
                tx.send_if_modified(|v| {
                    let new = decide(&writer.borrow(), m);
                    std::mem::replace(v, new) != new
                });
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
            let flag =
                self.writer_flag(rx, |w, master| w.is_none() && master, Some(master.clone()));
            let tx = self.start_driver(&area, ns, None, Some(flag), false);
            tracing::info!(%area, "fallback writer ready: writes the area's name server while this node is master and no Director of the area is in the view");
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

    /// The Replicator's status, if this node runs one.
    pub fn replicator(&self) -> Option<&watch::Receiver<ReplicatorStatus>> {
        self.replicator.as_ref()
    }

    /// The Directors (one in Directors mode; one per area on a direct-mode Controller).
    pub fn directors(&self) -> &BTreeMap<AreaName, DirectorView> {
        &self.directors
    }

    /// Applies what can change safely from `new` (see the module doc); refuses a file that
    /// no longer names this node, keeping the running configuration.
    pub async fn reload(&mut self, new: &Config) -> Result<ReloadReport, RunError> {
        new.node(&self.name)?;
        let old = &self.config;
        let mut report = ReloadReport::default();
        let reloadable = old.timing.round_period != new.timing.round_period
            || old.timing.report_timeout != new.timing.report_timeout;
        if reloadable {
            report.applied.push("timing");
        }
        if old.controller != new.controller {
            report.applied.push("controller");
        }
        if old.notify != new.notify {
            report.applied.push("notify");
        }
        let restart = [
            ("site", old.site != new.site),
            (
                "timing (report_interval, gcs_profile, fast_failover for the Reporter)",
                old.timing.report_interval != new.timing.report_interval
                    || old.timing.gcs_profile != new.timing.gcs_profile
                    || old.timing.fast_failover != new.timing.fast_failover,
            ),
            ("dns", old.dns != new.dns),
            ("reporter", old.reporter != new.reporter),
            ("tls", old.tls != new.tls),
            ("areas", old.areas != new.areas),
            ("clusters", old.clusters != new.clusters),
            ("nodes", old.nodes != new.nodes),
            ("replicator", old.replicator != new.replicator),
        ];
        report.needs_restart = restart
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(s, _)| *s)
            .collect();
        // Keep the running topology: areas and clusters change only with a restart, so
        // the Controller's view stays consistent with the Reporters and Directors.
        let mut applied = self.config.clone();
        applied.timing.round_period = new.timing.round_period;
        applied.timing.report_timeout = new.timing.report_timeout;
        applied.controller = new.controller.clone();
        applied.notify = new.notify.clone();
        if let Some(c) = &self.controller {
            let settings = controller_settings(&applied);
            settings
                .round
                .validate()
                .map_err(controller_actor::ControllerError::from)?;
            c.reconfigure(settings).await?;
        }
        self.config = applied;
        Ok(report)
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
