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
use crate::messages::{self, WalrusMessage, CONTROLLERS, REPORTERS};
use crate::model::Round;
#[cfg(feature = "testing")]
use crate::supervision::planted_panic;
use crate::supervision::{
    guard, leave_and_close, open_and_join, ActorHome, Inbox, RoleAddr, RoleLife, SessionLink,
    Supervision,
};
use actix::prelude::*;
use std::sync::Arc;
use tokio::sync::mpsc;
use walrus_gcs::{Event, Service};

/// The role's name in logs and `/metrics`.
pub const ROLE: &str = "reporter";

/// Requests a Reporter's mailbox holds.
pub const MAILBOX: usize = 16;

#[cfg(feature = "testing")]
pub use crate::supervision::Crash;
pub use crate::supervision::Shutdown;

/// The gatherer raised an urgent report (fast failover).
#[derive(Debug, Clone, Copy)]
struct UrgentRaised;

/// A running Reporter shell's address.
pub type ReporterActor = RoleAddr;

/// Starts a supervised Reporter shell in `home` over `layer`, answering with `handle`
/// (the gatherer's, see [`super::spawn`]).
pub fn start<L: GroupLayer>(
    home: &ActorHome,
    supervision: &Supervision,
    layer: Arc<L>,
    handle: ReporterHandle,
) -> ReporterActor {
    let life = RoleLife::new(ROLE, supervision.clone());
    let addr = crate::supervision::start_in(home, MAILBOX, move |_| Reporter {
        layer,
        life,
        handle,
        link: None,
        last_round: Round(0),
    });
    RoleAddr::of(&addr)
}

/// The Reporter shell actor.
pub struct Reporter<L: GroupLayer> {
    layer: Arc<L>,
    life: RoleLife,
    handle: ReporterHandle,
    link: Option<SessionLink>,
    /// The last round answered (an urgent report carries it).
    last_round: Round,
}

impl<L: GroupLayer> Actor for Reporter<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.life.halted() {
            return;
        }
        // Urgent raises: a helper on the node's runtime that ends with this incarnation.
        let (tx, rx) = mpsc::channel(4);
        let mut h = self.handle.clone();
        self.life.sup.spawn(async move {
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
        let groups = vec![messages::group(REPORTERS)];
        ctx.wait(
            open_and_join(self.layer.clone(), self.life.sup.clone(), ROLE, groups)
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok((link, events)) => {
                        tracing::info!(me = %link.member(), "reporter joined Reporters");
                        act.link = Some(link);
                        ctx.add_stream(events);
                    }
                    Err(e) => act.life.fail(ctx, format!("joining Reporters: {e}")),
                }),
        );
    }
}

impl<L: GroupLayer> Supervised for Reporter<L> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.link = None;
        self.last_round = Round(0);
        self.life.restarting();
    }
}

impl<L: GroupLayer> StreamHandler<Event> for Reporter<L> {
    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match guard(self, |act| act.on_event(ev)) {
            Ok(Some(msg)) => self.send(ctx, msg),
            Ok(None) => {}
            Err(cause) => self.life.fail(ctx, cause),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if let Some(cause) = self.life.session_ended() {
            self.life.fail(ctx, cause);
        }
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
        self.life.halt();
        Box::pin(
            leave_and_close(self.link.take(), vec![messages::group(REPORTERS)]).into_actor(self),
        )
    }
}

#[cfg(feature = "testing")]
impl<L: GroupLayer> Handler<Crash> for Reporter<L> {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.life.fail(ctx, planted_panic(ROLE));
    }
}

impl<L: GroupLayer> Reporter<L> {
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
                link.multicast(Service::Agreed, vec![messages::group(CONTROLLERS)], payload)
                    .await
            }
            .into_actor(self)
            .map(|r, act, ctx| {
                if let Err(e) = r {
                    act.life.fail(ctx, format!("multicast: {e}"));
                }
            }),
        );
    }
}
