//! The Director against a real BIND 9 on loopback, configured by our `bind_config`: the
//! RFC 2136 checks every server must pass (`walrus_testkit::actors::director::checks`, shared with Knot
//! and PowerDNS: records and TTL, no needless update, a wrong key refused once, a restart
//! caught up, the epoch fence, the key confined to its names), and BIND-only ones: area 1's
//! decision never touches area 2's server; a large answer goes over TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use walrus_actors::director::retry::RetryPolicy;
use walrus_actors::director::{apply, Applied};
use walrus_testkit::actors::director::checks::{self, answer, decision, director, rng, updater};
use walrus_testkit::actors::director::{dig, Authoritative};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_dig_sees_records_and_ttl() {
    let bind = Authoritative::bind(1, "walrus-area1");
    checks::decisions_in_dig_sees_records_and_ttl(&bind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_answer_sends_no_update() {
    let bind = Authoritative::bind(1, "walrus-area1");
    checks::unchanged_answer_sends_no_update(&bind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tsig_key_is_refused_and_reported_once() {
    let bind = Authoritative::bind(1, "walrus-area1");
    checks::wrong_tsig_key_is_refused_and_reported_once(&bind, "walrus-area1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_may_not_touch_other_names() {
    let bind = Authoritative::bind(1, "walrus-area1");
    checks::key_may_not_touch_other_names(&bind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_restarted_mid_test_director_catches_up() {
    let mut bind = Authoritative::bind(1, "walrus-area1");
    checks::restarted_mid_test_director_catches_up(&mut bind).await;
}

/// Issue 17: a deposed writer's late update is refused by BIND, a stale compare-and-swap
/// gets NXRRSET, nothing is written (and the swap against the epoch held goes through: not
/// blind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_late_update_is_refused_by_bind() {
    let bind = Authoritative::bind(1, "walrus-area1");
    checks::a_deposed_writers_late_update_is_refused(&bind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn area_1_decision_never_touches_area_2_server() {
    let b1 = Authoritative::bind(1, "walrus-area1");
    let b2 = Authoritative::bind(2, "walrus-area2");
    let ns1 = updater(&b1, "a1", b1.key.clone());
    let ns2 = updater(&b2, "a2", b2.key.clone());
    let (d1, d2) = (director("a1", 30), director("a2", 30));

    // Round 1: both areas get answers; each Director applies its own.
    let r1 = decision(
        1,
        &[
            ("a1", answer("c1", &["10.0.1.1"])),
            ("a2", answer("c2", &["10.0.2.1"])),
        ],
    );
    for (d, ns) in [(&d1, &ns1), (&d2, &ns2)] {
        let want = d.wanted(&r1).unwrap().unwrap();
        assert!(apply(ns, &want, &RetryPolicy::default(), &mut rng())
            .await
            .outcome()
            .is_ok());
    }
    let s2 = b2.serial();
    let s1 = b1.serial();

    // Round 2: only area 1 changes. Both Directors receive the decision.
    let r2 = decision(
        2,
        &[
            ("a1", answer("c3", &["10.0.3.1"])),
            ("a2", answer("c2", &["10.0.2.1"])),
        ],
    );
    for (d, ns) in [(&d1, &ns1), (&d2, &ns2)] {
        let want = d.wanted(&r2).unwrap().unwrap();
        assert!(apply(ns, &want, &RetryPolicy::default(), &mut rng())
            .await
            .outcome()
            .is_ok());
    }
    assert_eq!(b1.serial(), s1 + 1);
    assert_eq!(b2.serial(), s2, "area 2's server untouched");
    assert_eq!(
        dig(b2.addr, "www.area-2.example.com", "A").data_of("A"),
        vec!["10.0.2.1"]
    );
    assert_eq!(
        dig(b1.addr, "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.3.1"]
    );

    // A decision that names only area 1 gives area 2's Director nothing to do.
    let only_a1 = decision(3, &[("a1", answer("c1", &["10.0.1.9"]))]);
    assert_eq!(d2.wanted(&only_a1).unwrap(), None);

    // Planted fault: a Director wired to the wrong server would be caught by this check.
    let miswired = updater(&b2, "a1", b2.key.clone());
    let want = d1.wanted(&only_a1).unwrap().unwrap();
    assert!(apply(&miswired, &want, &RetryPolicy::default(), &mut rng())
        .await
        .outcome()
        .is_ok());
    assert_ne!(b2.serial(), s2, "the serial check sees a touched server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answer_goes_over_tcp_and_is_verified() {
    let bind = Authoritative::bind(1, "walrus-area1");
    let ns = updater(&bind, "a1", bind.key.clone());
    // 60 AAAA: the update (~2 KB) is too large for one datagram, and so is the answer.
    let addrs: Vec<String> = (1..=60).map(|i| format!("2001:db8::{i:x}")).collect();
    let refs: Vec<&str> = addrs.iter().map(|s| s.as_str()).collect();
    let want = director("a1", 30).wanted_for(&answer("c1", &refs)).unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert_eq!(r.attempts.len(), 1);
    assert_eq!(
        dig(bind.addr, "www.area-1.example.com", "AAAA")
            .data_of("AAAA")
            .len(),
        60
    );
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(
        matches!(r.outcome(), Ok(Applied::Unchanged { .. })),
        "{r:?}"
    );
}
