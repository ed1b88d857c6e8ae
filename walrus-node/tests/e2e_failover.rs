//! End-to-end failover with real processes on loopback (issue 8): `walrus-node run` per
//! node (three Controllers, Reporters, Directors) over walrus-gcs (QUIC, mutual TLS), a
//! real BIND 9 per area name server updated by RFC 2136 with TSIG, and real nginx web
//! servers read through `stub_status`. Every failure is a SIGKILL of a real process; a
//! partition is nftables dropping the gcs UDP between two sets of nodes.
//!
//! 1. one nginx killed → its area's answer in BIND drops it; its whole cluster killed →
//!    the area moves to another cluster;
//! 2. the master Controller killed → a backup takes over and the next change still
//!    reaches BIND;
//! 3. area a3's nodes cut off → each side has its own master and keeps serving (a change
//!    on each side reaches its own area's BIND); after the heal one master remains and the
//!    answers converge.
//!
//! The three tests run one after the other (a lock): each starts 18 processes, and a
//! loaded 2-core machine is the norm. Every process is stopped by its guard, even when a
//! test fails (see `walrus_testkit::actors::deployment`). Needs root for nftables (test 3); missing binaries fail
//! naming their Debian package (bind9, bind9-dnsutils, nginx, nftables).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use walrus_testkit::actors::deployment::*;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_with as poll_until;

/// One deployment at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn bind_deployment() -> Deployment {
    bind_deployment_with(3, 1)
}

fn bind_deployment_with(areas: u8, directors_per_area: u8) -> Deployment {
    Deployment::start(Spec {
        areas,
        backend: Backend::Bind,
        round_period: "500ms",
        report_timeout: "250ms",
        report_interval: "200ms",
        bin: PathBuf::from(env!("CARGO_BIN_EXE_walrus-node")),
        directors_per_area,
    })
}

#[test]
fn nginx_killed_drops_from_bind_and_a_dead_cluster_moves_its_area() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = bind_deployment();
    // No start-up churn: every area stayed home from the first round (no answer changed).
    std::thread::sleep(Duration::from_secs(2));
    for c in CONTROLLERS {
        let log = d.nodes[c].log();
        // The Reporters' logs say why (an urgent report names its reason).
        let urgent: String = d
            .nodes
            .values()
            .flat_map(|n| n.log().lines().map(str::to_owned).collect::<Vec<_>>())
            .filter(|l| l.contains("urgent report"))
            .map(|l| l + "\n")
            .collect();
        assert!(
            !log.contains("area answer changed"),
            "{c} changed an answer at start-up:\n{log}\nurgent reports:\n{urgent}"
        );
    }

    // One web server of c1 dies: a1's answer at its BIND keeps only the other one.
    d.nginx.get_mut("c1-s1").unwrap().kill();
    let s2 = d.ip("c1-s2");
    d.wait_answer("a1", &[s2], "a1's BIND answer drops the killed c1-s1");
    // The other areas are untouched.
    assert_eq!(d.answer("a2"), d.cluster_ips("c2"));
    assert_eq!(d.answer("a3"), d.cluster_ips("c3"));

    // The last server of c1 dies: a1 moves to another cluster (all its answer from one
    // cluster, c2 or c3).
    d.nginx.get_mut("c1-s2").unwrap().kill();
    let moved_to = poll_until(
        "a1 moves to another cluster",
        PATIENCE,
        || format!("a1 answers {:?}\n{}", d.answer("a1"), d.logs()),
        || {
            let a = d.answer("a1");
            d.cluster_of(&a).filter(|c| c == "c2" || c == "c3")
        },
    );
    assert_eq!(d.answer("a1"), d.cluster_ips(&moved_to));
    let master = d.masters().pop().unwrap();
    let log = d.nodes[&master].log();
    assert!(
        log.contains("area answer changed") && log.contains(&format!("to={moved_to}")),
        "the master logs the move:\n{log}"
    );

    // The cluster comes back: a1 returns home.
    d.nginx.get_mut("c1-s1").unwrap().restart();
    d.nginx.get_mut("c1-s2").unwrap().restart();
    d.wait_answer("a1", &d.cluster_ips("c1"), "a1 returns home to c1");
}

#[test]
fn master_controller_sigkilled_a_backup_takes_over_and_the_next_change_reaches_bind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = bind_deployment();
    let master = poll_until(
        "exactly one master",
        PATIENCE,
        || d.logs(),
        || {
            let m = d.masters();
            (m.len() == 1).then(|| m[0].clone())
        },
    );

    let killed = Instant::now();
    d.kill_node(&master);
    let backup = poll_until(
        "a backup takes over",
        PATIENCE,
        || d.logs(),
        || {
            let m = d.masters();
            (m.len() == 1 && m[0] != master).then(|| m[0].clone())
        },
    );
    // A figure, not an assertion (50 ms polling of the logs; LAN failure timeout 400 ms).
    eprintln!(
        "{{\"takeover_ms\":{},\"old\":\"{master}\",\"new\":\"{backup}\"}}",
        killed.elapsed().as_millis()
    );
    // The takeover changed no answer.
    for a in 1..=3 {
        assert_eq!(
            d.answer(&format!("a{a}")),
            d.cluster_ips(&format!("c{a}")),
            "a{a} unchanged by the takeover"
        );
    }

    // The next change reaches BIND through the new master: c2-s2 dies.
    d.nginx.get_mut("c2-s2").unwrap().kill();
    d.wait_answer(
        "a2",
        &[d.ip("c2-s1")],
        "a2's BIND drops c2-s2 (decided by the new master)",
    );
    let log = d.nodes[&backup].log();
    assert!(
        log.contains("area answer changed") && log.contains("area=a2"),
        "the new master decided the change:\n{log}"
    );
}

#[test]
fn partition_of_one_areas_nodes_each_side_serves_and_after_the_heal_one_master_remains() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut d = bind_deployment();
    poll_until(
        "exactly one master",
        PATIENCE,
        || d.logs(),
        || (d.masters().len() == 1).then_some(()),
    );

    // Area a3's nodes (its Director, its Reporters, and Controller ctl-3) are cut off.
    d.partition(&["ctl-3", "d3", "r3"]);
    // Each side has its own master: ctl-3 alone, and one of ctl-1/ctl-2. (This also shows
    // that the rules really cut the group: without a partition there is one master.)
    poll_until(
        "a master on each side",
        PATIENCE,
        || d.logs(),
        || {
            let m = d.masters();
            (m.len() == 2 && m.contains(&"ctl-3".to_string())).then_some(())
        },
    );

    // Each side keeps serving, and decides for the areas it holds: a change on each side
    // reaches that side's area's BIND.
    d.nginx.get_mut("c1-s2").unwrap().kill();
    d.nginx.get_mut("c3-s2").unwrap().kill();
    d.wait_answer("a1", &[d.ip("c1-s1")], "majority side: a1 drops c1-s2");
    d.wait_answer("a3", &[d.ip("c3-s1")], "minority side: a3 drops c3-s2");
    // Neither side moved the other side's area: the majority sees no c3 server, the
    // minority no c1/c2 server, but a Director follows only the master it can hear, and a
    // master's fallback writer leaves alone an area it hears nothing from (issue 17's
    // fallback, `director::actor::fallback_may_write`). Shown to fail without that rule:
    // the majority's master wrote a3's BIND with c1 within this hold.
    assert_eq!(d.answer("a2"), d.cluster_ips("c2"));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(d.answer("a1"), vec![d.ip("c1-s1")]);
    assert_eq!(d.answer("a2"), d.cluster_ips("c2"));
    assert_eq!(d.answer("a3"), vec![d.ip("c3-s1")]);

    // Heal: one master remains and every area's answer converges on the live servers of
    // its home cluster, and stays there.
    d.heal();
    poll_until(
        "one master after the heal",
        PATIENCE,
        || d.logs(),
        || (d.masters().len() == 1).then_some(()),
    );
    let want: Vec<(String, Vec<Ipv4Addr>)> = vec![
        ("a1".into(), vec![d.ip("c1-s1")]),
        ("a2".into(), d.cluster_ips("c2")),
        ("a3".into(), vec![d.ip("c3-s1")]),
    ];
    for (area, ips) in &want {
        d.wait_answer(area, ips, &format!("{area} converges after the heal"));
    }
    // Stable: the merged master keeps them (and stays the only one).
    std::thread::sleep(Duration::from_secs(3));
    for (area, ips) in &want {
        assert_eq!(&d.answer(area), ips, "{area} after the heal");
    }
    assert_eq!(d.masters().len(), 1, "{}", d.logs());
    // A change after the heal reaches the area on the formerly cut side.
    d.nginx.get_mut("c3-s2").unwrap().restart();
    d.wait_answer(
        "a3",
        &d.cluster_ips("c3"),
        "a3 takes c3-s2 back after the heal",
    );
}

/// Issue 17: an area whose writing Director's host dies while its cluster dies never
/// stays on a dead answer. `d1` (a1's Director and c1-s1's Reporter) is SIGKILLed — its
/// nginx stays up, but nothing reports it any more — and c1-s2's nginx dies at the same
/// moment: c1 has no working server, a1 must move. With one Director per area the master
/// Controller (which holds a1's key) writes a1's BIND itself; with two, `r1` takes over.
/// Shown to fail without the fix: with `start_fallback_directors` returning at once (no
/// fallback writer), the one-Director case timed out after 45 s with a1's BIND still on
/// c1's dead addresses.
#[test]
fn a_dead_writing_directors_area_still_moves_by_the_master_or_the_second_director() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for directors in [1, 2] {
        let mut d = bind_deployment_with(2, directors);
        let started = Instant::now();
        d.kill_node("d1");
        d.nginx.get_mut("c1-s2").unwrap().kill();
        let c2 = d.cluster_ips("c2");
        d.wait_answer(
            "a1",
            &c2,
            &format!("a1's BIND moves to c2 with {directors} Director(s) per area"),
        );
        eprintln!(
            "{{\"case\":\"director-host-dies\",\"directors_per_area\":{directors},\"moved_after_ms\":{}}}",
            started.elapsed().as_millis()
        );
        let writer = if directors == 1 {
            d.masters().pop().expect("a master")
        } else {
            "r1".to_owned()
        };
        let log = d.nodes[&writer].log();
        assert!(
            log.contains("writing the area's name server"),
            "{writer} never took over writing a1:\n{log}"
        );
    }
}
