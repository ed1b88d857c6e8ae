//! Queries of an in-process deployment (`walrus_node::cluster`, feature `node`): who is
//! master with which decision, an area's embedded serial, the Controller-only nodes.

use walrus_actors::model::{AreaName, Decision};
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
