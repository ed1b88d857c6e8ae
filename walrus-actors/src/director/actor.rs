//! The Director's shell: joins `Directors` and forwards every delivered [`Decision`] to
//! the director driver ([`super::driver::run`]), which applies its own area's answer.
//!
//! # Which Director writes (several per area, and the master as fallback)
//!
//! With an RFC 2136 name server, an area may have several Directors (on different hosts,
//! so losing one host does not leave the area's name server with a dead answer). Exactly
//! one writes at a time: every Director of the area, and every Controller node that holds
//! the area's key (the fallback), joins the area's writer group ([`writer_group`]); the
//! *first member of that group whose node is one of the area's configured Directors* is
//! the writer ([`Election`]). It is the same at every member (walrus-gcs gives one member
//! list per component, in join order, and a join never changes who is first), so there is
//! one writer per connected component; when it fails, the next one is first within the
//! failure-detection time and takes over (its first write stamps the newest epoch, see
//! [`super::Fence`]). When no Director of the area is in the component, the group's
//! members are only fallbacks, and the master Controller's node writes (the paper's
//! own design: the Controller updates DNS) — **but only while the master hears from the
//! area** ([`fallback_may_write`]): some server of the area's home cluster answered its
//! last round (working, BYPASS or PANIC; not silent). An area whose Directors and servers
//! are all silent cannot be told from an area cut off by a partition, and then its own
//! side, if it lives, has its own master and Director deciding with what it sees (the
//! paper's partitions: a Director follows only the master it hears); a fallback writing
//! too would send the area's clients to the far side by an older picture, and a
//! minority's master would overwrite the majority's areas. The case the fallback exists
//! for (issue 17: a Director's host lost while its cluster fails) still has the cluster's
//! other Reporters to hear; a site whose every host is lost but its name server needs a
//! second Director elsewhere. Writes are fenced by epoch, so a deposed writer's late
//! update is refused by the server whoever wins a race.
//!
//! An actix actor under `actix::Supervisor` (see [`crate::supervision`]) in front of the
//! driver (a tokio task that owns the name server and [`super::core::DirectorCore`]): a
//! restart of the shell rejoins its groups with a new session, and the driver keeps the
//! stored answer and its retry state.

use crate::controller::assign::{DeadCause, ServerState};
use crate::controller::round::RoundStatus;
use crate::group::GroupLayer;
use crate::messages::{self, WalrusMessage, DIRECTORS};
use crate::model::{AreaName, Decision, ServerName};
#[cfg(feature = "testing")]
use crate::supervision::planted_panic;
use crate::supervision::{
    guard, leave_and_close, open_and_join, ActorHome, RoleAddr, RoleLife, SessionLink, Supervision,
};
use actix::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use walrus_gcs::{Event, GroupName, Member, NodeId};

/// The role's name in logs and `/metrics`.
pub const ROLE: &str = "director";

/// Requests a Director's mailbox holds.
pub const MAILBOX: usize = 16;

/// The name of the group whose first configured Director writes `area`'s name server.
pub fn writer_group(area: &AreaName) -> String {
    format!("{DIRECTORS}/{area}")
}

/// One area's writer election, seen from one member of its writer group.
#[derive(Debug)]
pub struct Election {
    /// The area.
    pub area: AreaName,
    /// Node names of the area's configured Directors (Controller nodes that only stand
    /// in are not among them).
    pub directors: BTreeSet<NodeId>,
    /// The node of the current writer among them; `None` when no Director of the area
    /// is in this component (then the master's node writes).
    pub writer: watch::Sender<Option<NodeId>>,
}

impl Election {
    /// The writer for a member list: the first member that is a configured Director.
    pub fn writer_of(&self, members: &[Member]) -> Option<NodeId> {
        members
            .iter()
            .map(|m| &m.node)
            .find(|n| self.directors.contains(*n))
            .cloned()
    }
}

/// Whether a fallback writer (the master's node, no Director of the area in its
/// component) may write the area's name server: only when the master's last round heard
/// from some server of the area's home cluster (`home`), i.e. one is not
/// [`DeadCause::NoAnswer`]. See the module doc for why a silent area is left alone.
pub fn fallback_may_write<'a>(
    home: impl IntoIterator<Item = &'a ServerName>,
    last_round: Option<&RoundStatus>,
) -> bool {
    let Some(round) = last_round else {
        return false;
    };
    home.into_iter().any(|s| {
        round
            .states
            .get(s)
            .is_some_and(|st| *st != ServerState::Dead(DeadCause::NoAnswer))
    })
}

#[cfg(feature = "testing")]
pub use crate::supervision::Crash;
pub use crate::supervision::Shutdown;

/// A running Director shell's address.
pub type DirectorActor = RoleAddr;

/// Starts a supervised Director shell in `home` over `layer`: it joins `Directors` (and,
/// with `election`, the area's writer group) and forwards every decision to `decisions`
/// (the driver). When the driver is gone the decisions are dropped; the shell keeps its
/// membership.
pub fn start<L: GroupLayer>(
    home: &ActorHome,
    supervision: &Supervision,
    layer: Arc<L>,
    decisions: mpsc::Sender<Decision>,
    election: Option<Election>,
) -> DirectorActor {
    let life = RoleLife::new(ROLE, supervision.clone());
    let addr = crate::supervision::start_in(home, MAILBOX, move |_| Director {
        layer,
        life,
        decisions,
        election,
        link: None,
    });
    RoleAddr::of(&addr)
}

/// The Director shell actor.
pub struct Director<L: GroupLayer> {
    layer: Arc<L>,
    life: RoleLife,
    decisions: mpsc::Sender<Decision>,
    election: Option<Election>,
    link: Option<SessionLink>,
}

impl<L: GroupLayer> Director<L> {
    fn groups(&self) -> Vec<GroupName> {
        let mut g = vec![messages::group(DIRECTORS)];
        if let Some(e) = &self.election {
            g.push(messages::group(&writer_group(&e.area)));
        }
        g
    }

    /// The decision to forward for `ev`, if any.
    fn on_event(&mut self, ev: Event) -> Option<Decision> {
        match ev {
            Event::Message {
                payload, sender, ..
            } => match WalrusMessage::decode(&payload) {
                Ok(WalrusMessage::Decision(d)) => {
                    tracing::debug!(round = %d.round, "decision received");
                    Some(d)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(from = %sender.0, error = %e, "malformed message ignored");
                    None
                }
            },
            Event::Membership { group, members, .. } => {
                if let Some(e) = &self.election {
                    if group == messages::group(&writer_group(&e.area)) {
                        let writer = e.writer_of(&members);
                        if *e.writer.borrow() != writer {
                            tracing::info!(area = %e.area, writer = ?writer, members = members.len(), "writer of the area's name server");
                            e.writer.send_replace(writer);
                        }
                    }
                }
                None
            }
            Event::Disconnected { reason } => {
                tracing::error!(?reason, "director session disconnected");
                None
            }
        }
    }

    fn forward(&mut self, ctx: &mut Context<Self>, d: Decision) {
        match self.decisions.try_send(d) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(d)) => {
                // The driver is behind: wait for it before taking the next event.
                self.life.sup.mailbox_full("director driver");
                let tx = self.decisions.clone();
                ctx.wait(
                    async move {
                        if tx.send(d).await.is_err() {
                            tracing::warn!("director driver has stopped; decision dropped");
                        }
                    }
                    .into_actor(self),
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("director driver has stopped; decision dropped");
            }
        }
    }
}

impl<L: GroupLayer> Actor for Director<L> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.life.halted() {
            return;
        }
        ctx.wait(
            open_and_join(
                self.layer.clone(),
                self.life.sup.clone(),
                ROLE,
                self.groups(),
            )
            .into_actor(self)
            .map(|r, act, ctx| match r {
                Ok((link, events)) => {
                    tracing::info!(me = %link.member(), "director joined Directors");
                    act.link = Some(link);
                    ctx.add_stream(events);
                }
                Err(e) => act.life.fail(ctx, format!("joining Directors: {e}")),
            }),
        );
    }
}

impl<L: GroupLayer> Supervised for Director<L> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.link = None;
        self.life.restarting();
    }
}

impl<L: GroupLayer> StreamHandler<Event> for Director<L> {
    fn handle(&mut self, ev: Event, ctx: &mut Context<Self>) {
        match guard(self, |act| act.on_event(ev)) {
            Ok(Some(d)) => self.forward(ctx, d),
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

impl<L: GroupLayer> Handler<Shutdown> for Director<L> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.life.halt();
        Box::pin(leave_and_close(self.link.take(), self.groups()).into_actor(self))
    }
}

#[cfg(feature = "testing")]
impl<L: GroupLayer> Handler<Crash> for Director<L> {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.life.fail(ctx, planted_panic(ROLE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::assign::LoadBasis;
    use crate::model::Round;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn round(states: &[(&str, ServerState)]) -> RoundStatus {
        RoundStatus {
            round: Round(7),
            reports: states.len(),
            states: states
                .iter()
                .map(|(s, st)| (ServerName::from(*s), *st))
                .collect(),
            cluster_loads: BTreeMap::new(),
            duration: Duration::from_millis(5),
            early: false,
            generations: BTreeMap::new(),
            newest_generation: None,
        }
    }

    #[test]
    fn a_fallback_writes_only_for_an_area_it_hears_from() {
        let home = [ServerName::from("c1-s1"), ServerName::from("c1-s2")];
        let silent = ServerState::Dead(DeadCause::NoAnswer);
        let working = ServerState::Working {
            load: 0.2,
            basis: LoadBasis::Fresh,
        };
        // No round closed yet: nothing is known of the area.
        assert!(!fallback_may_write(&home, None));
        // Every home server silent (a cut or a lost site): left to the area's own side.
        let cut = round(&[("c1-s1", silent), ("c1-s2", silent), ("c2-s1", working)]);
        assert!(!fallback_may_write(&home, Some(&cut)));
        // Issue 17's case: the Director's host is gone, another Reporter tells c1-s2 failed.
        let failed = round(&[
            ("c1-s1", silent),
            ("c1-s2", ServerState::Dead(DeadCause::Panic)),
        ]);
        assert!(fallback_may_write(&home, Some(&failed)));
        let bypass = round(&[("c1-s2", ServerState::Dead(DeadCause::Bypass))]);
        assert!(fallback_may_write(&home, Some(&bypass)));
        let up = round(&[("c1-s1", silent), ("c1-s2", working)]);
        assert!(fallback_may_write(&home, Some(&up)));
        // Servers of other clusters do not count.
        let others = round(&[("c2-s1", working)]);
        assert!(!fallback_may_write(&home, Some(&others)));
    }
}
