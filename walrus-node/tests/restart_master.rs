//! A restarted Controller is no master before it has merged with its configured peers or
//! waited out its join grace (issue 24, seen in `walrus-node demo`: a restarted Controller
//! first merged with only some live nodes, joined `Controllers` there and was a second
//! master, with no partition, for up to a second).
//!
//! One deployment in this process over the real walrus-gcs (QUIC with mutual TLS on
//! loopback, the `walrus_node::cluster` launcher): Controllers ctl-1, ctl-2, ctl-3 and web
//! hosts w-1, w-2. A backup Controller (ctl-3, the last to start, unless the joins of a
//! loaded start put it first) is killed and w-2 stopped, the running nodes cut them off
//! (the partition switch), and both start again: they find only each other, a view of two
//! that lacks three configured peers. The backup must not be master before its join grace
//! (five gcs failure timeouts, 2 s with the `lan` profile) and must log why; after the
//! grace it may be the master of its component (paper §6.3). Then the cut heals and the
//! group is one view with one master.
//!
//! A second scenario restarts a backup with every peer reachable: it merges at once, joins
//! well before the grace, and is never master.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};
use walrus_node::cluster::{free_dns_port, Cluster, QuicLayers};
use walrus_node::config::Config;
use walrus_testkit::node::master;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_async as poll_until;

/// What the restarted backup looked like after its restart, sampled every 20 ms.
#[derive(Debug, Default)]
struct Seen {
    /// When its node first shared a view with another node.
    first_shared_view: Option<Duration>,
    /// When it first joined `Controllers` (its status names itself).
    joined: Option<Duration>,
    /// When it first said it was master.
    master: Option<Duration>,
}

async fn watch(
    cluster: &Cluster<QuicLayers>,
    node: &str,
    started: Instant,
    for_how_long: Duration,
) -> Seen {
    let mut seen = Seen::default();
    while started.elapsed() < for_how_long {
        let t = started.elapsed();
        if let Some(rt) = cluster.node(node) {
            if seen.first_shared_view.is_none()
                && rt.layer().view().is_some_and(|v| v.members.len() > 1)
            {
                seen.first_shared_view = Some(t);
            }
            if let Some(st) = rt.controller().map(|c| c.status()) {
                if seen.joined.is_none() && !st.members.is_empty() {
                    seen.joined = Some(t);
                }
                if seen.master.is_none() && st.is_master {
                    seen.master = Some(t);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

async fn start() -> (TempDir, Cluster<QuicLayers>, [TinyHttp; 2]) {
    init_logs();
    let dir = TempDir::new("restart-master");
    let w1 = TinyHttp::start().await;
    let w2 = TinyHttp::start().await;
    let toml = two_area_toml(
        [free_dns_port().unwrap(), free_dns_port().unwrap()],
        [w1.url(), w2.url()],
        &three_controllers_two_workers(),
    );
    let config = Config::from_toml(Path::new("test.toml"), &toml).unwrap();
    let cluster = Cluster::start(config, dir.path(), QuicLayers)
        .await
        .unwrap();
    poll_until("one master that decided", PATIENCE, || {
        master(&cluster).filter(|(_, d)| d.round.0 >= 3).map(|_| ())
    })
    .await;
    (dir, cluster, [w1, w2])
}

const GRACE: Duration = Duration::from_secs(2);

const CONTROLLERS: [&str; 3] = ["ctl-1", "ctl-2", "ctl-3"];

/// The last Controller that is not `master` (ctl-3, unless the three joins, which come
/// together once the first whole view is installed, put it first).
fn a_backup(master: &str) -> &'static str {
    CONTROLLERS.into_iter().rfind(|c| *c != master).unwrap()
}

/// Starts a killed node again; its old socket may still be closing (address in use).
async fn restart(cluster: &mut Cluster<QuicLayers>, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cluster.start_node(node).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{node} not started yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{node} does not start again: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_into_a_partial_view_is_no_master_before_its_grace() {
    let (_dir, mut cluster, _webs) = start().await;
    assert_eq!(
        walrus_node::runtime::join_grace(cluster.config()),
        GRACE,
        "the test's timing assumes the lan profile"
    );
    let (old_master, _) = master(&cluster).unwrap();
    let backup = a_backup(&old_master);
    cluster.kill_node(backup).await;
    // Stopped cleanly: its embedded name server's port is free again at once.
    cluster.stop_node("w-2").await;
    // The running nodes cut the backup and w-2 off before they come back: they hear only
    // each other.
    let mut side_a: Vec<&str> = CONTROLLERS.into_iter().filter(|c| *c != backup).collect();
    side_a.push("w-1");
    let side_b = [backup, "w-2"];
    cluster.partition(&[side_a.as_slice(), side_b.as_slice()]);
    // Their sockets close.
    tokio::time::sleep(Duration::from_secs(1)).await;
    restart(&mut cluster, "w-2").await;
    let started = Instant::now();
    restart(&mut cluster, backup).await;
    cluster.partition(&[side_a.as_slice(), side_b.as_slice()]);
    let seen = watch(&cluster, backup, started, GRACE + Duration::from_secs(2)).await;
    eprintln!("{{\"partial_view\":\"{seen:?}\"}}");
    let shared = seen
        .first_shared_view
        .expect("the backup and w-2 never formed a view of two");
    assert!(
        shared < GRACE,
        "the view of two came only after the grace ({shared:?}): the test shows nothing"
    );
    if let Some(m) = seen.master {
        assert!(
            m >= GRACE,
            "{backup} was master {m:?} after its restart, in a view that lacked three of its \
             configured peers, before its join grace {GRACE:?}: {seen:?}"
        );
    }
    // The heal: one view of five, one master, within a few seconds.
    cluster.heal();
    let (m, _) = poll_until(
        "one view of five and one master after the heal",
        PATIENCE,
        || {
            let whole = cluster.running().iter().all(|n| {
                cluster
                    .node(n)
                    .and_then(|rt| rt.layer().view())
                    .is_some_and(|v| v.members.len() == 5)
            });
            whole.then(|| master(&cluster)).flatten()
        },
    )
    .await;
    eprintln!("{{\"master_after_heal\":\"{m}\",\"master_before\":\"{old_master}\"}}");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restarted_with_every_peer_up_joins_at_once_as_a_backup() {
    let (_dir, mut cluster, _webs) = start().await;
    let (old_master, _) = master(&cluster).unwrap();
    let backup = a_backup(&old_master);
    cluster.kill_node(backup).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    restart(&mut cluster, backup).await;
    let seen = watch(&cluster, backup, started, GRACE + Duration::from_secs(1)).await;
    eprintln!("{{\"full_view\":\"{seen:?}\"}}");
    assert_eq!(
        seen.master, None,
        "the restarted backup was master: {seen:?}"
    );
    let joined = seen
        .joined
        .unwrap_or_else(|| panic!("{backup} never joined Controllers"));
    assert!(
        joined < GRACE,
        "with every peer up {backup} must join as soon as it merged, not after the grace: {seen:?}"
    );
    assert_eq!(master(&cluster).map(|(m, _)| m), Some(old_master));
    cluster.stop_all().await;
}
