//! SIGHUP's work inside the node: `NodeRuntime::reload` applies thresholds, timings and
//! notification to the running Controller, refuses a file that changes what needs a
//! restart (this node's own area's zone) or no longer names the node, and then keeps the
//! running configuration whole.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;
use walrus_node::cluster::{free_dns_port, Cluster, LocalLayers};
use walrus_node::config::Config;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_async as poll_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_safe_sections_and_refuses_a_foreign_file() {
    let dir = TempDir::new("reload");
    let web = TinyHttp::start().await;
    let toml = deployment_toml(
        &[AreaSpec {
            name: "a1",
            home: "c1",
            dns_port: free_dns_port().unwrap(),
        }],
        &[ServerSpec {
            name: "s1",
            cluster: "c1",
            address: "192.0.2.1",
            url: web.url(),
        }],
        &[NodeSpec {
            name: "n-1",
            roles: &["controller", "reporter", "director"],
            server: Some("s1"),
            area: Some("a1"),
        }],
    );
    let config = Config::from_toml(Path::new("a.toml"), &toml).unwrap();
    let mut cluster = Cluster::start(config, dir.path(), LocalLayers::default())
        .await
        .unwrap();
    poll_until("a first decision", PATIENCE, || {
        cluster.node("n-1")?.controller()?.status().last_decision
    })
    .await;

    // Thresholds and timings change, and this node's own area's zone: the zone needs a
    // restart, so nothing is applied (not even the thresholds).
    let changed = toml
        .replace("use_cpu = false", "use_cpu = false\nthreshold = 0.6")
        .replace("round_period = \"500ms\"", "round_period = \"300ms\"")
        .replace("report_timeout = \"250ms\"", "report_timeout = \"100ms\"");
    let zone = changed.replace(
        "zone = \"area-a1.example.com\"",
        "zone = \"area-one.example.com\"",
    );
    let new = Config::from_toml(Path::new("b.toml"), &zone).unwrap();
    let err = cluster
        .reload_node("n-1", new)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("area a1: this node is its Director") && err.contains("kept"),
        "{err}"
    );
    let node = cluster.node("n-1").unwrap();
    assert_eq!(node.config().controller.threshold, 0.8);
    assert_eq!(
        node.config().areas[&"a1".into()].zone,
        "area-a1.example.com",
        "a refused reload must not be half-applied"
    );
    // Without the zone change it is applied.
    let new = Config::from_toml(Path::new("b.toml"), &changed).unwrap();
    let report = cluster.reload_node("n-1", new).await.unwrap();
    let node = cluster.node("n-1").unwrap();
    assert_eq!(report.applied, vec!["timing", "controller"]);
    assert_eq!(node.config().controller.threshold, 0.6);
    assert_eq!(
        node.config().timing.round_period,
        Duration::from_millis(300)
    );
    // Rounds go on at the new pace.
    let r0 = node
        .controller()
        .unwrap()
        .status()
        .last_decision
        .unwrap()
        .round;
    poll_until("rounds continue after the reload", PATIENCE, || {
        let r = cluster
            .node("n-1")?
            .controller()?
            .status()
            .last_decision?
            .round;
        (r.0 >= r0.0 + 3).then_some(())
    })
    .await;

    // A file without this node is refused; the running configuration stays.
    let foreign = changed.replace("[nodes.n-1]", "[nodes.other]");
    let foreign = Config::from_toml(Path::new("c.toml"), &foreign).unwrap();
    assert!(cluster.reload_node("n-1", foreign).await.is_err());
    let node = cluster.node("n-1").unwrap();
    assert_eq!(node.config().controller.threshold, 0.6);
    cluster.stop_all().await;
}
