//! The Reporter's shell: joins `Reporters`; on a Controller's round request it multicasts
//! [`ReporterHandle::report`] (the latest snapshot, never a fresh reading) on
//! `Controllers`, at once. With fast failover, when its web server goes down it also
//! multicasts the urgent report ([`ReporterHandle::next_urgent`]) as
//! [`WalrusMessage::Urgent`] on `Controllers` at once, without waiting for a request.
//!
//! An actix actor under `actix::Supervisor` (see [`crate::supervision`]): group events
//! and urgent raises arrive as streams; the gatherer (a tokio task reading the OS and the
//! web server) is its I/O and keeps running across a restart of the shell, which rejoins
//! `Reporters` with a new session.

use super::ReporterHandle;
use crate::group::GroupLayer;
use crate::model::Round;
use crate::supervision::{guard, open_and_join, ActorHome, Inbox, SessionLink, Supervision};
use crate::wire::{self, WalrusMessage, CONTROLLERS, REPORTERS};
use actix::prelude::*;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use walrus_gcs::{Event, Service};

/// The role's name in logs and `/metrics`.
pub const ROLE: &str = "reporter";

/// Requests a Reporter's mailbox holds.
pub const MAILBOX: usize = 16;

/// Leave `Reporters`, close the session and stay idle (the node is stopping).
#[derive(Debug, Clone, Copy)]
pub struct Shutdown;

impl Message for Shutdown {
    type Result = ();
}

/// Test only: panics inside the actor, as a bug would.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy)]
pub struct Crash;

#[cfg(feature = "testing")]
impl Message for Crash {
    type Result = ();
}

/// The gatherer raised an urgent report (fast failover).
#[derive(Debug, Clone, Copy)]
struct UrgentRaised;

/// A running Reporter shell's address.
#[derive(Debug, Clone)]
pub struct ReporterActor {
    shutdown: Recipient<Shutdown>,
    #[cfg(feature = "testing")]
    crash: Recipient<Crash>,
}

impl ReporterActor {
    /// Leaves `Reporters` and closes the session (the node is stopping).
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(Shutdown).await;
    }

    /// Test only: makes the actor panic (it is restarted by its supervisor).
    #[cfg(feature = "testing")]
    pub fn crash(&self) {
        let _ = self.crash.try_send(Crash);
    }
}

/// Starts a supervised Reporter shell in `home` over `layer`, answering with `handle`
/// (the gatherer's, see [`super::spawn`]).
pub fn start<L: GroupLayer>(
    home: &ActorHome,
    supervision: &Supervision,
    layer: Arc<L>,
    handle: ReporterHandle,
) -> ReporterActor {
    let sup = supervision.clone();
    let addr = crate::supervision::start_in(home, MAILBOX, move |_| Reporter {
        layer,
        sup,
        handle,
        link: None,
        last_round: Round(0),
        failure: None,
        halted: false,
    });
    ReporterActor {
        shutdown: addr.clone().recipient(),
        #[cfg(feature = "testing")]
        crash: addr.recipient(),
    }
}

/// The Reporter shell actor.
pub struct Reporter<L: GroupLayer> {
    layer: Arc<L>,
    sup: Supervision,
    handle: ReporterHandle,
    link: Option<SessionLink>,
    /// The last round answered (an urgent report carries it).
    last_round: Round,
    failure: Option<String>,
    halted: bool,
}

impl<L: GroupLayer> Actor for Reporter<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.halted {
            return;
        }
        // Urgent raises: a helper on the node's runtime that ends with this incarnation.
        let (tx, rx) = mpsc::channel(4);
        let mut h = self.handle.clone();
        self.sup.spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    r = h.next_urgent(Round(0)) => match r {
                        Ok(_) => if tx.send(UrgentRaised).await.is_err() { return },
                        // The gatherer stopped: reports go on from its last snapshot
                        // (TEMPFAIL once stale), nothing more is urgent.
                        Err(_) => return,
                    },
                }
            }
        });
        ctx.add_stream(Inbox(rx));
        let groups = vec![wire::group(REPORTERS)];
        ctx.wait(
            open_and_join(self.layer.clone(), self.sup.clone(), ROLE, groups)
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok((link, events)) => {
                        tracing::info!(me = %link.member(), "reporter joined Reporters");
                        act.link = Some(link);
                        ctx.add_stream(events);
                    }
                    Err(e) => act.fail(ctx, format!("joining Reporters: {e}")),
                }),
        );
    }
}

impl<L: GroupLayer> Supervised for Reporter<L> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        let cause = self.failure.take().unwrap_or_else(|| "stopped".to_owned());
        self.link = None;
        self.last_round = Round(0);
        if self.halted || self.sup.is_closing() {
            self.halted = true;
            return;
        }
        if self.sup.restarted(ROLE, &cause, Instant::now()).is_err() {
            self.halted = true;
        }
    }
}

impl<L: GroupLayer> StreamHandler<Event> for Reporter<L> {
    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match guard(self, |act| act.on_event(ev)) {
            Ok(Some(msg)) => self.send(ctx, msg),
            Ok(None) => {}
            Err(cause) => self.fail(ctx, cause),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.halted || self.sup.is_closing() {
            return;
        }
        self.fail(ctx, "the group session ended".to_owned());
    }
}

impl<L: GroupLayer> StreamHandler<UrgentRaised> for Reporter<L> {
    fn handle(&mut self, _: UrgentRaised, ctx: &mut Context<Self>) {
        let report = self.handle.report(self.last_round);
        tracing::warn!(round = %self.last_round, body = ?report.body, "sending urgent report");
        self.send(ctx, WalrusMessage::Urgent(report));
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The gatherer stopped: nothing more is urgent; round requests are still answered.
    }
}

impl<L: GroupLayer> Handler<Shutdown> for Reporter<L> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.halted = true;
        let link = self.link.take();
        Box::pin(
            async move {
                if let Some(link) = link {
                    let _ = link.leave(wire::group(REPORTERS)).await;
                    link.close().await;
                }
            }
            .into_actor(self),
        )
    }
}

#[cfg(feature = "testing")]
impl<L: GroupLayer> Handler<Crash> for Reporter<L> {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        if let Err(cause) = guard(self, |_| panic!("test-only crash of the reporter")) {
            self.fail(ctx, cause);
        }
    }
}

impl<L: GroupLayer> Reporter<L> {
    fn fail(&mut self, ctx: &mut Context<Self>, cause: String) {
        tracing::error!(role = ROLE, %cause, "reporter failed");
        self.failure = Some(cause);
        ctx.stop();
    }

    /// The message to send for `ev`, if any.
    fn on_event(&mut self, ev: Event) -> Option<WalrusMessage> {
        match ev {
            Event::Message {
                payload, sender, ..
            } => match WalrusMessage::decode(&payload) {
                Ok(WalrusMessage::RoundRequest { round }) => {
                    self.last_round = round;
                    let report = self.handle.report(round);
                    tracing::debug!(%round, body = ?report.body, "answering round request");
                    Some(WalrusMessage::Report(report))
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(from = %sender.0, error = %e, "malformed message ignored");
                    None
                }
            },
            Event::Membership { .. } => None,
            Event::Disconnected { reason } => {
                tracing::error!(?reason, "reporter session disconnected");
                None
            }
        }
    }

    /// Multicasts `msg` on `Controllers` before handling anything else.
    fn send(&mut self, ctx: &mut Context<Self>, msg: WalrusMessage) {
        let payload = match msg.encode() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a report");
                return;
            }
        };
        let Some(link) = self.link.clone() else {
            return;
        };
        ctx.wait(
            async move {
                link.multicast(Service::Agreed, vec![wire::group(CONTROLLERS)], payload)
                    .await
            }
            .into_actor(self)
            .map(|r, act, ctx| {
                if let Err(e) = r {
                    act.fail(ctx, format!("multicast: {e}"));
                }
            }),
        );
    }
}
