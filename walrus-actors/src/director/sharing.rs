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
//! # Which areas are alive
//! The same group tells each area's server which other areas' name servers answer: an
//! area is *alive* while one of its Directors (whose process runs the area's embedded
//! name server and this task) is in the group's current view ([`SteeringView`]). Which
//! node serves which area is learned from the batches (each names its area); a session
//! announces itself with an empty batch when it joins and on every view change, so an
//! area that has measured nothing is known too. Steering names only alive areas
//! ([`super::steering`], "Areas that are down").
//! - *How fast:* a Director that stops (killed, stalled, cut off) leaves the view after
//!   walrus-gcs's failure detector gives up on it plus one view change: with the LAN
//!   timing (`failure_timeout` 400 ms, `settle` 50 ms) about 0.5 s, with the WAN profile
//!   about 5 s. Until then answers may still name it (the failure this closes: PowerDNS
//!   SERVFAILs for every query sent to a stalled area's zone, `docs/lab/reading.md`).
//!   It is named again as soon as it is back in a view.
//! - *In a partition* each side's view holds only the areas it can reach, so each side
//!   steers only to areas on its side (the others' learned entries are skipped for the
//!   next nearest on this side, else the paper's rule), and back after the heal.
//! - *Before any view* (the session not yet open) every area counts as alive, as before
//!   this check; a lost session keeps the last view until the next one arrives.
//! - The view is a proxy: a Director process whose name server socket is wedged while its
//!   group session still runs stays "alive".
//!
//! A plain task beside the embedded server, with its own session: the table lives in the
//! server and the view is rebuilt from the next session's events, so a lost session is
//! simply opened again. A batch
//! is bounded by [`super::learned::LearnedConfig::batch_max`]; a received payload is
//! decoded with walrus-gcs's size-limited codec and a malformed one is dropped.

use super::embedded::EmbeddedServer;
use super::learned::SampleBatch;
use super::NameServer;
use crate::group::{GroupLayer, GroupSession};
use crate::messages::{group, STEERING};
use crate::model::AreaName;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use walrus_gcs::{Event, Member, MembershipReason, NodeId, Service};

/// Which areas have a Director in the `Steering` group's current view. Sans-IO: fed the
/// group's events, it says which areas are alive.
#[derive(Debug, Default)]
pub struct SteeringView {
    /// The node each area's batches came from (a node serves one area).
    area_of: HashMap<NodeId, AreaName>,
    /// The nodes of the current view (`None`: no view yet).
    members: Option<HashSet<NodeId>>,
}

impl SteeringView {
    /// A batch (or an empty announcement) from `node` says it serves `area`. Returns
    /// whether this changed what [`SteeringView::alive`] says.
    pub fn heard_from(&mut self, node: &NodeId, area: &AreaName) -> bool {
        if self.area_of.get(node) == Some(area) {
            return false;
        }
        self.area_of.insert(node.clone(), area.clone());
        self.members.as_ref().is_some_and(|m| m.contains(node))
    }

    /// A new view with these members.
    pub fn view(&mut self, members: &[Member]) {
        self.members = Some(members.iter().map(|m| m.node.clone()).collect());
    }

    /// The areas with a member in the view (`None`: no view yet). A member whose area is
    /// not known yet (its first batch not heard) counts for no area.
    pub fn alive(&self) -> Option<HashSet<AreaName>> {
        let members = self.members.as_ref()?;
        Some(
            members
                .iter()
                .filter_map(|n| self.area_of.get(n).cloned())
                .collect(),
        )
    }
}

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
    let mut view = SteeringView::default();
    let mut alive = None;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(batch) = server.take_samples(Instant::now()) else { continue };
                send(&mut session, &batch).await?;
            }
            event = session.recv() => match event {
                Some(Event::Message { payload, sender, .. }) => {
                    match walrus_gcs::codec::decode::<SampleBatch>(&payload) {
                        Ok(batch) => {
                            if view.heard_from(&sender.0, &batch.area) {
                                publish(server, &view, &mut alive);
                            }
                            server.heard_samples(Instant::now(), &batch);
                        }
                        Err(e) => tracing::debug!(error = %e, from = %sender.0, "steering batch dropped"),
                    }
                }
                Some(Event::Membership { members, reason, .. }) => {
                    view.view(&members);
                    publish(server, &view, &mut alive);
                    // Someone joined (or a partition healed): a late joiner missed our
                    // earlier batches, so they go out again, after an announcement of
                    // which area this node serves.
                    if matches!(reason, MembershipReason::Join | MembershipReason::Network) {
                        let hello = SampleBatch { area: server.area().clone(), samples: Vec::new() };
                        send(&mut session, &hello).await?;
                        server.reshare_samples(Instant::now());
                    }
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

/// Multicasts `batch` to the group (an encoding failure is logged, not fatal).
async fn send<S: GroupSession>(
    session: &mut S,
    batch: &SampleBatch,
) -> Result<(), walrus_gcs::DriverError> {
    match walrus_gcs::codec::encode(batch) {
        Ok(bytes) => {
            session
                .multicast(Service::Reliable, &[group(STEERING)], bytes)
                .await
        }
        Err(e) => {
            tracing::warn!(error = %e, "steering samples not encoded");
            Ok(())
        }
    }
}

/// Hands the alive areas to the server, logging areas that left or came back.
fn publish(server: &EmbeddedServer, view: &SteeringView, last: &mut Option<HashSet<AreaName>>) {
    let now = view.alive();
    if now == *last {
        return;
    }
    if let (Some(before), Some(after)) = (last.as_ref(), now.as_ref()) {
        for gone in before.difference(after) {
            tracing::warn!(area = %gone, "area left the steering view: answers stop naming it");
        }
        for back in after.difference(before) {
            tracing::info!(area = %back, "area in the steering view: answers may name it");
        }
    }
    server.set_alive_areas(now.clone());
    *last = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use walrus_gcs::{Incarnation, SessionId};

    fn member(node: &str) -> Member {
        Member {
            node: NodeId(node.into()),
            incarnation: Incarnation(1),
            session: SessionId(1),
        }
    }

    fn areas(names: &[&str]) -> Option<HashSet<AreaName>> {
        Some(names.iter().map(|n| AreaName::from(*n)).collect())
    }

    #[test]
    fn an_area_is_alive_while_one_of_its_directors_is_in_the_view() {
        let mut v = SteeringView::default();
        assert_eq!(v.alive(), None, "no view yet");
        v.view(&[
            member("a1-d"),
            member("a2-d"),
            member("a2-e"),
            member("a3-d"),
        ]);
        assert_eq!(v.alive(), areas(&[]), "no area known yet");
        assert!(v.heard_from(&NodeId("a1-d".into()), &AreaName::from("a1")));
        assert!(v.heard_from(&NodeId("a2-d".into()), &AreaName::from("a2")));
        assert!(v.heard_from(&NodeId("a2-e".into()), &AreaName::from("a2")));
        assert!(!v.heard_from(&NodeId("a2-e".into()), &AreaName::from("a2")));
        assert!(v.heard_from(&NodeId("a3-d".into()), &AreaName::from("a3")));
        assert_eq!(v.alive(), areas(&["a1", "a2", "a3"]));
        // One of area 2's two Directors stops: area 2 still answers.
        v.view(&[member("a1-d"), member("a2-e"), member("a3-d")]);
        assert_eq!(v.alive(), areas(&["a1", "a2", "a3"]));
        // The other one too: area 2 is down.
        v.view(&[member("a1-d"), member("a3-d")]);
        assert_eq!(v.alive(), areas(&["a1", "a3"]));
        // A node not in the view says which area it serves: nothing changes.
        assert!(!v.heard_from(&NodeId("a4-d".into()), &AreaName::from("a4")));
        assert_eq!(v.alive(), areas(&["a1", "a3"]));
        // Back (a new incarnation of the same node).
        v.view(&[member("a1-d"), member("a2-d"), member("a3-d")]);
        assert_eq!(v.alive(), areas(&["a1", "a2", "a3"]));
    }
}
