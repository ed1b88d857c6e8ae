//! What every role actor shares: the actix home it runs in, its group session seen as a
//! stream plus a sender, and the restart policy with its counters for `/metrics`.
//!
//! ```text
//!  ActorHome (an actix Arbiter) ──▶ actix::Supervisor ──▶ role actor (Controller, Reporter,
//!                                                          Director, Replicator: thin shells)
//!  GroupSession ── pump (tokio task on the node's runtime) ──┬─▶ Events  (StreamHandler)
//!                                                            └─◀ SessionLink (join, multicast)
//!  panic in a handler ─ guard ─▶ ctx.stop() ─▶ Supervised::restarting ─▶ Supervision::restarted
//!                                     (state rebuilt, new session)      (counted, rate-limited)
//! ```
//!
//! # Restarts
//! A role's handlers run under [`guard`]: a panic is caught, its message kept as the
//! cause, and the actor stopped; `actix::Supervisor` then calls `restarting`, where the
//! role rebuilds its state from its settings and opens a new group session (the old one
//! is closed, so its group sees it leave). [`Supervision::restarted`] counts the restart
//! per role, logs it with its cause, and once a role restarts more than
//! [`RestartLimit::max_restarts`] times within [`RestartLimit::within`], marks the node
//! failed ([`Supervision::failed`]) instead of looping: the binary exits with that error.
//!
//! # Mailboxes
//! A role's main input is its group session's events: they reach the actor through a
//! bounded queue ([`EVENT_QUEUE`]); when it is full the pump stops reading the session
//! (walrus-gcs then applies its own slow-reader policy), and the event is counted and
//! logged. Requests from the node (status, reconfigure, shutdown) go through the actor's
//! own bounded actix mailbox (`MAILBOX` requests per role) with `Addr::send`, which waits
//! while it is full: never an unbounded queue. A Director's decisions that find its
//! driver's queue full are counted the same way (role "director driver").

use crate::group::GroupSession;
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use walrus_gcs::{DriverError, Event, GroupName, Member, NodeId, Service};

/// Events queued between a role's group session and its actor.
pub const EVENT_QUEUE: usize = 256;

/// After more than `max_restarts` restarts of one role within `within`, the node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    /// Restarts allowed inside the window. Default 5.
    pub max_restarts: u32,
    /// The sliding window. Default 60 s.
    pub within: Duration,
}

impl Default for RestartLimit {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// One role's counters, as `/metrics` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMetrics {
    /// Restarts since the node started.
    pub restarts: u64,
    /// The cause of the last restart.
    pub last_cause: Option<String>,
    /// Events waiting in the role's queue now.
    pub mailbox_depth: usize,
    /// The queue's capacity.
    pub mailbox_capacity: usize,
    /// Times an event or request found the role's queue full.
    pub mailbox_full: u64,
}

#[derive(Default)]
struct RoleState {
    metrics: RoleMetrics,
    recent: VecDeque<Instant>,
    queues: Vec<mpsc::WeakSender<Event>>,
}

struct Inner {
    node: NodeId,
    limit: RestartLimit,
    roles: Mutex<BTreeMap<String, RoleState>>,
    failed: watch::Sender<Option<String>>,
    closing: AtomicBool,
    runtime: tokio::runtime::Handle,
}

/// The node's supervision record: restarts, mailbox figures, and whether the node failed.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Supervision(Arc<Inner>);

impl std::fmt::Debug for Supervision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervision")
            .field("node", &self.0.node)
            .field("limit", &self.0.limit)
            .finish_non_exhaustive()
    }
}

impl Supervision {
    /// A record for node `node`; session pumps run on `runtime` (the node's tokio runtime,
    /// where walrus-gcs runs), not on the actors' arbiter.
    pub fn new(node: &NodeId, limit: RestartLimit, runtime: tokio::runtime::Handle) -> Self {
        let (failed, _) = watch::channel(None);
        Self(Arc::new(Inner {
            node: node.clone(),
            limit,
            roles: Mutex::new(BTreeMap::new()),
            failed,
            closing: AtomicBool::new(false),
            runtime,
        }))
    }

    fn with_role<R>(&self, role: &str, f: impl FnOnce(&mut RoleState) -> R) -> R {
        let mut roles = match self.0.roles.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(roles.entry(role.to_owned()).or_default())
    }

    /// Records a restart of `role` caused by `cause`. Err (and the node marked failed)
    /// when the role went over its [`RestartLimit`]: the caller must not start again.
    pub fn restarted(&self, role: &str, cause: &str, now: Instant) -> Result<(), String> {
        let limit = self.0.limit;
        let over = self.with_role(role, |s| {
            s.metrics.restarts += 1;
            s.metrics.last_cause = Some(cause.to_owned());
            s.recent.push_back(now);
            while s
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > limit.within)
            {
                s.recent.pop_front();
            }
            s.recent.len() > limit.max_restarts as usize
        });
        if over {
            let e = format!(
                "node {}: role {role} restarted more than {} times within {:?} (last cause: {cause}); stopping the node instead of restarting it again",
                self.0.node, limit.max_restarts, limit.within
            );
            tracing::error!(node = %self.0.node, role, cause, "{e}");
            self.0.failed.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(e.clone());
                }
                first
            });
            return Err(e);
        }
        tracing::warn!(node = %self.0.node, role, cause, "role actor restarted with its state rebuilt");
        Ok(())
    }

    /// Counts one event or request that found `role`'s queue full, and logs it.
    pub fn mailbox_full(&self, role: &str) {
        let n = self.with_role(role, |s| {
            s.metrics.mailbox_full += 1;
            s.metrics.mailbox_full
        });
        tracing::warn!(node = %self.0.node, role, times = n, "role mailbox full: the sender waits (or drops a request)");
    }

    /// Each role's counters now.
    pub fn metrics(&self) -> BTreeMap<String, RoleMetrics> {
        let roles = match self.0.roles.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        roles
            .iter()
            .map(|(role, s)| {
                let mut m = s.metrics.clone();
                let live: Vec<_> = s.queues.iter().filter_map(|q| q.upgrade()).collect();
                m.mailbox_depth = live.iter().map(|q| q.max_capacity() - q.capacity()).sum();
                m.mailbox_capacity = live.iter().map(|q| q.max_capacity()).sum();
                (role.clone(), m)
            })
            .collect()
    }

    /// The node's failure (a role over its restart limit), once there is one.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.0.failed.subscribe()
    }

    /// Marks the node as stopping: a session ending from now on is not a failure.
    pub fn close(&self) {
        self.0.closing.store(true, Ordering::SeqCst);
    }

    /// True once [`Self::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.0.closing.load(Ordering::SeqCst)
    }

    /// Starts the pump of `session` for `role` on the node's runtime: its events become a
    /// stream for the actor, its sending side a [`SessionLink`]. Dropping the link closes
    /// the session (it leaves every group).
    pub fn pump<S: GroupSession>(&self, role: &str, session: S) -> (SessionLink, Events) {
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let member = session.member().clone();
        self.with_role(role, |s| {
            s.queues.retain(|q| q.strong_count() > 0);
            s.queues.push(ev_tx.downgrade());
        });
        self.0.runtime.spawn(run_pump(
            session,
            ev_tx,
            cmd_rx,
            self.clone(),
            role.to_owned(),
        ));
        (
            SessionLink {
                member,
                cmds: cmd_tx,
            },
            Inbox(ev_rx),
        )
    }

    /// Spawns `f` on the node's runtime (I/O helpers of an actor that must outlive none
    /// of it: they end when the actor's side of their channel is gone).
    pub fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.runtime.spawn(f);
    }
}

enum Cmd {
    Join(GroupName, oneshot::Sender<Result<(), DriverError>>),
    Leave(GroupName, oneshot::Sender<Result<(), DriverError>>),
    Multicast(
        Service,
        Vec<GroupName>,
        Vec<u8>,
        oneshot::Sender<Result<(), DriverError>>,
    ),
    Close(oneshot::Sender<()>),
}

async fn run_pump<S: GroupSession>(
    mut session: S,
    events: mpsc::Sender<Event>,
    mut cmds: mpsc::Receiver<Cmd>,
    sup: Supervision,
    role: String,
) {
    let mut pending: Option<Event> = None;
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Join(g, tx)) => { let _ = tx.send(session.join(g).await); }
                Some(Cmd::Leave(g, tx)) => { let _ = tx.send(session.leave(g).await); }
                Some(Cmd::Multicast(s, g, p, tx)) => { let _ = tx.send(session.multicast(s, &g, p).await); }
                Some(Cmd::Close(tx)) => { session.close().await; let _ = tx.send(()); return; }
                None => { session.close().await; return; }
            },
            permit = events.reserve(), if pending.is_some() => match permit {
                Ok(p) => { if let Some(ev) = pending.take() { p.send(ev); } }
                Err(_) => { session.close().await; return; }
            },
            ev = session.recv(), if pending.is_none() && reading => match ev {
                Some(ev) => match events.try_send(ev) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(ev)) => {
                        sup.mailbox_full(&role);
                        pending = Some(ev);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => { session.close().await; return; }
                },
                // The session is gone: the stream ends (the actor's `finished` decides),
                // commands still get their errors from the closed session.
                None => reading = false,
            },
        }
        if !reading && pending.is_none() {
            // Dropping the sender ends the actor's stream.
            break;
        }
    }
    drop(events);
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Join(_, tx) | Cmd::Leave(_, tx) | Cmd::Multicast(_, _, _, tx) => {
                let _ = tx.send(Err(DriverError::Stopped));
            }
            Cmd::Close(tx) => {
                let _ = tx.send(());
            }
        }
    }
    session.close().await;
}

/// The sending side of a role's group session (the pump holds the session).
#[derive(Debug, Clone)]
pub struct SessionLink {
    member: Member,
    cmds: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Join(..) => "Join",
            Cmd::Leave(..) => "Leave",
            Cmd::Multicast(..) => "Multicast",
            Cmd::Close(..) => "Close",
        })
    }
}

impl SessionLink {
    /// The session's identity in membership lists.
    pub fn member(&self) -> &Member {
        &self.member
    }

    async fn call(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), DriverError>>) -> Cmd,
    ) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Joins `group`.
    pub async fn join(&self, group: GroupName) -> Result<(), DriverError> {
        self.call(|tx| Cmd::Join(group, tx)).await
    }

    /// Leaves `group`.
    pub async fn leave(&self, group: GroupName) -> Result<(), DriverError> {
        self.call(|tx| Cmd::Leave(group, tx)).await
    }

    /// Multicasts `payload` to `groups`.
    pub async fn multicast(
        &self,
        service: Service,
        groups: Vec<GroupName>,
        payload: Vec<u8>,
    ) -> Result<(), DriverError> {
        self.call(|tx| Cmd::Multicast(service, groups, payload, tx))
            .await
    }

    /// Closes the session and waits until it is closed.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A bounded queue's receiving side as a stream (for `StreamHandler`).
#[derive(Debug)]
pub struct Inbox<T>(pub mpsc::Receiver<T>);

impl<T> actix::prelude::Stream for Inbox<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A role's group events as a stream.
pub type Events = Inbox<Event>;

/// Opens a session on `layer` for `role` and joins `groups`: what each role does when it
/// starts and after every restart.
pub async fn open_and_join<L: crate::group::GroupLayer>(
    layer: Arc<L>,
    sup: Supervision,
    role: &'static str,
    groups: Vec<GroupName>,
) -> Result<(SessionLink, Events), DriverError> {
    let session = layer.open_session().await?;
    let (link, events) = sup.pump(role, session);
    for g in groups {
        link.join(g).await?;
    }
    Ok((link, events))
}

/// Leave the role's groups, close its session and stay idle (the node is stopping). Every
/// role actor takes it; its handle's `shutdown()` sends it.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown;

impl actix::Message for Shutdown {
    type Result = ();
}

/// Test only: panics inside a role actor, as a bug would (see [`planted_panic`]).
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy)]
pub struct Crash;

#[cfg(feature = "testing")]
impl actix::Message for Crash {
    type Result = ();
}

/// Test only: the cause a real panic in `role`'s handler gives, through [`guard`] (the
/// handler of [`Crash`] stops its actor with it).
#[cfg(feature = "testing")]
pub fn planted_panic(role: &str) -> String {
    guard(&mut (), |_| -> () {
        panic!("test-only crash of the {role}")
    })
    .err()
    .unwrap_or_default()
}

/// What every role actor's address offers the node: a clean stop, and (tests) a crash.
#[derive(Debug, Clone)]
pub struct RoleAddr {
    shutdown: actix::Recipient<Shutdown>,
    #[cfg(feature = "testing")]
    crash: actix::Recipient<Crash>,
}

impl RoleAddr {
    /// The role part of `addr`.
    #[cfg(not(feature = "testing"))]
    pub fn of<A>(addr: &actix::Addr<A>) -> Self
    where
        A: actix::Actor<Context = actix::Context<A>> + actix::Handler<Shutdown>,
    {
        Self {
            shutdown: addr.clone().recipient(),
        }
    }

    /// The role part of `addr`.
    #[cfg(feature = "testing")]
    pub fn of<A>(addr: &actix::Addr<A>) -> Self
    where
        A: actix::Actor<Context = actix::Context<A>>
            + actix::Handler<Shutdown>
            + actix::Handler<Crash>,
    {
        Self {
            shutdown: addr.clone().recipient(),
            crash: addr.clone().recipient(),
        }
    }

    /// Leaves the role's groups and closes its session (the node is stopping).
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(Shutdown).await;
    }

    /// Test only: makes the actor panic (it is restarted by its supervisor).
    #[cfg(feature = "testing")]
    pub fn crash(&self) {
        let _ = self.crash.try_send(Crash);
    }
}

/// What each role actor keeps for its own supervision: why it is stopping and whether it
/// is down for good. One place for the rules every role follows:
/// - a failure (a caught panic, a session that ended, a join that failed) stops the actor
///   with its cause ([`RoleLife::fail`]); the supervisor restarts it;
/// - a restart is counted and rate-limited ([`Supervision::restarted`]); over the limit,
///   or once the node is stopping, the actor stays down ([`RoleLife::restarting`]);
/// - the end of the session's stream is a failure unless the node is stopping
///   ([`RoleLife::session_ended`]).
#[derive(Debug)]
pub struct RoleLife {
    role: &'static str,
    /// The node's supervision record (restarts, mailboxes, helpers' tasks).
    pub sup: Supervision,
    /// Why the actor is stopping (the restart's cause).
    failure: Option<String>,
    /// Stopped for good (node stopping, or over the restart limit).
    halted: bool,
}

impl RoleLife {
    /// A role's record, named as in `/metrics` ("controller", "reporter", ...).
    pub fn new(role: &'static str, sup: Supervision) -> Self {
        Self {
            role,
            sup,
            failure: None,
            halted: false,
        }
    }

    /// Down for good: the actor does nothing more (its `started` returns at once).
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// The node is stopping this role (a [`Shutdown`]): no restart from now on.
    pub fn halt(&mut self) {
        self.halted = true;
    }

    /// Stops the actor with `cause`; its supervisor restarts it (state rebuilt).
    pub fn fail<A>(&mut self, ctx: &mut actix::Context<A>, cause: String)
    where
        A: actix::Actor<Context = actix::Context<A>>,
    {
        use actix::ActorContext;
        tracing::error!(role = self.role, %cause, "role actor failed");
        self.failure = Some(cause);
        ctx.stop();
    }

    /// In `Supervised::restarting` (after the role dropped its old session and state):
    /// counts the restart with its cause; `false` when the actor must stay down instead.
    pub fn restarting(&mut self) -> bool {
        let cause = self.failure.take().unwrap_or_else(|| "stopped".to_owned());
        if self.halted || self.sup.is_closing() {
            self.halted = true;
            return false;
        }
        if self
            .sup
            .restarted(self.role, &cause, Instant::now())
            .is_err()
        {
            self.halted = true;
            return false;
        }
        true
    }

    /// The group session's stream ended: the failure to stop with, unless the node is
    /// stopping (then nothing).
    pub fn session_ended(&self) -> Option<String> {
        (!self.halted && !self.sup.is_closing()).then(|| "the group session ended".to_owned())
    }
}

/// Leaves `groups` (last joined first) and closes the session: a role's clean goodbye.
pub async fn leave_and_close(link: Option<SessionLink>, groups: Vec<GroupName>) {
    if let Some(link) = link {
        for g in groups.into_iter().rev() {
            let _ = link.leave(g).await;
        }
        link.close().await;
    }
}

/// Runs `f` on `act`, catching a panic: Err carries the panic's message (the restart's
/// cause). The caller stops the actor, and its supervisor restarts it.
pub fn guard<A, R>(act: &mut A, f: impl FnOnce(&mut A) -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(act))).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        format!("panic: {msg}")
    })
}

/// Where a node's role actors run: an actix arbiter. Inside an actix `System` (the
/// binary runs on `System::with_tokio_rt`), a new arbiter of that system; elsewhere (tests
/// and the in-process launcher, which run on plain tokio) a thread with its own `System`.
/// Stopping the home drops every actor in it at once.
#[derive(Debug)]
pub struct ActorHome {
    arbiter: actix::ArbiterHandle,
    own_system: Option<actix::System>,
}

impl ActorHome {
    /// A home for node `node`'s actors.
    pub fn start(node: &NodeId) -> std::io::Result<Self> {
        if actix::System::try_current().is_some() {
            let arbiter = actix::Arbiter::new();
            return Ok(Self {
                arbiter: arbiter.handle(),
                own_system: None,
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("actors-{node}"))
            .spawn(move || {
                let system = actix::System::new();
                let _ = tx.send((actix::System::current(), actix::Arbiter::current()));
                system.run()
            })?;
        let (system, arbiter) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the actor thread did not start"))?;
        Ok(Self {
            arbiter,
            own_system: Some(system),
        })
    }

    /// The arbiter to start actors in.
    pub fn arbiter(&self) -> &actix::ArbiterHandle {
        &self.arbiter
    }

    /// Stops every actor of the node.
    pub fn stop(self) {
        match self.own_system {
            Some(s) => s.stop(),
            None => {
                self.arbiter.stop();
            }
        }
    }
}

/// Starts a supervised actor in `home` (with a mailbox of `capacity` requests).
pub fn start_in<A, F>(home: &ActorHome, capacity: usize, f: F) -> actix::Addr<A>
where
    A: actix::Actor<Context = actix::Context<A>> + actix::Supervised,
    F: FnOnce(&mut actix::Context<A>) -> A + Send + 'static,
{
    actix::Supervisor::start_in_arbiter(home.arbiter(), move |ctx| {
        ctx.set_mailbox_capacity(capacity);
        f(ctx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup(limit: RestartLimit) -> (tokio::runtime::Runtime, Supervision) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let s = Supervision::new(&NodeId::new("n"), limit, rt.handle().clone());
        (rt, s)
    }

    #[test]
    fn the_restart_limit_fails_the_node_with_the_role_and_cause() {
        let (_rt, s) = sup(RestartLimit {
            max_restarts: 2,
            within: Duration::from_secs(10),
        });
        let t = Instant::now();
        assert!(s.restarted("controller", "panic: a", t).is_ok());
        assert!(s.restarted("controller", "panic: b", t).is_ok());
        assert!(s.failed().borrow().is_none());
        let e = s.restarted("controller", "panic: c", t).unwrap_err();
        assert!(
            e.contains("role controller") && e.contains("panic: c"),
            "{e}"
        );
        assert_eq!(s.failed().borrow().as_deref(), Some(e.as_str()));
        assert_eq!(s.metrics()["controller"].restarts, 3);
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let (_rt, s) = sup(RestartLimit {
            max_restarts: 1,
            within: Duration::from_secs(10),
        });
        let t = Instant::now();
        assert!(s.restarted("reporter", "x", t).is_ok());
        assert!(s
            .restarted("reporter", "x", t + Duration::from_secs(11))
            .is_ok());
        assert!(s
            .restarted("reporter", "x", t + Duration::from_secs(12))
            .is_err());
    }

    #[test]
    fn guard_turns_a_panic_into_its_message() {
        let mut n = 1;
        assert_eq!(guard(&mut n, |n| *n + 1), Ok(2));
        let e = guard(&mut n, |_| -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert_eq!(e, "panic: boom 7");
    }
}
