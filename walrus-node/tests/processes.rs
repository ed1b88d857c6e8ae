//! Separate `walrus-node run` processes on loopback over real walrus-gcs (QUIC, mutual
//! TLS): the master Controller's process is killed with SIGKILL, a backup takes over, and
//! the next change (a web server dies) still reaches the area's embedded name server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;
use walrus_testkit::dns::dig_a_text as dig_a;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_async as poll_until;

/// The real binary, built by Cargo for this test.
const WALRUS_NODE: &str = env!("CARGO_BIN_EXE_walrus-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_master_process_and_the_next_change_still_reaches_dns() {
    let dir = TempDir::new("procs");
    let mut s1 = TinyHttp::start().await;
    let s2 = TinyHttp::start().await;
    let p1 = walrus_node::cluster::free_dns_port().unwrap();
    let mut toml = two_area_toml(
        [p1, walrus_node::cluster::free_dns_port().unwrap()],
        [s1.url(), s2.url()],
        &[
            NodeSpec::controller("ctl-1"),
            NodeSpec::controller("ctl-2"),
            NodeSpec::worker("w-1", "s1", "a1"),
            NodeSpec::reporter("w-2", "s2"),
        ],
    );
    toml = with_certs(&toml, dir.path(), &["ctl-1", "ctl-2", "w-1", "w-2"]);
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, &toml).unwrap();

    let mut ctl = [
        Some(NodeProcess::start(WALRUS_NODE, &conf, "ctl-1", dir.path())),
        Some(NodeProcess::start(WALRUS_NODE, &conf, "ctl-2", dir.path())),
    ];
    let _w1 = NodeProcess::start(WALRUS_NODE, &conf, "w-1", dir.path());
    let _w2 = NodeProcess::start(WALRUS_NODE, &conf, "w-2", dir.path());
    let dns: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let name = "www.example.com";

    poll_until(
        "a1's name server answers with c1",
        Duration::from_secs(60),
        || (dig_a(dns, name) == ["192.0.2.1"]).then_some(()),
    )
    .await;
    let master = poll_until("exactly one master", Duration::from_secs(60), || {
        let m: Vec<usize> = (0..2)
            .filter(|i| ctl[*i].as_ref().unwrap().is_master())
            .collect();
        (m.len() == 1).then(|| m[0])
    })
    .await;
    let backup = 1 - master;

    // SIGKILL the master's process.
    let killed = std::time::Instant::now();
    drop(ctl[master].take());
    poll_until("the backup takes over", Duration::from_secs(60), || {
        ctl[backup].as_ref().unwrap().is_master().then_some(())
    })
    .await;
    // A figure, not an assertion (50 ms polling; LAN failure timeout 400 ms).
    eprintln!("{{\"takeover_ms\":{}}}", killed.elapsed().as_millis());

    // The next change reaches DNS through the new master: c1's only server dies.
    s1.stop();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        poll_until("a1 moves to c2", Duration::from_secs(60), || {
            (dig_a(dns, name) == ["192.0.2.2"]).then_some(())
        }),
    )
    .await;
    if out.is_err() {
        panic!("backup log:\n{}", ctl[backup].as_ref().unwrap().log());
    }
    let log = ctl[backup].as_ref().unwrap().log();
    assert!(
        log.contains("area answer changed") && log.contains("to=c2"),
        "{log}"
    );
}
