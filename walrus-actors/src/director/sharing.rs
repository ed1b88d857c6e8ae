//! The `Steering` group: each area's embedded name server multicasts the round trips it
//! measured and takes in the other areas', so every area's server holds
//! `prefix → RTT from each area` ([`super::learned`] says what is measured, and why the
//! group is Reliable and not Agreed).
//!
//! ```text
//!   EmbeddedServer ──take_samples (every share_interval)──► SampleBatch ──Reliable──► Steering
//!   EmbeddedServer ◄──heard_samples────────────────────── SampleBatch ◄──────────── Steering
//! ```
//!
//! Reliable delivery covers the members of the view a batch is sent in; a member that
//! joins later (a node started after the others, a healed partition) would never hear
//! what was measured before. So on every join or network view change each area sends its
//! own fresh samples again ([`super::learned::Learned::reshare`]); a receiver that already
//! has a sample keeps it once.
//!
//! A plain task beside the embedded server, with its own session: it holds no state of its
//! own (the table lives in the server), so a lost session is simply opened again. A batch
//! is bounded by [`super::learned::LearnedConfig::batch_max`]; a received payload is
//! decoded with walrus-gcs's size-limited codec and a malformed one is dropped.

use super::embedded::EmbeddedServer;
use super::learned::SampleBatch;
use crate::group::{GroupLayer, GroupSession};
use crate::messages::{group, STEERING};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use walrus_gcs::{Event, MembershipReason, Service};

/// How long to wait before opening a session again after one failed.
const REOPEN: Duration = Duration::from_secs(1);

/// Shares `server`'s samples over the `Steering` group every `interval` until `shutdown`.
pub async fn run<L: GroupLayer>(
    layer: Arc<L>,
    server: EmbeddedServer,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            done = share(&*layer, &server, interval) => {
                if let Err(e) = done {
                    tracing::warn!(error = %e, "steering group session lost; opening another");
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(REOPEN) => {}
        }
    }
}

/// One session: joins, then sends and receives until the session fails.
async fn share<L: GroupLayer>(
    layer: &L,
    server: &EmbeddedServer,
    interval: Duration,
) -> Result<(), walrus_gcs::DriverError> {
    let mut session = layer.open_session().await?;
    session.join(group(STEERING)).await?;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(batch) = server.take_samples(Instant::now()) else { continue };
                match walrus_gcs::codec::encode(&batch) {
                    Ok(bytes) => {
                        session
                            .multicast(Service::Reliable, &[group(STEERING)], bytes)
                            .await?;
                    }
                    Err(e) => tracing::warn!(error = %e, "steering samples not encoded"),
                }
            }
            event = session.recv() => match event {
                Some(Event::Message { payload, sender, .. }) => {
                    match walrus_gcs::codec::decode::<SampleBatch>(&payload) {
                        Ok(batch) => server.heard_samples(Instant::now(), &batch),
                        Err(e) => tracing::debug!(error = %e, from = %sender.0, "steering batch dropped"),
                    }
                }
                // Someone joined (or a partition healed): a late joiner missed our
                // earlier batches, so they go out again.
                Some(Event::Membership { reason: MembershipReason::Join | MembershipReason::Network, .. }) => {
                    server.reshare_samples(Instant::now());
                }
                Some(_) => {}
                None => {
                    session.close().await;
                    return Ok(());
                }
            },
        }
    }
}
