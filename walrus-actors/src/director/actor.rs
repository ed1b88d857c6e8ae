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
//! own design: the Controller updates DNS). Writes are fenced by epoch, so a deposed
//! writer's late update is refused by the server whoever wins a race.
//!
//! A tokio task, like the driver it feeds (see [`crate::controller::actor`] for why).

use crate::group::GroupSession;
use crate::model::{AreaName, Decision};
use crate::wire::{self, WalrusMessage, DIRECTORS};
use std::collections::BTreeSet;
use std::future::Future;
use tokio::sync::{mpsc, watch};
use walrus_gcs::{DriverError, Event, Member};

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
    pub directors: BTreeSet<String>,
    /// The node of the current writer among them; `None` when no Director of the area
    /// is in this component (then the master's node writes).
    pub writer: watch::Sender<Option<String>>,
}

impl Election {
    /// The writer for a member list: the first member that is a configured Director.
    pub fn writer_of(&self, members: &[Member]) -> Option<String> {
        members
            .iter()
            .map(|m| m.node.as_str())
            .find(|n| self.directors.contains(*n))
            .map(str::to_owned)
    }
}

/// Why a Director's shell stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectorActorError {
    /// The group layer refused or stopped.
    #[error("director: group communication: {0}")]
    Group(#[from] DriverError),
    /// The session ended (node stopped, or dropped for not reading).
    #[error("director: the group session ended")]
    SessionEnded,
}

/// Runs the shell until `shutdown` completes (then leaves `Directors` and closes). When
/// the driver is gone the decisions are dropped; the shell keeps its membership.
pub async fn run<S: GroupSession>(
    session: S,
    decisions: mpsc::Sender<Decision>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DirectorActorError> {
    run_elected(session, decisions, None, shutdown).await
}

/// [`run`], also taking part in `election`'s writer group (see the module doc).
pub async fn run_elected<S: GroupSession>(
    mut session: S,
    decisions: mpsc::Sender<Decision>,
    election: Option<Election>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DirectorActorError> {
    session.join(wire::group(DIRECTORS)).await?;
    tracing::info!(me = %session.member(), "director joined Directors");
    let area_group = election
        .as_ref()
        .map(|e| wire::group(&writer_group(&e.area)));
    if let Some(g) = &area_group {
        session.join(g.clone()).await?;
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = session.recv() => match ev {
                None => return Err(DirectorActorError::SessionEnded),
                Some(Event::Message { payload, sender, .. }) => match WalrusMessage::decode(&payload) {
                    Ok(WalrusMessage::Decision(d)) => {
                        tracing::debug!(round = %d.round, "decision received");
                        if decisions.send(d).await.is_err() {
                            tracing::warn!("director driver has stopped; decision dropped");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(from = %sender.0, error = %e, "malformed message ignored"),
                },
                Some(Event::Membership { group, members, .. }) => {
                    if let (Some(e), Some(g)) = (&election, &area_group) {
                        if &group == g {
                            let writer = e.writer_of(&members);
                            if *e.writer.borrow() != writer {
                                tracing::info!(area = %e.area, writer = ?writer, members = members.len(), "writer of the area's name server");
                                e.writer.send_replace(writer);
                            }
                        }
                    }
                }
                Some(Event::Disconnected { reason }) => {
                    tracing::error!(?reason, "director session disconnected");
                }
            },
        }
    }
    if let Some(g) = area_group {
        let _ = session.leave(g).await;
    }
    let _ = session.leave(wire::group(DIRECTORS)).await;
    session.close().await;
    Ok(())
}
