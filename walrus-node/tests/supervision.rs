//! Supervision of the role actors inside running nodes (over the real walrus-gcs, QUIC
//! with mutual TLS on loopback): each role's actor is made to panic through the
//! test-only `Crash` message and is restarted with its state rebuilt while the node and
//! its other roles keep running; the master Controller's crash hands mastership to a
//! backup with no answer changed; and a role that keeps failing stops the node with an
//! error naming the role, the limit and the cause. The Replicator's actor (primary and
//! replica) restarts too: the replica keeps serving its generation and catches up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use walrus_actors::model::{AreaName, Decision};
use walrus_node::cluster::{free_dns_port, Cluster, Layers, QuicLayers};
use walrus_node::config::Config;
use walrus_testkit::dns::dig_a_text as dig_a;
use walrus_testkit::node::{
    directors_in_sync, master, serial, takeover_changed_nothing, CONTROLLERS,
};
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_async as poll_until;

fn restarts<F: Layers>(cluster: &Cluster<F>, node: &str, role: &str) -> u64 {
    cluster
        .node(node)
        .unwrap()
        .supervision()
        .metrics()
        .get(role)
        .map_or(0, |m| m.restarts)
}

/// Crashes `node`'s Replicator actor and waits for its first restart.
async fn crash_replicator<F: Layers>(cluster: &Cluster<F>, node: &str) {
    let rt = cluster.node(node).unwrap();
    rt.replicator_actor().unwrap().role().crash();
    poll_until(&format!("{node}'s replicator restarted"), PATIENCE, || {
        (restarts(cluster, node, "replicator") == 1).then_some(())
    })
    .await;
}

/// Two areas, three Controllers; with `replication`, ctl-1 is also the Replicator's
/// primary (content root `DIR/site`) and w-1 a replica (store `DIR/w-1-store`).
async fn deployment(tag: &str, replication: bool) -> (TempDir, Vec<TinyHttp>, [u16; 2], Config) {
    let dir = TempDir::new(tag);
    let w1 = TinyHttp::start().await;
    let w2 = TinyHttp::start().await;
    let ports = [free_dns_port().unwrap(), free_dns_port().unwrap()];
    let ctl = |name| NodeSpec {
        name,
        roles: &["controller"],
        server: None,
        area: None,
    };
    let mut toml = two_area_toml(
        ports,
        [w1.url(), w2.url()],
        &[
            NodeSpec {
                roles: if replication {
                    &["controller", "replicator"]
                } else {
                    &["controller"]
                },
                ..ctl("ctl-1")
            },
            ctl("ctl-2"),
            ctl("ctl-3"),
            NodeSpec {
                roles: if replication {
                    &["reporter", "director", "replicator"]
                } else {
                    &["reporter", "director"]
                },
                ..NodeSpec::worker("w-1", "s1", "a1")
            },
            NodeSpec::worker("w-2", "s2", "a2"),
        ],
    );
    if replication {
        let d = dir.path();
        std::fs::create_dir_all(d.join("site")).unwrap();
        std::fs::write(d.join("site/index.html"), "v1").unwrap();
        let store = format!("replicator_root = \"{}\"", d.join("w-1-store").display());
        toml = add_to_node(&toml, "w-1", &store);
        toml += &format!(
            "[replicator]\nprimary = \"ctl-1\"\nroot = \"{}\"\nkeep = 2\n",
            d.join("site").display()
        );
    }
    let config = Config::from_toml(Path::new("test.toml"), &patient_reports(&toml)).unwrap();
    (dir, vec![w1, w2], ports, config)
}

/// Waits until the master (any) has decided `rounds` more rounds after `after`, and
/// returns its last decision.
async fn rounds_go_on<F: Layers>(cluster: &Cluster<F>, what: &str, after: &Decision) -> Decision {
    poll_until(what, PATIENCE, || {
        let (_, d) = master(cluster)?;
        (d.round.0 >= after.round.0 + 3).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_actor_restarts_and_the_master_controller_hands_over_without_changes() {
    init_logs();
    let (dir, _web, [p1, p2], config) = deployment("supervision", true).await;
    let cluster = Cluster::start(config, dir.path(), QuicLayers)
        .await
        .unwrap();
    let dns1: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let dns2: SocketAddr = format!("127.0.0.1:{p2}").parse().unwrap();
    let home = |d: &Decision| {
        d.answers
            .get(&AreaName::from("a1"))
            .map(|a| a.records.len())
            == Some(1)
            && d.answers[&AreaName::from("a1")].records[0].to_string() == "192.0.2.1"
            && d.answers
                .get(&AreaName::from("a2"))
                .is_some_and(|a| a.records.len() == 1 && a.records[0].to_string() == "192.0.2.2")
    };
    let (old_master, before) = poll_until("one master with both areas home", PATIENCE, || {
        let (m, d) = master(&cluster)?;
        (home(&d) && d.round.0 >= 3).then_some((m, d))
    })
    .await;
    poll_until("the name servers serve the home answers", PATIENCE, || {
        (dig_a(dns1, "www.example.com") == ["192.0.2.1"]
            && dig_a(dns2, "www.example.com") == ["192.0.2.2"])
        .then_some(())
    })
    .await;
    poll_until("every backup holds the master's answers", PATIENCE, || {
        CONTROLLERS
            .iter()
            .filter(|c| **c != old_master)
            .all(|c| {
                let st = cluster.node(c).unwrap().controller().unwrap().status();
                st.last_decision
                    .is_some_and(|d| d.answers == before.answers)
            })
            .then_some(())
    })
    .await;
    directors_in_sync(&cluster).await;
    let serials = (serial(&cluster, "w-1", "a1"), serial(&cluster, "w-2", "a2"));

    // The Reporter of s1: restarted, it rejoins Reporters; rounds go on, nothing moves.
    cluster
        .node("w-1")
        .unwrap()
        .reporter_actor()
        .unwrap()
        .crash();
    poll_until("w-1's reporter restarted", PATIENCE, || {
        (restarts(&cluster, "w-1", "reporter") == 1).then_some(())
    })
    .await;
    let d = rounds_go_on(&cluster, "rounds after the reporter's restart", &before).await;
    assert_eq!(
        d.answers, before.answers,
        "a reporter's restart moved an area"
    );

    // The Director of a1: restarted, it rejoins Directors; the next change would reach it.
    cluster.node("w-1").unwrap().director_actors()[0].crash();
    poll_until("w-1's director restarted", PATIENCE, || {
        (restarts(&cluster, "w-1", "director") == 1).then_some(())
    })
    .await;
    let d = rounds_go_on(&cluster, "rounds after the director's restart", &d).await;
    assert_eq!(d.answers, before.answers);
    assert_eq!(dig_a(dns1, "www.example.com"), ["192.0.2.1"]);

    // The Replicator: the replica's actor, then the primary's. Each restarts with its
    // state rebuilt from disk and rejoins Replicators; the replica keeps serving its
    // generation whole meanwhile and catches up with what changed.
    let served = dir.path().join("w-1-store/current/index.html");
    let replica_at = |text: &'static str| {
        let served = served.clone();
        move || (std::fs::read_to_string(&served).ok()? == text).then_some(())
    };
    poll_until(
        "w-1 serves the first generation",
        PATIENCE,
        replica_at("v1"),
    )
    .await;
    let generation = |node: &str| {
        cluster
            .node(node)
            .unwrap()
            .replicator()
            .unwrap()
            .borrow()
            .generation
    };
    let g1 = generation("w-1");
    crash_replicator(&cluster, "w-1").await;
    assert_eq!(std::fs::read_to_string(&served).unwrap(), "v1");
    assert_eq!(generation("w-1"), g1, "the restart changed what w-1 serves");
    std::fs::write(dir.path().join("site/index.html"), "v2").unwrap();
    poll_until(
        "w-1 catches up after its restart",
        PATIENCE,
        replica_at("v2"),
    )
    .await;
    crash_replicator(&cluster, "ctl-1").await;
    std::fs::write(dir.path().join("site/index.html"), "v3").unwrap();
    poll_until(
        "w-1 follows the restarted primary",
        PATIENCE,
        replica_at("v3"),
    )
    .await;
    // Serving v3 is not yet the end: a primary restarted around a change can announce the
    // same content once more as a newer generation (its rebuild from disk, then the
    // watcher's event for the write it already read), which w-1 then pulls.
    poll_until(
        "w-1 has pulled the primary's newest generation",
        PATIENCE,
        || {
            let s = cluster.node("w-1")?.replicator()?.borrow().clone();
            (s.generation > g1 && s.lag() == Some(0)).then_some(())
        },
    )
    .await;
    let status = cluster
        .node("w-1")
        .unwrap()
        .replicator_actor()
        .unwrap()
        .get_status()
        .await
        .unwrap();
    assert!(
        !status.primary && status.generation > g1 && status.lag() == Some(0),
        "{status:?}"
    );
    assert!(
        cluster.node("w-1").unwrap().supervision().metrics()["replicator"]
            .last_cause
            .as_deref()
            .is_some_and(|c| c.contains("test-only crash of the replicator")),
    );

    // The master Controller: its actor restarts as a backup (a new session joins last),
    // a backup takes over from the last decision, and no answer changes.
    cluster
        .node(&old_master)
        .unwrap()
        .controller()
        .unwrap()
        .crash();
    poll_until("the old master's controller restarted", PATIENCE, || {
        (restarts(&cluster, &old_master, "controller") == 1).then_some(())
    })
    .await;
    let (new_master, _) =
        takeover_changed_nothing(&cluster, &old_master, d.round, &before, serials).await;
    let restarted = cluster
        .node(&old_master)
        .unwrap()
        .controller()
        .unwrap()
        .get_status()
        .await
        .unwrap();
    poll_until(
        "the restarted controller is a backup of three",
        PATIENCE,
        || {
            let st = cluster
                .node(&old_master)
                .unwrap()
                .controller()
                .unwrap()
                .status();
            (st.members.len() == 3 && !st.is_master).then_some(())
        },
    )
    .await;
    assert!(!restarted.is_master, "{new_master} should be master");
    // Every restart is counted with its cause for /metrics.
    let m = cluster.node(&old_master).unwrap().supervision().metrics();
    assert!(
        m["controller"]
            .last_cause
            .as_deref()
            .is_some_and(|c| c.contains("test-only crash of the controller")),
        "{m:?}"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_over_its_restart_limit_stops_the_node_with_a_clear_error() {
    init_logs();
    let (dir, _web, _, config) = deployment("restart-limit", false).await;
    let cluster = Cluster::start(config, dir.path(), QuicLayers)
        .await
        .unwrap();
    let rt = cluster.node("ctl-2").unwrap();
    let failed = rt.failed();
    let limit = walrus_actors::supervision::RestartLimit::default();
    for i in 1..=u64::from(limit.max_restarts) {
        rt.controller().unwrap().crash();
        poll_until("the controller restarted", PATIENCE, || {
            (restarts(&cluster, "ctl-2", "controller") == i).then_some(())
        })
        .await;
    }
    rt.controller().unwrap().crash();
    let e = tokio::time::timeout(PATIENCE, failed)
        .await
        .expect("the node did not fail after one restart too many");
    assert!(
        e.contains("node ctl-2")
            && e.contains("role controller restarted more than 5 times within 60s")
            && e.contains("test-only crash of the controller"),
        "{e}"
    );
    // It is not restarted again: the actor stays down, the node's other roles go on.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(restarts(&cluster, "ctl-2", "controller"), 6);
    assert!(!rt.controller().unwrap().status().is_master);
    cluster.stop_all().await;
}
