//! The Replicator's work (run by its supervised actix shell, [`super::shell`], as a task
//! on the node's runtime): the primary announces generations and serves transfers; a
//! replica pulls on announcements, on start and when the `Replicators` membership changes.
//!
//! ```text
//!  primary                                             replica
//!  watcher::run_primary ─▶ PrimarySource               Replicators ─▶ Generation{g}
//!        │ subscribe: g                                    │ g > current?  (or start, or
//!        ▼                                                 ▼              a membership change)
//!  multicast Generation{g, primary}               puller task (owns the ReplicaStore)
//!   on Replicators + Controllers                       │ open stream to the primary
//!  PeerStreams::accept ─▶ transfer::serve (a task  ◀───┘ transfer::pull; on error backoff
//!   per stream)                                          and retry (a build resumes)
//! ```
//!
//! The decisions (when to pull, how long to wait after a failure) are in the small pure
//! types [`PullPlan`] and [`Backoff`]; the rest only performs I/O. Every status change is
//! published on a [`watch`] channel ([`ReplicatorStatus`]): the node gives the generation
//! to the Reporter beside it and shows the rest on its status page.
//!
//! The announcement also goes to `Controllers` so the Controller knows the newest
//! generation and can treat a lagging replica as BYPASS.
//!
//! With the **rsync method** ([`TransferMethod::Rsync`]) the primary pushes instead: one
//! pusher task per replica runs `rsync -a --delete` into the replica's daemon module
//! (`STORE/incoming`, `--link-dest` the generation the replica said it serves), then
//! multicasts `Pushed { generation, replica }`; the replica switches to it
//! ([`ReplicaStore::commit_external`]) and says `ReplicaAt { generation }` (also when it
//! joins and when the membership changes), which is how the primary learns what to push
//! next ([`PushPlan`]). rsync copies the live tree, so a push may carry changes made after
//! its generation's scan; the next generation's push sets that right.

use super::rsync::RsyncMethod;
use super::stall::{StallGuard, STALL_LIMIT};
use super::store::{ReplicaStore, StoreConfig, StoreError};
use super::transfer::{self, PrimarySource, ServeOptions};
use super::watcher::{self, PrimaryScanner, WatchConfig, WatchError};
use crate::group::{GroupSession, PeerStreams};
use crate::messages::{self, WalrusMessage, CONTROLLERS, REPLICATORS};
use crate::model::Generation;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use walrus_gcs::{DriverError, Event, NodeId, Service};

/// What this node is in replication.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicatorRole {
    /// The primary copy: watches `root`, numbers generations in `state_dir`.
    Primary {
        /// The content root.
        root: PathBuf,
        /// Where the generation numbering survives restarts (outside `root`).
        state_dir: PathBuf,
        /// Debounce, rescan period and bounds.
        watch: WatchConfig,
    },
    /// A replica: generations side by side in `store`, `store/current` served.
    Replica {
        /// The store directory.
        store: PathBuf,
        /// Generations kept, durability, bounds.
        config: StoreConfig,
    },
}

/// Everything a Replicator runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicatorSettings {
    /// This node.
    pub me: NodeId,
    /// The primary's node (replicas open their transfer streams to it).
    pub primary: NodeId,
    /// Primary or replica.
    pub role: ReplicatorRole,
    /// Waits between failed pulls (or pushes).
    pub backoff: BackoffConfig,
    /// Walrus's own transfer (replicas pull) or rsync (the primary pushes).
    pub method: TransferMethod,
}

/// How content moves from the primary to the replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TransferMethod {
    /// Walrus's own transfer over the group layer's point-to-point streams.
    #[default]
    Walrus,
    /// `rsync -a --delete` from the primary to each replica's rsync daemon.
    Rsync {
        /// The rsync program.
        program: PathBuf,
        /// On the primary: every replica's node and its daemon module URL
        /// (`rsync://host:port/module`, the module's path being the replica's store).
        replicas: Vec<(NodeId, String)>,
    },
}

/// What the status page and the Reporter see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicatorStatus {
    /// Whether this node is the primary.
    pub primary: bool,
    /// The generation this node serves (primary: the newest it published). `None`
    /// before the first scan or store opening.
    pub generation: Option<Generation>,
    /// The newest generation announced by the primary, as far as this node knows.
    pub newest: Option<Generation>,
    /// Completed pulls that brought a new generation.
    pub pulls: u64,
    /// Failed pull attempts.
    pub failures: u64,
    /// The last failure, for the status page.
    pub last_error: Option<String>,
}

impl ReplicatorStatus {
    /// How many generations this replica is behind the newest announced one.
    pub fn lag(&self) -> Option<u64> {
        match (self.generation, self.newest) {
            (Some(g), Some(n)) => Some(n.0.saturating_sub(g.0)),
            _ => None,
        }
    }
}

/// Why the Replicator stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicatorActorError {
    /// The group layer refused or stopped.
    #[error("replicator: group communication: {0}")]
    Group(#[from] DriverError),
    /// The session ended (node stopped, or dropped for not reading).
    #[error("replicator: the group session ended")]
    SessionEnded,
    /// The primary's watcher could not start or stopped.
    #[error("replicator: watcher: {0}")]
    Watch(#[from] WatchError),
    /// The replica's store could not be opened.
    #[error("replicator: store: {0}")]
    Store(#[from] StoreError),
    /// The content root could not be opened.
    #[error("replicator: content root {root}: {source}")]
    Root {
        /// The root.
        root: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

// ----------------------------------------------------------------------------------------
// Pure decisions.

/// Waits between failed pulls: doubling from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first wait. Default 200 ms.
    pub initial: Duration,
    /// The longest wait. Default 5 s.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// The backoff state of a puller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    config: BackoffConfig,
    next: Duration,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            next: config.initial,
        }
    }

    /// The wait after one more failure.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.config.max);
        wait
    }

    /// A success: the next failure waits `initial` again.
    pub fn succeeded(&mut self) {
        self.next = self.config.initial;
    }
}

/// When a replica pulls: at start (catch-up), after an announcement newer than what it
/// serves, after a membership change of `Replicators` (a healed partition or the primary's
/// restart may have hidden announcements), and again after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPlan {
    current: Generation,
    newest: Option<Generation>,
    pending: bool,
}

impl PullPlan {
    /// A replica serving `current`; it pulls once at start.
    pub fn new(current: Generation) -> Self {
        Self {
            current,
            newest: None,
            pending: true,
        }
    }

    /// The primary announced `g`.
    pub fn announced(&mut self, g: Generation) {
        self.newest = Some(self.newest.map_or(g, |n| n.max(g)));
        if g > self.current {
            self.pending = true;
        }
    }

    /// The membership of `Replicators` changed: check with the primary once.
    pub fn membership_changed(&mut self) {
        self.pending = true;
    }

    /// A pull finished with the replica at `g`.
    pub fn pulled(&mut self, g: Generation) {
        self.current = g;
        self.newest = Some(self.newest.map_or(g, |n| n.max(g)));
        self.pending = self.newest.is_some_and(|n| n > g);
    }

    /// Whether a pull is due.
    pub fn due(&self) -> bool {
        self.pending
    }

    /// The generation served.
    pub fn current(&self) -> Generation {
        self.current
    }

    /// The newest generation known.
    pub fn newest(&self) -> Option<Generation> {
        self.newest
    }
}

/// rsync method, on the primary, for one replica: what to push and which generation to
/// link unchanged files from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushPlan {
    reported: Option<Generation>,
    pushed: Option<Generation>,
}

impl PushPlan {
    /// The replica said it serves `g`. Lower than what was pushed: the switch was lost
    /// (a restart) or is still on its way; push again (cheap: everything links).
    pub fn replica_at(&mut self, g: Generation) {
        self.reported = Some(g);
        if self.pushed.is_some_and(|p| p > g) {
            self.pushed = None;
        }
    }

    /// `g` is complete in the replica's `incoming` and it was told.
    pub fn pushed(&mut self, g: Generation) {
        self.pushed = Some(g);
    }

    /// Whether `newest` must be pushed.
    pub fn due(&self, newest: Generation) -> bool {
        let have = self.reported.max(self.pushed).unwrap_or(Generation(0));
        newest > have
    }

    /// The generation to link unchanged files from (`--link-dest`).
    pub fn link_dest(&self) -> Option<Generation> {
        self.reported.filter(|g| g.0 > 0)
    }
}

// ----------------------------------------------------------------------------------------
// The shell.

/// Starts the Replicator's work as a bare tokio task (no supervision; the node runs it
/// under its shell, [`super::shell`]): returns its status and its task (which ends after
/// `shutdown`).
pub fn spawn<S: GroupSession>(
    session: S,
    streams: Arc<dyn PeerStreams>,
    settings: ReplicatorSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (
    watch::Receiver<ReplicatorStatus>,
    JoinHandle<Result<(), ReplicatorActorError>>,
) {
    let (tx, rx) = watch::channel(ReplicatorStatus::default());
    let task = tokio::spawn(run(session, streams, settings, tx, shutdown));
    (rx, task)
}

/// The Replicator's work over `session` until `shutdown`: primary or replica as
/// `settings` say, its state rebuilt from disk (the primary's generation numbering, the
/// replica's store), every change published on `status`.
pub async fn run<S: GroupSession>(
    session: S,
    streams: Arc<dyn PeerStreams>,
    settings: ReplicatorSettings,
    status: watch::Sender<ReplicatorStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicatorActorError> {
    let primary = matches!(settings.role, ReplicatorRole::Primary { .. });
    status.send_modify(|s| s.primary = primary);
    let tx = status;
    let r = match settings.role.clone() {
        ReplicatorRole::Primary {
            root,
            state_dir,
            watch,
        } => {
            run_primary(
                session, streams, settings, root, state_dir, watch, tx, shutdown,
            )
            .await
        }
        ReplicatorRole::Replica { store, config } => match settings.method {
            TransferMethod::Walrus => {
                run_replica(session, streams, settings, store, config, tx, shutdown).await
            }
            TransferMethod::Rsync { .. } => {
                run_rsync_replica(session, settings, store, config, tx, shutdown).await
            }
        },
    };
    if let Err(e) = &r {
        tracing::error!(error = %e, "replicator stopped");
    }
    r
}

/// A shutdown future that many tasks can await.
type Stop = watch::Receiver<bool>;

fn stop_signal(shutdown: impl Future<Output = ()> + Send + 'static) -> (Stop, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let h = tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    (rx, h)
}

async fn stopped(mut s: Stop) {
    let _ = s.wait_for(|v| *v).await;
}

#[allow(clippy::too_many_arguments)]
async fn run_primary<S: GroupSession>(
    mut session: S,
    streams: Arc<dyn PeerStreams>,
    settings: ReplicatorSettings,
    root: PathBuf,
    state_dir: PathBuf,
    watch_cfg: WatchConfig,
    status: watch::Sender<ReplicatorStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicatorActorError> {
    let (stop, _stop_task) = stop_signal(shutdown);
    let source =
        Arc::new(
            PrimarySource::new(&root).map_err(|source| ReplicatorActorError::Root {
                root: root.clone(),
                source,
            })?,
        );
    let scanner = PrimaryScanner::open(&root, &state_dir, watch_cfg.limits)?;
    let mut generations = source.subscribe();
    let mut watcher = tokio::spawn(watcher::run_primary(
        scanner,
        source.clone(),
        watch_cfg,
        stopped(stop.clone()),
    ));
    let server = tokio::spawn(serve_streams(streams, source.clone(), stop.clone()));
    // rsync method: one pusher per replica; they report finished pushes here.
    let (pushed_tx, mut pushed_rx) = tokio::sync::mpsc::unbounded_channel::<(NodeId, Generation)>();
    let mut reported: std::collections::BTreeMap<NodeId, watch::Sender<Option<Generation>>> =
        std::collections::BTreeMap::new();
    let mut pushers = Vec::new();
    if let TransferMethod::Rsync { program, replicas } = &settings.method {
        for (replica, url) in replicas {
            let (tx, rx) = watch::channel(None);
            reported.insert(replica.clone(), tx);
            pushers.push(tokio::spawn(run_pusher(
                RsyncMethod {
                    program: program.clone(),
                },
                root.clone(),
                replica.clone(),
                url.clone(),
                source.subscribe(),
                rx,
                pushed_tx.clone(),
                settings.backoff,
                stop.clone(),
            )));
        }
    }
    drop(pushed_tx);
    session.join(messages::group(REPLICATORS)).await?;
    tracing::info!(me = %session.member(), root = %root.display(), "replicator primary joined Replicators");
    let groups = [messages::group(REPLICATORS), messages::group(CONTROLLERS)];
    let announce = |g: Generation| WalrusMessage::Generation {
        generation: g,
        primary: settings.me.clone(),
    };
    let result = loop {
        tokio::select! {
            biased;
            _ = stopped(stop.clone()) => break Ok(()),
            r = &mut watcher => {
                break match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => {
                        tracing::error!(error = %e, "replicator watcher task failed");
                        Ok(())
                    }
                };
            }
            changed = generations.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let g = *generations.borrow_and_update();
                if g.0 == 0 {
                    continue;
                }
                status.send_modify(|s| {
                    s.generation = Some(g);
                    s.newest = Some(g);
                });
                tracing::info!(generation = g.0, "replicator primary: new generation");
                send(&session, &groups, &announce(g)).await?;
            }
            Some((replica, generation)) = pushed_rx.recv() => {
                let msg = WalrusMessage::Pushed { generation, replica };
                send(&session, &groups[..1], &msg).await?;
            }
            ev = session.recv() => match ev {
                None => break Err(ReplicatorActorError::SessionEnded),
                // Someone joined or left: say again where we are, so a replica that
                // missed announcements catches up (it also pulls on its own).
                Some(Event::Membership { .. }) => {
                    let g = *generations.borrow();
                    if g.0 > 0 {
                        send(&session, &groups, &announce(g)).await?;
                    }
                }
                Some(Event::Message { payload, sender, .. }) => {
                    if let Ok(WalrusMessage::ReplicaAt { replica, generation }) =
                        WalrusMessage::decode(&payload)
                    {
                        if let Some(tx) = reported.get(&replica).filter(|_| sender.0 == replica) {
                            tx.send_replace(Some(generation));
                        }
                    }
                }
                Some(Event::Disconnected { reason }) => {
                    tracing::error!(?reason, "replicator session disconnected");
                }
            },
        }
    };
    server.abort();
    for p in pushers {
        p.abort();
    }
    let _ = session.leave(messages::group(REPLICATORS)).await;
    session.close().await;
    result
}

async fn send<S: GroupSession>(
    session: &S,
    groups: &[walrus_gcs::GroupName],
    msg: &WalrusMessage,
) -> Result<(), DriverError> {
    match msg.encode() {
        Ok(p) => session.multicast(Service::Agreed, groups, p).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode replicator message");
            Ok(())
        }
    }
}

/// Serves every stream a replica opens, each on its own task, until `stop`.
async fn serve_streams(streams: Arc<dyn PeerStreams>, source: Arc<PrimarySource>, stop: Stop) {
    loop {
        let next = tokio::select! {
            _ = stopped(stop.clone()) => return,
            s = streams.accept() => s,
        };
        let Some((peer, send, recv)) = next else {
            return;
        };
        let source = source.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "replicator: serving a transfer");
            if let Err(e) = transfer::serve(&source, recv, send, ServeOptions::default()).await {
                tracing::warn!(%peer, error = %e, "replicator: transfer ended with an error");
            }
        });
    }
}

/// rsync method: pushes every new generation to one replica, retrying with backoff.
#[allow(clippy::too_many_arguments)]
async fn run_pusher(
    method: RsyncMethod,
    root: PathBuf,
    replica: NodeId,
    url: String,
    mut generations: watch::Receiver<Generation>,
    mut reported: watch::Receiver<Option<Generation>>,
    done: tokio::sync::mpsc::UnboundedSender<(NodeId, Generation)>,
    backoff: BackoffConfig,
    stop: Stop,
) {
    let mut plan = PushPlan::default();
    let mut backoff = Backoff::new(backoff);
    loop {
        let newest = *generations.borrow_and_update();
        if let Some(g) = *reported.borrow_and_update() {
            plan.replica_at(g);
        }
        if plan.due(newest) {
            let push = method.push(&root, &url, plan.link_dest());
            let r = tokio::select! {
                _ = stopped(stop.clone()) => return,
                r = push => r,
            };
            match r {
                Ok(()) => {
                    backoff.succeeded();
                    plan.pushed(newest);
                    tracing::info!(%replica, generation = newest.0, "replicator: pushed with rsync");
                    if done.send((replica.clone(), newest)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let wait = backoff.failed();
                    tracing::warn!(%replica, error = %e, retry_in = ?wait, "replicator: rsync push failed");
                    tokio::select! {
                        _ = stopped(stop.clone()) => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            continue;
        }
        tokio::select! {
            _ = stopped(stop.clone()) => return,
            r = generations.changed() => if r.is_err() { return },
            r = reported.changed() => if r.is_err() { return },
        }
    }
}

/// rsync method, on a replica: switches to what the primary pushed; says where it is.
async fn run_rsync_replica<S: GroupSession>(
    mut session: S,
    settings: ReplicatorSettings,
    dir: PathBuf,
    config: StoreConfig,
    status: watch::Sender<ReplicatorStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicatorActorError> {
    let (stop, _stop_task) = stop_signal(shutdown);
    let mut store = Some(ReplicaStore::open(&dir, config)?);
    let mut current = store
        .as_ref()
        .map_or(Generation(0), ReplicaStore::current_generation);
    status.send_modify(|s| s.generation = Some(current));
    let groups = [messages::group(REPLICATORS)];
    session.join(groups[0].clone()).await?;
    tracing::info!(me = %session.member(), store = %dir.display(), "replicator replica (rsync) joined Replicators");
    let at = |g: Generation| WalrusMessage::ReplicaAt {
        replica: settings.me.clone(),
        generation: g,
    };
    send(&session, &groups, &at(current)).await?;
    let result = loop {
        tokio::select! {
            biased;
            _ = stopped(stop.clone()) => break Ok(()),
            ev = session.recv() => match ev {
                None => break Err(ReplicatorActorError::SessionEnded),
                Some(Event::Message { payload, sender, .. }) => match WalrusMessage::decode(&payload) {
                    Ok(WalrusMessage::Generation { generation, .. })
                        if sender.0 == settings.primary =>
                    {
                        status.send_modify(|s| s.newest = Some(s.newest.map_or(generation, |n| n.max(generation))));
                    }
                    Ok(WalrusMessage::Pushed { generation, replica }) if replica == settings.me => {
                        if sender.0 != settings.primary {
                            tracing::warn!(from = %sender.0, configured = %settings.primary, "push notice from a node that is not the configured primary; ignored");
                            continue;
                        }
                        if generation <= current {
                            continue;
                        }
                        let Some(mut st) = store.take() else { break Ok(()) };
                        let (st, r) = match tokio::task::spawn_blocking(move || {
                            let r = st.commit_external(generation);
                            (st, r)
                        })
                        .await
                        {
                            Ok(v) => v,
                            Err(e) => {
                                tracing::error!(error = %e, "replicator: switch task failed");
                                break Ok(());
                            }
                        };
                        current = st.current_generation();
                        if let Err(e) = st.prune() {
                            tracing::warn!(error = %e, "replicator: pruning old generations failed");
                        }
                        store = Some(st);
                        match r {
                            Ok(()) => {
                                tracing::info!(generation = generation.0, "replicator: switched to a pushed generation");
                                status.send_modify(|s| {
                                    s.generation = Some(current);
                                    s.pulls += 1;
                                    s.last_error = None;
                                });
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "replicator: a pushed generation was refused");
                                status.send_modify(|s| {
                                    s.failures += 1;
                                    s.last_error = Some(e.to_string());
                                });
                            }
                        }
                        send(&session, &groups, &at(current)).await?;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(from = %sender.0, error = %e, "malformed message ignored"),
                },
                Some(Event::Membership { .. }) => send(&session, &groups, &at(current)).await?,
                Some(Event::Disconnected { reason }) => {
                    tracing::error!(?reason, "replicator session disconnected");
                }
            },
        }
    };
    let _ = session.leave(messages::group(REPLICATORS)).await;
    session.close().await;
    result
}

async fn run_replica<S: GroupSession>(
    mut session: S,
    streams: Arc<dyn PeerStreams>,
    settings: ReplicatorSettings,
    dir: PathBuf,
    config: StoreConfig,
    status: watch::Sender<ReplicatorStatus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReplicatorActorError> {
    let (stop, _stop_task) = stop_signal(shutdown);
    let store = ReplicaStore::open(&dir, config)?;
    if let Some(g) = store.interrupted() {
        tracing::info!(
            generation = g.0,
            "replicator: an interrupted build will be resumed"
        );
    }
    let plan = PullPlan::new(store.current_generation());
    status.send_modify(|s| s.generation = Some(store.current_generation()));
    let (events_tx, events_rx) = watch::channel(plan);
    let puller = tokio::spawn(run_puller(
        store,
        streams,
        settings.primary.clone(),
        settings.backoff,
        events_rx,
        events_tx.clone(),
        status,
        stop.clone(),
    ));
    session.join(messages::group(REPLICATORS)).await?;
    tracing::info!(me = %session.member(), store = %dir.display(), "replicator replica joined Replicators");
    let result = loop {
        tokio::select! {
            biased;
            _ = stopped(stop.clone()) => break Ok(()),
            ev = session.recv() => match ev {
                None => break Err(ReplicatorActorError::SessionEnded),
                Some(Event::Message { payload, sender, .. }) => match WalrusMessage::decode(&payload) {
                    Ok(WalrusMessage::Generation { generation, primary }) => {
                        // The sender's node is what its certificate says; the payload's
                        // field must agree.
                        if primary != settings.primary || sender.0 != settings.primary {
                            tracing::warn!(%primary, from = %sender.0, configured = %settings.primary, "announcement from a node that is not the configured primary; ignored");
                            continue;
                        }
                        events_tx.send_modify(|p| p.announced(generation));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(from = %sender.0, error = %e, "malformed message ignored"),
                },
                Some(Event::Membership { .. }) => events_tx.send_modify(PullPlan::membership_changed),
                Some(Event::Disconnected { reason }) => {
                    tracing::error!(?reason, "replicator session disconnected");
                }
            },
        }
    };
    let _ = puller.await;
    let _ = session.leave(messages::group(REPLICATORS)).await;
    session.close().await;
    result
}

/// Owns the store: pulls whenever the plan says so, retries with backoff.
#[allow(clippy::too_many_arguments)]
async fn run_puller(
    mut store: ReplicaStore,
    streams: Arc<dyn PeerStreams>,
    primary: NodeId,
    backoff: BackoffConfig,
    mut plan_rx: watch::Receiver<PullPlan>,
    plan_tx: watch::Sender<PullPlan>,
    status: watch::Sender<ReplicatorStatus>,
    stop: Stop,
) {
    let mut backoff = Backoff::new(backoff);
    loop {
        let due = {
            let p = plan_rx.borrow_and_update();
            status.send_if_modified(|s| {
                let changed = s.newest != p.newest();
                s.newest = p.newest();
                changed
            });
            p.due()
        };
        if !due {
            tokio::select! {
                _ = stopped(stop.clone()) => return,
                r = plan_rx.changed() => if r.is_err() { return },
            }
            continue;
        }
        let attempt = async {
            let (send, recv) = streams.open(&primary).await.map_err(|e| e.to_string())?;
            let recv = StallGuard::new(recv, STALL_LIMIT);
            transfer::pull(&mut store, recv, send)
                .await
                .map_err(|e| e.to_string())
        };
        let outcome = tokio::select! {
            _ = stopped(stop.clone()) => return,
            r = attempt => r,
        };
        match outcome {
            Ok(report) => {
                backoff.succeeded();
                plan_tx.send_modify(|p| p.pulled(report.generation));
                status.send_modify(|s| {
                    if s.generation != Some(report.generation) {
                        s.pulls += 1;
                    }
                    s.generation = Some(report.generation);
                    s.last_error = None;
                });
                if !report.up_to_date {
                    tracing::info!(
                        generation = report.generation.0,
                        files = report.fetched_files,
                        bytes = report.fetched_bytes,
                        "replicator: switched to a new generation"
                    );
                }
            }
            Err(e) => {
                let wait = backoff.failed();
                tracing::warn!(error = %e, retry_in = ?wait, "replicator: pull failed");
                status.send_modify(|s| {
                    s.failures += 1;
                    s.last_error = Some(e);
                });
                tokio::select! {
                    _ = stopped(stop.clone()) => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_success() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        });
        assert_eq!(b.failed(), Duration::from_millis(100));
        assert_eq!(b.failed(), Duration::from_millis(200));
        assert_eq!(b.failed(), Duration::from_millis(350));
        assert_eq!(b.failed(), Duration::from_millis(350));
        b.succeeded();
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    #[test]
    fn a_replica_pulls_at_start_then_only_for_newer_generations() {
        let mut p = PullPlan::new(Generation(3));
        assert!(p.due(), "catch-up at start");
        p.pulled(Generation(5));
        assert!(!p.due());
        p.announced(Generation(5));
        assert!(!p.due(), "already served");
        p.announced(Generation(4));
        assert!(!p.due(), "older");
        p.announced(Generation(6));
        assert!(p.due());
        assert_eq!(p.newest(), Some(Generation(6)));
        // Announced 7 while pulling 6: still due after the pull.
        p.announced(Generation(7));
        p.pulled(Generation(6));
        assert!(p.due());
        p.pulled(Generation(7));
        assert!(!p.due());
        p.membership_changed();
        assert!(p.due());
        assert_eq!(p.current(), Generation(7));
    }

    #[test]
    fn a_push_is_due_for_what_the_replica_lacks_and_links_from_what_it_has() {
        let mut p = PushPlan::default();
        assert!(!p.due(Generation(0)), "nothing published yet");
        assert!(p.due(Generation(1)));
        assert_eq!(p.link_dest(), None);
        p.pushed(Generation(1));
        assert!(!p.due(Generation(1)));
        p.replica_at(Generation(1));
        assert_eq!(p.link_dest(), Some(Generation(1)));
        assert!(p.due(Generation(2)));
        p.pushed(Generation(2));
        // The replica restarted before switching to 2: push 2 again.
        p.replica_at(Generation(1));
        assert!(p.due(Generation(2)));
        p.pushed(Generation(2));
        p.replica_at(Generation(2));
        assert!(!p.due(Generation(2)));
    }

    #[test]
    fn lag_is_newest_minus_served() {
        let s = ReplicatorStatus {
            generation: Some(Generation(4)),
            newest: Some(Generation(7)),
            ..ReplicatorStatus::default()
        };
        assert_eq!(s.lag(), Some(3));
        assert_eq!(ReplicatorStatus::default().lag(), None);
    }
}
