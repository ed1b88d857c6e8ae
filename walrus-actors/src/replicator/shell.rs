//! The Replicator's supervised shell: an actix actor under `actix::Supervisor` (see
//! [`crate::supervision`]) in front of the Replicator's work ([`super::actor::run`]: the
//! primary's watcher and transfer server, or the replica's puller that owns the store).
//!
//! ```text
//!  Replicator shell (actix) ── group events (StreamHandler) ──▶ relay ──▶ work (tokio task
//!        ▲                                                                on the node's runtime:
//!        └──────────── WorkEnded { incarnation, result } ◀────────────── plans, store, transfers)
//! ```
//!
//! The shell opens the role's group session; the work joins `Replicators` and multicasts
//! through it (a `Relayed` session) and receives the events the shell relays. Long
//! transfers stay in the work's tasks, off the arbiter. When the work ends on its own (an
//! error, a panic, the session gone) its result comes back as `WorkEnded` and the shell
//! fails with it; a restart (that, or a panic in the shell) stops the old work, waits
//! until it has let go of the store, then opens a new session and starts the work again:
//! the role's state is rebuilt from disk (the generation the replica's store serves, or
//! the primary's generation numbering) and it rejoins `Replicators`. An interrupted build
//! resumes by itself ([`super::store`]), so a restart never corrupts the store.
//! The status watch outlives restarts (its counters keep counting).

use super::actor::{run, ReplicatorSettings, ReplicatorStatus};
use crate::group::{GroupLayer, GroupSession, PeerStreams};
#[cfg(feature = "testing")]
use crate::supervision::planted_panic;
use crate::supervision::{
    leave_and_close, open_and_join, ActorHome, RoleAddr, RoleLife, SessionLink, Supervision,
    EVENT_QUEUE,
};
use actix::prelude::*;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use walrus_gcs::{DriverError, Event, GroupName, Member, Service};

/// The role's name in logs and `/metrics`.
pub const ROLE: &str = "replicator";

/// Requests a Replicator's mailbox holds.
pub const MAILBOX: usize = 16;

#[cfg(feature = "testing")]
pub use crate::supervision::Crash;
pub use crate::supervision::Shutdown;

/// Asks the Replicator for its status.
#[derive(Debug, Clone, Copy)]
pub struct GetStatus;

impl Message for GetStatus {
    type Result = ReplicatorStatus;
}

/// The work of incarnation `incarnation` ended (Err: why).
#[derive(Debug)]
struct WorkEnded {
    incarnation: u64,
    result: Result<(), String>,
}

impl Message for WorkEnded {
    type Result = ();
}

/// A running Replicator: its address (typed messages) and a watch of its status.
#[derive(Debug, Clone)]
pub struct ReplicatorActor {
    role: RoleAddr,
    status_req: Recipient<GetStatus>,
    status: watch::Receiver<ReplicatorStatus>,
}

impl ReplicatorActor {
    /// The status, asked of the actor ([`GetStatus`]); `None` when it cannot answer.
    pub async fn get_status(&self) -> Option<ReplicatorStatus> {
        self.status_req.send(GetStatus).await.ok()
    }

    /// A watch on the status (it changes with every generation, pull and failure).
    pub fn watch(&self) -> watch::Receiver<ReplicatorStatus> {
        self.status.clone()
    }

    /// Its role part: `shutdown` (stops the work, leaves `Replicators`, closes the
    /// session) and, in tests, `crash`.
    pub fn role(&self) -> &RoleAddr {
        &self.role
    }
}

/// Starts a supervised Replicator in `home` over `layer`, its transfers over `streams`.
pub fn start<L: GroupLayer>(
    home: &ActorHome,
    supervision: &Supervision,
    layer: Arc<L>,
    settings: ReplicatorSettings,
    streams: Arc<dyn PeerStreams>,
) -> ReplicatorActor {
    let life = RoleLife::new(ROLE, supervision.clone());
    let (status, rx) = watch::channel(ReplicatorStatus::default());
    let addr = crate::supervision::start_in(home, MAILBOX, move |_| Replicator {
        layer,
        streams,
        settings,
        life,
        status,
        link: None,
        relay: None,
        incarnation: 0,
        stop: None,
        work_done: None,
    });
    ReplicatorActor {
        role: RoleAddr::of(&addr),
        status_req: addr.recipient(),
        status: rx,
    }
}

/// The Replicator shell actor.
pub struct Replicator<L: GroupLayer> {
    layer: Arc<L>,
    streams: Arc<dyn PeerStreams>,
    settings: ReplicatorSettings,
    life: RoleLife,
    status: watch::Sender<ReplicatorStatus>,
    link: Option<SessionLink>,
    /// Group events on their way to the work.
    relay: Option<mpsc::Sender<Event>>,
    /// Counts the work's starts; a [`WorkEnded`] of an older one is stale.
    incarnation: u64,
    /// Stops the current work (also when dropped).
    stop: Option<watch::Sender<bool>>,
    /// Becomes true (or closes) once the last work has ended and let go of the store.
    work_done: Option<watch::Receiver<bool>>,
}

impl<L: GroupLayer> Replicator<L> {
    /// Stops the current work; the next start waits for it to end.
    fn stop_work(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        self.relay = None;
    }

    /// Starts the work over `link` on the node's runtime.
    fn start_work(&mut self, ctx: &mut Context<Self>, link: SessionLink) {
        self.incarnation += 1;
        let incarnation = self.incarnation;
        let (relay, events) = mpsc::channel(EVENT_QUEUE);
        let (stop, mut stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        self.relay = Some(relay);
        self.stop = Some(stop);
        self.work_done = Some(done_rx);
        let work = run(
            Relayed { link, events },
            self.streams.clone(),
            self.settings.clone(),
            self.status.clone(),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        );
        let me = ctx.address();
        self.life.sup.spawn(async move {
            // Its own task, so that a panic in the work is a result too.
            let result = match tokio::spawn(work).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the replicator's work failed: {e}")),
            };
            done_tx.send_replace(true);
            me.do_send(WorkEnded {
                incarnation,
                result,
            });
        });
    }
}

/// Waits until the work `done` watches has ended (or is gone).
async fn work_ended(done: Option<watch::Receiver<bool>>) {
    if let Some(mut d) = done {
        let _ = d.wait_for(|x| *x).await;
    }
}

impl<L: GroupLayer> Actor for Replicator<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.life.halted() {
            return;
        }
        let previous = self.work_done.take();
        let layer = self.layer.clone();
        let sup = self.life.sup.clone();
        ctx.wait(
            async move {
                // One work at a time owns the store.
                work_ended(previous).await;
                open_and_join(layer, sup, ROLE, Vec::new()).await
            }
            .into_actor(self)
            .map(|r, act, ctx| match r {
                Ok((link, events)) => {
                    tracing::info!(me = %link.member(), "replicator session opened");
                    act.link = Some(link.clone());
                    ctx.add_stream(events);
                    act.start_work(ctx, link);
                }
                Err(e) => act
                    .life
                    .fail(ctx, format!("opening the replicator's session: {e}")),
            }),
        );
    }
}

impl<L: GroupLayer> Supervised for Replicator<L> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.stop_work();
        self.link = None;
        self.life.restarting();
    }
}

impl<L: GroupLayer> StreamHandler<Event> for Replicator<L> {
    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        let Some(relay) = &self.relay else {
            return;
        };
        match relay.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(ev)) => {
                // The work is behind: wait for it before taking the next event.
                self.life.sup.mailbox_full(ROLE);
                let relay = relay.clone();
                ctx.wait(
                    async move {
                        let _ = relay.send(ev).await;
                    }
                    .into_actor(self),
                );
            }
            // The work has ended: its WorkEnded decides.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if let Some(cause) = self.life.session_ended() {
            self.life.fail(ctx, cause);
        }
    }
}

impl<L: GroupLayer> Handler<WorkEnded> for Replicator<L> {
    type Result = ();

    fn handle(&mut self, m: WorkEnded, ctx: &mut Context<Self>) {
        let current = self.stop.is_some() && m.incarnation == self.incarnation;
        if !current || self.life.halted() || self.life.sup.is_closing() {
            return;
        }
        let cause = match m.result {
            Ok(()) => "the replicator's work ended".to_owned(),
            Err(e) => e,
        };
        self.stop_work();
        self.life.fail(ctx, cause);
    }
}

impl<L: GroupLayer> Handler<GetStatus> for Replicator<L> {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status.borrow().clone())
    }
}

impl<L: GroupLayer> Handler<Shutdown> for Replicator<L> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.life.halt();
        self.stop_work();
        // The work leaves `Replicators` itself as it stops.
        let done = self.work_done.take();
        let link = self.link.take();
        Box::pin(
            async move {
                work_ended(done).await;
                leave_and_close(link, Vec::new()).await;
            }
            .into_actor(self),
        )
    }
}

#[cfg(feature = "testing")]
impl<L: GroupLayer> Handler<Crash> for Replicator<L> {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.life.fail(ctx, planted_panic(ROLE));
    }
}

/// The work's view of the shell's session: it joins, leaves and multicasts through the
/// shell's [`SessionLink`] and receives the events the shell relays. Closing it does
/// nothing: the shell owns the session.
struct Relayed {
    link: SessionLink,
    events: mpsc::Receiver<Event>,
}

impl GroupSession for Relayed {
    fn member(&self) -> &Member {
        self.link.member()
    }

    fn join(&self, group: GroupName) -> impl Future<Output = Result<(), DriverError>> + Send {
        self.link.join(group)
    }

    fn leave(&self, group: GroupName) -> impl Future<Output = Result<(), DriverError>> + Send {
        self.link.leave(group)
    }

    fn multicast(
        &self,
        service: Service,
        groups: &[GroupName],
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), DriverError>> + Send {
        self.link.multicast(service, groups.to_vec(), payload)
    }

    fn recv(&mut self) -> impl Future<Output = Option<Event>> + Send {
        self.events.recv()
    }

    async fn close(self) {}
}
