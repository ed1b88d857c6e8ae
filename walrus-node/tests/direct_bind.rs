//! The paper's direct mode against a real BIND 9: the master Controller itself sends
//! TSIG-signed RFC 2136 updates to the area's name server. BIND is set up exactly from
//! `walrus-node dns bind-config` (what an operator would do), the deployment runs in one
//! process over real walrus-gcs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use walrus_node::cluster::{free_dns_port, Cluster, QuicLayers};
use walrus_node::config::Config;
use walrus_testkit::actors::deployment::bind_config_cli;
use walrus_testkit::dns::dig_a_text as dig_a;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_async as poll_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_master_updates_bind_when_a_cluster_dies() {
    init_logs();
    let keygen = need("tsig-keygen", "bind9");
    let dir = TempDir::new("direct");
    let bind_dir = dir.path().join("bind");
    std::fs::create_dir_all(&bind_dir).unwrap();
    let key = Command::new(keygen)
        .args(["-a", "hmac-sha256", "walrus-a1"])
        .output()
        .unwrap();
    assert!(key.status.success());
    let key_file = dir.path().join("a1.key");
    std::fs::write(&key_file, &key.stdout).unwrap();

    let mut s1 = TinyHttp::start().await;
    let s2 = TinyHttp::start().await;
    let port = free_dns_port().unwrap();
    let toml = deployment_toml(
        &[AreaSpec {
            name: "a1",
            home: "c1",
            dns_port: port,
        }],
        &[
            ServerSpec {
                name: "s1",
                cluster: "c1",
                address: "192.0.2.1",
                url: s1.url(),
            },
            ServerSpec {
                name: "s2",
                cluster: "c2",
                address: "192.0.2.2",
                url: s2.url(),
            },
        ],
        &[
            NodeSpec::controller("ctl-1"),
            NodeSpec::reporter("w-1", "s1"),
            NodeSpec::reporter("w-2", "s2"),
        ],
    )
    .replacen(
        "[dns]\n",
        "[dns]\nbackend = \"rfc2136\"\nmode = \"direct\"\n",
        1,
    )
    .replacen(
        "home_cluster = \"c1\"\n",
        &format!(
            "home_cluster = \"c1\"\ntsig_key_file = \"{}\"\n",
            key_file.display()
        ),
        1,
    );
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, &toml).unwrap();

    // BIND from the operator command's output.
    let files = bind_config_cli(
        Path::new(env!("CARGO_BIN_EXE_walrus-node")),
        &conf,
        "a1",
        &bind_dir,
        &[],
    );
    assert!(
        files[0].1.contains("walrus-a1"),
        "key name from the key file"
    );
    let _named = Named::start(
        &bind_dir,
        port,
        &format!("{}\n{}", String::from_utf8_lossy(&key.stdout), files[0].1),
        &["area-a1.example.com"],
    );
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // BIND answers www.example.com with the CNAME only (it does not chase into the
    // other zone it serves); a resolver follows it to this name.
    let name = "www.area-a1.example.com";
    let ready = tokio::time::timeout(
        Duration::from_secs(30),
        poll_until("BIND serves the starting answer", PATIENCE * 2, || {
            (dig_a(dns, name) == ["192.0.2.1"]).then_some(())
        }),
    )
    .await;
    if ready.is_err() {
        panic!(
            "BIND does not serve the starting answer; named log:\n{}",
            std::fs::read_to_string(bind_dir.join("named.log")).unwrap_or_default()
        );
    }

    let config = Config::from_toml(Path::new("walrus.toml"), &toml).unwrap();
    let cluster = Cluster::start(config, dir.path(), QuicLayers)
        .await
        .unwrap();
    // The master's own updater for a1 reports in-sync status once it has checked BIND.
    poll_until("the master's direct updater is in sync", PATIENCE, || {
        let v = &cluster.node("ctl-1")?.directors()[&"a1".into()];
        v.status.borrow().in_sync.then_some(())
    })
    .await;
    s1.stop();
    let moved = tokio::time::timeout(
        Duration::from_secs(60),
        poll_until("BIND's answer moves to c2", PATIENCE * 4, || {
            (dig_a(dns, name) == ["192.0.2.2"]).then_some(())
        }),
    )
    .await;
    if moved.is_err() {
        panic!(
            "named log:\n{}",
            std::fs::read_to_string(bind_dir.join("named.log")).unwrap_or_default()
        );
    }
    cluster.stop_all().await;
}
