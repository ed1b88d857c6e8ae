//! An in-process launcher for a whole deployment on loopback: every node of a [`Config`]
//! in one process, each with its own group-communication node and its own roles, each
//! individually stoppable. For the demo and for tests.
//!
//! ```text
//!  Config (loopback addresses) + temp dir
//!    │  prepare: CA and one certificate per node in DIR/certs,
//!    │           per-node state in DIR/state/NODE/{dns/, bypass}
//!    ▼
//!  Cluster::start ──▶ for each node: Layers::start (a walrus-gcs node over QUIC; with
//!                     TieredLayers a client link for a `tier = "client"` node; or the
//!                     in-process bus) ──▶ NodeRuntime::start (its roles)
//!
//!  stop_node(N)  clean: roles leave their groups, the gcs node says goodbye
//!  kill_node(N)  crash: links cut first (walrus-gcs's partition switch), tasks aborted,
//!                nothing sent
//!  start_node(N) again: a new incarnation
//! ```
//!
//! Example (with the real group layer):
//!
//! ```no_run
//! # async fn demo(config: walrus_node::config::Config) -> Result<(), walrus_node::runtime::RunError> {
//! use walrus_node::cluster::{Cluster, QuicLayers};
//! let dir = std::env::temp_dir().join("walrus-demo");
//! let mut cluster = Cluster::start(config, &dir, QuicLayers).await?;
//! cluster.kill_node("eu-a").await;          // the master, say
//! cluster.start_node("eu-a").await?;        // it comes back as a backup
//! cluster.stop_all().await;
//! # Ok(()) }
//! ```
//!
//! The [`Config`] must use free loopback ports: [`free_dns_port`] (a node's address, an
//! area's embedded name server: UDP and TCP) and [`free_udp_port`] (a client listener) help
//! build one.

use crate::config::Config;
use crate::runtime::{NodeRuntime, RunError};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use walrus_actors::group::tiered::TierLayer;
use walrus_actors::group::GroupLayer;
use walrus_gcs::loopback;
use walrus_gcs::transport::{certs, Transport};
use walrus_gcs::{Gcs, PeerMessage};

/// How the launcher makes each node's group layer, and crashes it.
pub trait Layers: Send + Sync + 'static {
    /// One node's layer.
    type Layer: GroupLayer;

    /// Starts node `node`'s layer.
    fn start(
        &self,
        config: &Config,
        node: &str,
    ) -> impl Future<Output = Result<Self::Layer, RunError>> + Send;

    /// Makes `layer` vanish without goodbye (before its tasks are aborted).
    fn crash(&self, config: &Config, node: &str, layer: &Self::Layer);

    /// `layer`'s walrus-gcs transport, for the partition switch ([`Cluster::partition`]);
    /// `None` where the layer has none (a client's link, the in-process bus).
    fn transport<'a>(&self, layer: &'a Self::Layer) -> Option<&'a Transport<PeerMessage>> {
        let _ = layer;
        None
    }
}

/// The real thing: one walrus-gcs node over QUIC with mutual TLS per node (every node a
/// member; a node with a `client_port` also serves clients).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicLayers;

impl Layers for QuicLayers {
    type Layer = Gcs;

    async fn start(&self, config: &Config, node: &str) -> Result<Gcs, RunError> {
        crate::runtime::member_layer(config, node).await
    }

    fn crash(&self, config: &Config, node: &str, layer: &Gcs) {
        // Cut every link at this end: the peers' links drop with no protocol goodbye,
        // which their failure detector treats like a crash.
        for peer in config.nodes.keys().filter(|p| p.as_str() != node) {
            layer
                .transport()
                .cut(&walrus_gcs::NodeId::new(peer.as_str()));
        }
    }

    fn transport<'a>(&self, layer: &'a Gcs) -> Option<&'a Transport<PeerMessage>> {
        Some(layer.transport())
    }
}

/// Both tiers, as the file says: a walrus-gcs node per member (as [`QuicLayers`]), a
/// client link ([`walrus_actors::group::client::ClientLayer`]) per `tier = "client"` node,
/// attached to the first member of its `attach` list that admits it.
///
/// A client cannot be crashed without goodbye here: its link has no partition switch, so
/// [`Cluster::kill_node`] of a client drops its link, which closes the QUIC connection
/// (its member sees the link end at once, not after the idle timeout). A client's link
/// follows no [`Cluster::partition`]: it stays attached to its member, on whichever side.
#[derive(Debug, Clone, Copy, Default)]
pub struct TieredLayers;

impl Layers for TieredLayers {
    type Layer = TierLayer;

    async fn start(&self, config: &Config, node: &str) -> Result<TierLayer, RunError> {
        Ok(if config.node(node)?.is_member() {
            TierLayer::Member(crate::runtime::member_layer(config, node).await?)
        } else {
            TierLayer::Client(crate::runtime::client_layer(config, node).await?)
        })
    }

    fn crash(&self, config: &Config, node: &str, layer: &TierLayer) {
        if let Some(gcs) = layer.member() {
            QuicLayers.crash(config, node, gcs);
        }
    }

    fn transport<'a>(&self, layer: &'a TierLayer) -> Option<&'a Transport<PeerMessage>> {
        layer.member().map(Gcs::transport)
    }
}

/// The in-process group bus ([`walrus_actors::group::local::LocalBus`]): for tests of the
/// node's wiring that must not depend on walrus-gcs.
#[cfg(feature = "testing")]
#[derive(Clone, Default)]
pub struct LocalLayers {
    /// The shared bus.
    pub bus: walrus_actors::group::local::LocalBus,
    incarnations: std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

#[cfg(feature = "testing")]
impl LocalLayers {
    fn incarnation(&self, node: &str) -> u64 {
        let m = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
        *m.get(node).unwrap_or(&0)
    }
}

#[cfg(feature = "testing")]
impl Layers for LocalLayers {
    type Layer = walrus_actors::group::local::LocalNode;

    async fn start(
        &self,
        _config: &Config,
        node: &str,
    ) -> Result<walrus_actors::group::local::LocalNode, RunError> {
        let inc = {
            let mut m = self.incarnations.lock().unwrap_or_else(|p| p.into_inner());
            let e = m.entry(node.to_owned()).or_insert(0);
            *e += 1;
            *e
        };
        Ok(self.bus.node(node, inc))
    }

    fn crash(&self, _config: &Config, node: &str, _layer: &walrus_actors::group::local::LocalNode) {
        self.bus.crash(node, self.incarnation(node));
    }
}

/// A whole deployment running in this process.
pub struct Cluster<F: Layers> {
    layers: F,
    config: Config,
    dir: PathBuf,
    nodes: BTreeMap<String, NodeRuntime<F::Layer>>,
}

/// Creates the CA and every node's certificate in `dir/certs` (once; an existing CA is
/// kept) and points `config.tls` at them.
pub fn prepare_certs(config: &mut Config, dir: &Path) -> Result<(), RunError> {
    let certs_dir = dir.join("certs");
    let err = |node: &str| {
        let node = node.to_owned();
        move |source| RunError::Certs { node, source }
    };
    if !certs_dir.join("ca.key").exists() {
        certs::write_new_ca(&certs_dir).map_err(err("ca"))?;
    }
    for (name, n) in &config.nodes {
        let cert = crate::config::gcs_name(name, n.tier);
        if !certs_dir.join(format!("{cert}.pem")).exists() {
            certs::write_node_cert(&certs_dir, &cert).map_err(err(name))?;
        }
    }
    config.tls.ca = certs_dir.join("ca.pem");
    config.tls.dir = certs_dir;
    Ok(())
}

impl<F: Layers> Cluster<F> {
    /// Prepares certificates and state under `dir` and starts every node of `config`.
    pub async fn start(mut config: Config, dir: &Path, layers: F) -> Result<Self, RunError> {
        prepare_certs(&mut config, dir)?;
        let mut cluster = Cluster {
            layers,
            config,
            dir: dir.to_owned(),
            nodes: BTreeMap::new(),
        };
        let names: Vec<String> = cluster.config.nodes.keys().cloned().collect();
        for name in names {
            if let Err(e) = cluster.start_node(&name).await {
                cluster.stop_all().await;
                return Err(e);
            }
        }
        Ok(cluster)
    }

    /// The configuration node `node` runs with: the deployment's, with its own state
    /// directory `DIR/state/NODE` (embedded DNS state, bypass file).
    pub fn node_config(&self, node: &str) -> Config {
        self.for_node(self.config.clone(), node)
    }

    fn for_node(&self, mut c: Config, node: &str) -> Config {
        let state = self.dir.join("state").join(node);
        c.dns.state_dir = state.join("dns");
        c.reporter.bypass_file = state.join("bypass");
        c.tls = self.config.tls.clone();
        c
    }

    /// Reloads node `node` with a new deployment file (as SIGHUP does), adapted like
    /// [`Cluster::node_config`]. See [`NodeRuntime::reload`].
    pub async fn reload_node(
        &mut self,
        node: &str,
        new: Config,
    ) -> Result<crate::runtime::ReloadReport, RunError> {
        let new = self.for_node(new, node);
        match self.nodes.get_mut(node) {
            Some(rt) => rt.reload(&new).await,
            None => Err(RunError::Role {
                node: node.to_owned(),
                detail: "not running".into(),
            }),
        }
    }

    /// Replaces the deployment's file (as pushed to the hosts, before each is reloaded
    /// or started): certificates are made for nodes it adds. Running nodes keep theirs
    /// until [`Cluster::reload_node`]; [`Cluster::start_node`] uses the new one.
    pub fn set_config(&mut self, mut config: Config) -> Result<(), RunError> {
        prepare_certs(&mut config, &self.dir)?;
        self.config = config;
        Ok(())
    }

    /// Starts node `node` (again, after a stop or kill: a new incarnation).
    pub async fn start_node(&mut self, node: &str) -> Result<(), RunError> {
        if self.nodes.contains_key(node) {
            return Ok(());
        }
        let config = self.node_config(node);
        let layer = self.layers.start(&config, node).await?;
        let rt = NodeRuntime::start(&config, node, layer).await?;
        self.nodes.insert(node.to_owned(), rt);
        Ok(())
    }

    /// Stops node `node` cleanly (roles leave their groups, the gcs node says goodbye).
    pub async fn stop_node(&mut self, node: &str) {
        if let Some(rt) = self.nodes.remove(node) {
            rt.stop().await;
        }
    }

    /// Kills node `node`: its links are cut (with the `testing` feature), its tasks
    /// aborted, nothing is sent.
    pub async fn kill_node(&mut self, node: &str) {
        if let Some(rt) = self.nodes.remove(node) {
            self.layers.crash(&self.config, node, rt.layer());
            let layer = rt.abort();
            // Let the aborted tasks drop their sessions before the layer goes.
            tokio::task::yield_now().await;
            drop(layer);
        }
    }

    /// A running node.
    pub fn node(&self, node: &str) -> Option<&NodeRuntime<F::Layer>> {
        self.nodes.get(node)
    }

    /// A running node, mutable (to reload it).
    pub fn node_mut(&mut self, node: &str) -> Option<&mut NodeRuntime<F::Layer>> {
        self.nodes.get_mut(node)
    }

    /// The names of the running nodes.
    pub fn running(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The deployment's configuration (certificates prepared).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The layers (e.g. the in-process bus).
    pub fn layers(&self) -> &F {
        &self.layers
    }

    /// Stops every node cleanly.
    pub async fn stop_all(mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            self.stop_node(&n).await;
        }
    }
}

/// A UDP port free on 127.0.0.1 now, below the ephemeral range and not handed out before
/// by this process (for a node's client listener; see [`walrus_gcs::loopback`]).
pub fn free_udp_port() -> std::io::Result<u16> {
    loopback::free_port(Ipv4Addr::LOCALHOST, loopback::Protocols::Udp)
}

/// A port free for both UDP and TCP on 127.0.0.1 now, below the ephemeral range and not
/// handed out before by this process (for an embedded name server, or a node's address:
/// QUIC and TLS/TCP transfers share it).
pub fn free_dns_port() -> std::io::Result<u16> {
    loopback::free_port(Ipv4Addr::LOCALHOST, loopback::Protocols::UdpAndTcp)
}

impl<F: Layers> Cluster<F> {
    /// Splits the running nodes into `components` over real sockets (walrus-gcs's partition
    /// switch): links between components are cut at both ends, links inside restored. A
    /// running node listed in no component is cut from everyone. Nodes whose layer has no
    /// transport (see [`Layers::transport`]) are not cut.
    pub fn partition(&self, components: &[&[&str]]) {
        let transports: Vec<_> = self
            .nodes
            .values()
            .filter_map(|rt| self.layers.transport(rt.layer()))
            .collect();
        walrus_gcs::transport::partition(&transports, components);
    }

    /// Restores every link between running nodes.
    pub fn heal(&self) {
        let names: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
        self.partition(&[&names]);
    }
}
