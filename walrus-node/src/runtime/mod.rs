//! The node runtime: from the validated [`Config`] and a node name to the running roles of
//! that node over one group-communication layer.
//!
//! ```text
//!  Config ─┬─ gcs_config ───────────▶ walrus_gcs::Gcs (QUIC, mutual TLS from tls.dir)
//!          ├─ controller_settings ──▶ controller::start (joins Controllers)
//!          ├─ reporter_config ──────▶ reporter::start (gatherer + actor; joins Reporters)
//!          ├─ replicator_settings ──▶ replicator::start (joins Replicators; transfers on
//!          │                           the gcs point-to-point streams); its generation
//!          │                           goes into this node's Reporter's reports
//!          └─ director_settings ────▶ director::start (its name server, driver and
//!                                      actor; joins Directors)
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
//!
//! Members and clients (`tier` in the file): a member runs a walrus-gcs node ([`start`];
//! with `client_port` it also serves clients); a client node ([`start_client`]) attaches
//! to the first member of its `attach` list that admits it (walrus-gcs' client tier,
//! through [`ClientLayer`]) and runs its Reporter and replica there, failing over to the
//! next member when the link ends. What a client node does not do, because membership
//! lists and message senders name the member it attaches through, not the client: it
//! does not announce its config digest on `Nodes` (the members' digest tables, peer
//! admission and `/status` list members only; its own `/status` shows its own digest), it
//! admits no peers (it has none; its attach list is its own entry, which a reload cannot
//! change), and it runs no Controller, Director or Replicator primary (the file refuses
//! them). Its replica pulls over TLS/TCP (`[replicator] transport = "tls-tcp"`).
//!
//! Files: `settings` (config → each role's settings, pure), `reload` ([`plan_reload`]),
//! `peers` ([`admit_peers`]), and here the running node ([`NodeRuntime`], [`run`], [`start`]).

use crate::config::{
    gcs_name, Area, Config, ConfigError, DnsBackend, DnsMode, GcsProfile, ReplicationMethod, Role,
    StatusKind, TransferTransport,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use walrus_actors::controller;
use walrus_actors::controller::actor::{
    self as controller_actor, ControllerHandle, ControllerSettings, DirectDrivers,
};
use walrus_actors::controller::notify::NotifyConfig;
use walrus_actors::controller::round::RoundConfig;
use walrus_actors::digests::{self, Digests};
use walrus_actors::director::core::{ApplyTiming, DirectorStatus};
use walrus_actors::director::embedded::EmbeddedServer;
use walrus_actors::director::retry::RetryPolicy;
use walrus_actors::director::rfc2136::{Rfc2136Config, TsigKey};
use walrus_actors::director::steering::Steering;
use walrus_actors::director::zone::{fqdn, AreaServer, RecordTtl, WwwRecords, ZoneLayout};
use walrus_actors::director::{
    self, DirectorSettings, EmbeddedSettings, NameServerSettings, RunningDirector, Writes,
};
use walrus_actors::group::client::ClientLayer;
use walrus_actors::group::{GroupLayer, PeerStreams};
use walrus_actors::model::{AreaName, ClusterName, ServerName};
use walrus_actors::replicator::actor::{
    BackoffConfig, ReplicatorRole, ReplicatorSettings, ReplicatorStatus, TransferMethod,
};
use walrus_actors::replicator::watcher::WatchConfig;
use walrus_actors::replicator::{self, shell::ReplicatorActor};
use walrus_actors::reporter::actor::ReporterActor;
use walrus_actors::reporter::{self, ReporterConfig, ReporterHandle, WebSource};
use walrus_actors::supervision::{ActorHome, RestartLimit, Supervision};
use walrus_gcs::tier::ClientLinkConfig;
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
    /// A Director's settings are invalid or its name server could not be set up.
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

impl From<director::SettingsError> for RunError {
    fn from(e: director::SettingsError) -> Self {
        RunError::Director {
            area: e.area,
            detail: e.detail,
        }
    }
}

mod peers;
mod reload;
mod settings;
#[cfg(test)]
mod tests;

pub use peers::*;
pub use reload::*;
pub use settings::*;

// ----------------------------------------------------------------------------------------
// The running node.

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
        let id = NodeId::new(node);
        let home = ActorHome::start(&id).map_err(|source| RunError::Actors {
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
            supervision: Supervision::new(&id, limit, tokio::runtime::Handle::current()),
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
        if rt.config.node(node)?.is_member() {
            rt.start_digests();
        } else {
            // A client's session on `Nodes` would be listed as its member's (see the module
            // doc): it keeps its own digest to itself.
            let mine = rt.config.digest.clone();
            let digests = Digests {
                mine: mine.clone(),
                nodes: [(node.to_owned(), mine)].into(),
                members: BTreeSet::new(),
            };
            rt.digests = watch::channel(digests).1;
        }
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
        let me = NodeId::new(self.name.as_str());
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
                let writes = match self.config.dns.backend {
                    DnsBackend::Rfc2136 => Writes::Elected {
                        me: NodeId::new(self.name.as_str()),
                        directors: director_nodes(&self.config, area),
                    },
                    DnsBackend::Embedded => Writes::Always,
                };
                let settings = director_settings(&self.config, area)?;
                self.start_director(settings, writes).await?;
            }
        }
        if n.roles.contains(&Role::Reporter) {
            let running = reporter::start(
                self.home()?,
                &self.supervision,
                self.layer.clone(),
                reporter_config(&self.config, &self.name)?,
                self.shutdown_signal(),
            )?;
            self.tasks.push(("reporter gatherer", running.gatherer));
            self.reporter_actor = Some(running.actor);
            self.reporter = Some(running.handle);
        }
        if n.roles.contains(&Role::Controller) {
            let mut direct = DirectDrivers::new();
            if self.config.dns.mode == DnsMode::Direct {
                let areas: Vec<AreaName> = self.config.areas.keys().cloned().collect();
                for area in areas {
                    let settings = director_settings(&self.config, &area)?;
                    let (tx, running) =
                        director::start_direct(settings, self.stop.subscribe()).await?;
                    self.adopt(running);
                    direct.insert(area, tx);
                }
            }
            let grace = if self.config.nodes.len() > 1 {
                join_grace(&self.config)
            } else {
                Duration::ZERO
            };
            let join = controller::actor::JoinWait {
                grace,
                peers: peer_addresses(&self.config, &self.name)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            };
            let handle = controller::start(
                self.home()?,
                &self.supervision,
                self.layer.clone(),
                controller_settings(&self.config),
                direct,
                join,
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
        let actor = replicator::start(
            self.home()?,
            &self.supervision,
            self.layer.clone(),
            settings,
            streams,
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
            let settings = match director_settings(&self.config, &area) {
                Ok(s) => s,
                Err(e) => {
                    tracing::info!(%area, error = %e, "no fallback writer for this area on this node (its TSIG key is not here)");
                    continue;
                }
            };
            // The area's home servers, from the running file (a reload may change them).
            let config = self.config_tx.subscribe();
            let area_of_home = area.clone();
            let home = move || -> Vec<ServerName> {
                let c = config.borrow();
                c.areas
                    .get(&area_of_home)
                    .and_then(|a| c.clusters.get(&a.home_cluster))
                    .map(|cl| cl.servers.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let writes = Writes::Fallback {
                directors: director_nodes(&self.config, &area),
                master: master.clone(),
                home: Box::new(home),
            };
            self.start_director(settings, writes).await?;
            tracing::info!(%area, "fallback writer ready: writes the area's name server while this node is master and no Director of the area is in the view, as long as it hears from some server of the area's home cluster");
        }
        Ok(())
    }

    /// The Director of `settings.area` ([`walrus_actors::director::start`]), writing as
    /// `writes` says.
    async fn start_director(
        &mut self,
        settings: DirectorSettings,
        writes: Writes,
    ) -> Result<(), RunError> {
        let running = director::start(
            self.home()?,
            &self.supervision,
            self.layer.clone(),
            settings,
            writes,
            self.stop.subscribe(),
        )
        .await?;
        self.adopt(running);
        Ok(())
    }

    /// Keeps a started Director's tasks, actor and status.
    fn adopt(&mut self, running: RunningDirector) {
        self.tasks.extend(running.tasks);
        self.director_actors.extend(running.actor);
        self.directors.insert(
            running.area,
            DirectorView {
                status: running.status,
                embedded: running.embedded,
            },
        );
    }

    fn home(&self) -> Result<&ActorHome, RunError> {
        self.home.as_ref().ok_or_else(|| RunError::Actors {
            node: self.name.clone(),
            source: std::io::Error::other("the actor system has stopped"),
        })
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
                    layouts.push((
                        server.clone(),
                        zone_layout(new, area)?,
                        area_zones(new, area)?,
                    ));
                }
            }
        }
        if let Some(c) = &self.controller {
            c.reconfigure(settings).await?;
        }
        for (server, layout, zones) in layouts {
            if let Err(e) = server.set_layout(layout) {
                // Cannot happen: the plan refuses a change of the site or the area's zone.
                tracing::error!(error = %e, "zone layout not changed");
            }
            // Learned answers point at the areas of the new file (no-op when off).
            server.set_learned_zones(zones);
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

/// Starts walrus-gcs with the node's certificate (and its client listener when the node
/// has a `client_port`), then the node's roles. For a member; a client node starts with
/// [`start_client`].
pub async fn start(config: &Config, node: &str) -> Result<NodeRuntime<Gcs>, RunError> {
    NodeRuntime::start(config, node, member_layer(config, node).await?).await
}

/// Member `node`'s group layer: walrus-gcs with the node's certificate, and its client
/// listener when the node has a `client_port`.
pub async fn member_layer(config: &Config, node: &str) -> Result<Gcs, RunError> {
    let gcs_err = |source| RunError::Gcs {
        node: node.to_owned(),
        source,
    };
    let gcs = Gcs::start(gcs_config(config, node)?)
        .await
        .map_err(gcs_err)?;
    if let Some(addr) = config.node(node)?.client_addr() {
        let identity = match node_identity(config, node) {
            Ok(i) => i,
            Err(e) => {
                gcs.shutdown().await;
                return Err(e);
            }
        };
        match gcs.serve_clients(&identity, addr) {
            Ok(at) => tracing::info!(node = %node, %at, "serving clients"),
            Err(e) => {
                gcs.shutdown().await;
                return Err(gcs_err(e));
            }
        }
    }
    Ok(gcs)
}

/// Starts client node `node`: attaches to its members (walrus-gcs' client tier, with its
/// `client.<node>` certificate), then runs its roles over [`ClientLayer`].
pub async fn start_client(
    config: &Config,
    node: &str,
) -> Result<NodeRuntime<ClientLayer>, RunError> {
    NodeRuntime::start(config, node, client_layer(config, node).await?).await
}

/// Client `node`'s group layer: its link to the members of its `attach` list, in order.
pub async fn client_layer(config: &Config, node: &str) -> Result<ClientLayer, RunError> {
    let link = client_link_config(config, node)?;
    let members: Vec<String> = link
        .members
        .iter()
        .map(|(m, a)| format!("{m}@{a}"))
        .collect();
    let layer = ClientLayer::attach(link)
        .await
        .map_err(|source| RunError::Gcs {
            node: node.to_owned(),
            source,
        })?;
    tracing::info!(node = %node, name = %layer.name(), members = ?members, "client node: attaching to its members in this order");
    Ok(layer)
}

/// What the binary needs of a node's group layer beyond [`GroupLayer`].
pub trait NodeLayer: GroupLayer {
    /// Completes when the layer stopped for good and the process must exit (a member
    /// whose name another live process proves); pending otherwise.
    fn fatal(&self) -> impl Future<Output = String> + Send;
}

impl NodeLayer for Gcs {
    async fn fatal(&self) -> String {
        Gcs::fatal(self).await.to_string()
    }
}

/// A client re-attaches on its own (to the next member of its list) for ever.
impl NodeLayer for ClientLayer {
    async fn fatal(&self) -> String {
        std::future::pending().await
    }
}
