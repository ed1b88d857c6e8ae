//! The Director's shell: joins `Directors` and forwards every delivered [`Decision`] to
//! the director driver ([`super::driver::run`]), which applies its own area's answer.
//!
//! A tokio task, like the driver it feeds (see [`crate::controller::actor`] for why).

use crate::group::GroupSession;
use crate::model::Decision;
use crate::wire::{self, WalrusMessage, DIRECTORS};
use std::future::Future;
use tokio::sync::mpsc;
use walrus_gcs::{DriverError, Event};

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
    mut session: S,
    decisions: mpsc::Sender<Decision>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DirectorActorError> {
    session.join(wire::group(DIRECTORS)).await?;
    tracing::info!(me = %session.member(), "director joined Directors");
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
                Some(Event::Membership { .. }) => {}
                Some(Event::Disconnected { reason }) => {
                    tracing::error!(?reason, "director session disconnected");
                }
            },
        }
    }
    let _ = session.leave(wire::group(DIRECTORS)).await;
    session.close().await;
    Ok(())
}
