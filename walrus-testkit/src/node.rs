//! Queries of an in-process deployment (`walrus_node::cluster`, feature `node`): who is
//! master with which decision, an area's embedded serial, the Controller-only nodes.

use walrus_actors::model::{AreaName, Decision, Round};
use walrus_node::cluster::{Cluster, Layers};

/// The Controller-only nodes of the tests' deployments.
pub const CONTROLLERS: [&str; 3] = ["ctl-1", "ctl-2", "ctl-3"];

/// The one master among the running nodes and its last decision; `None` while there is
/// not exactly one, or it has not decided yet.
pub fn master<F: Layers>(cluster: &Cluster<F>) -> Option<(String, Decision)> {
    let masters: Vec<String> = cluster
        .running()
        .into_iter()
        .filter(|n| {
            cluster
                .node(n)
                .and_then(|rt| rt.controller())
                .is_some_and(|c| c.status().is_master)
        })
        .collect();
    if masters.len() != 1 {
        return None;
    }
    let st = cluster.node(&masters[0])?.controller()?.status();
    Some((masters[0].clone(), st.last_decision?))
}

/// The SOA serial of `area`'s embedded name server on node `node`.
pub fn serial<F: Layers>(cluster: &Cluster<F>, node: &str, area: &str) -> u32 {
    let rt = cluster.node(node).expect("a running node");
    let (server, _) = rt.directors()[&AreaName::from(area)]
        .embedded
        .clone()
        .expect("an embedded name server");
    server.state().serial
}

/// Waits until the Directors of the two-area deployment (w-1's a1, w-2's a2) have each
/// applied a decision to their embedded name server (`in_sync`). A Director that has just
/// started holds its first decision until the next one agrees, then writes it (the serial
/// goes up by one): a master's decision says nothing about whether that write happened
/// yet, and on a loaded machine it can come rounds later. Read serials to compare only
/// after this.
pub async fn directors_in_sync<F: Layers>(cluster: &Cluster<F>) {
    let in_sync = |node: &str, area: &str| {
        cluster.node(node).is_some_and(|rt| {
            rt.directors()
                .get(&AreaName::from(area))
                .is_some_and(|d| d.status.borrow().in_sync)
        })
    };
    crate::wait::poll_until_async(
        "w-1's and w-2's Directors have applied a decision",
        crate::wait::PATIENCE,
        || (in_sync("w-1", "a1") && in_sync("w-2", "a2")).then_some(()),
    )
    .await;
}

/// A takeover that changed nothing: waits for a master other than `old` three rounds past
/// `from`, then asserts that its decision keeps `before`'s answers with no change and that
/// neither name server of the two-area deployment (w-1's a1, w-2's a2) was written since
/// `serials` were read. Returns the new master and its decision.
pub async fn takeover_changed_nothing<F: Layers>(
    cluster: &Cluster<F>,
    old: &str,
    from: Round,
    before: &Decision,
    serials: (u32, u32),
) -> (String, Decision) {
    let (new_master, after) = crate::wait::poll_until_async(
        "a new master, three rounds on",
        crate::wait::PATIENCE,
        || {
            let (m, d) = master(cluster)?;
            (m != old && d.round.0 >= from.0 + 3).then_some((m, d))
        },
    )
    .await;
    assert_eq!(
        after.answers, before.answers,
        "the takeover changed an answer"
    );
    assert!(
        after.changes.is_empty(),
        "changes after the takeover: {:?}",
        after.changes
    );
    assert_eq!(
        (serial(cluster, "w-1", "a1"), serial(cluster, "w-2", "a2")),
        serials,
        "a name server was updated during the takeover"
    );
    (new_master, after)
}
