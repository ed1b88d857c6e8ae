//! The Reporter's shell: joins `Reporters`; on a Controller's round request it multicasts
//! [`ReporterHandle::report`] (the latest snapshot, never a fresh reading) on
//! `Controllers`, at once. With fast failover, when its web server goes down it also
//! multicasts [`ReporterHandle::next_urgent`]'s report as [`WalrusMessage::Urgent`] on
//! `Controllers` at once, without waiting for a request.
//!
//! A tokio task (like the gatherer it answers for), for the reasons given in
//! [`crate::controller::actor`].

use super::ReporterHandle;
use crate::group::GroupSession;
use crate::model::Round;
use crate::wire::{self, WalrusMessage, CONTROLLERS, REPORTERS};
use std::future::Future;
use walrus_gcs::{DriverError, Event, Service};

/// Why a Reporter's shell stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterActorError {
    /// The group layer refused or stopped.
    #[error("reporter: group communication: {0}")]
    Group(#[from] DriverError),
    /// The session ended (node stopped, or dropped for not reading).
    #[error("reporter: the group session ended")]
    SessionEnded,
}

/// Runs the shell until `shutdown` completes (then leaves `Reporters` and closes).
pub async fn run<S: GroupSession>(
    mut session: S,
    handle: ReporterHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReporterActorError> {
    session.join(wire::group(REPORTERS)).await?;
    tracing::info!(me = %session.member(), "reporter joined Reporters");
    tokio::pin!(shutdown);
    let controllers = [wire::group(CONTROLLERS)];
    let mut urgent = handle.clone();
    let mut urgent_open = true;
    let mut last_round = Round(0);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = urgent.next_urgent(last_round), if urgent_open => match r {
                Ok(report) => {
                    tracing::warn!(round = %last_round, body = ?report.body, "sending urgent report");
                    match WalrusMessage::Urgent(report).encode() {
                        Ok(p) => session.multicast(Service::Agreed, &controllers, p).await?,
                        Err(e) => tracing::error!(error = %e, "cannot encode urgent report"),
                    }
                }
                // The gatherer stopped: reports go on from its last snapshot (TEMPFAIL once
                // stale), nothing more is urgent.
                Err(_) => urgent_open = false,
            },
            ev = session.recv() => match ev {
                None => return Err(ReporterActorError::SessionEnded),
                Some(Event::Message { payload, sender, .. }) => match WalrusMessage::decode(&payload) {
                    Ok(WalrusMessage::RoundRequest { round }) => {
                        last_round = round;
                        let report = handle.report(round);
                        tracing::debug!(%round, body = ?report.body, "answering round request");
                        match WalrusMessage::Report(report).encode() {
                            Ok(p) => session.multicast(Service::Agreed, &controllers, p).await?,
                            Err(e) => tracing::error!(error = %e, "cannot encode report"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(from = %sender.0, error = %e, "malformed message ignored"),
                },
                Some(Event::Membership { .. }) => {}
                Some(Event::Disconnected { reason }) => {
                    tracing::error!(?reason, "reporter session disconnected");
                }
            },
        }
    }
    let _ = session.leave(wire::group(REPORTERS)).await;
    session.close().await;
    Ok(())
}
