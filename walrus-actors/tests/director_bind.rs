//! The Director against a real BIND 9 on loopback, configured by our `bind_config`:
//! decisions in → `dig` sees the records and TTL; an unchanged answer sends no update;
//! a wrong TSIG key is refused and reported (not retried); BIND killed and restarted
//! mid-test → the Director catches up; area 1's decision never touches area 2's server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod director_support;

use director_support::{dig, Bind};
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use walrus_actors::director::retry::RetryPolicy;
use walrus_actors::director::rfc2136::{Rfc2136Config, Rfc2136Updater, TsigKey};
use walrus_actors::director::zone::RecordTtl;
use walrus_actors::director::{apply, Applied, AreaDirector, NameServerError};
use walrus_actors::model::{AreaAnswer, AreaName, ClusterName, Decision, Round};

fn updater(bind: &Bind, area: &str, key: TsigKey) -> Rfc2136Updater {
    Rfc2136Updater::new(Rfc2136Config {
        area: AreaName::from(area),
        server: bind.addr,
        area_zone: bind.layout.area_zone.clone(),
        key,
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn answer(cluster: &str, addrs: &[&str]) -> AreaAnswer {
    AreaAnswer {
        cluster: ClusterName::from(cluster),
        records: addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
    }
}

fn decision(round: u64, answers: &[(&str, AreaAnswer)]) -> Decision {
    Decision {
        round: Round(round),
        answers: answers
            .iter()
            .map(|(a, ans)| (AreaName::from(*a), ans.clone()))
            .collect::<BTreeMap<_, _>>(),
        changes: vec![],
        epoch: round,
    }
}

fn director(area: &str, ttl: u64) -> AreaDirector {
    AreaDirector {
        area: AreaName::from(area),
        ttl: RecordTtl::try_from(Duration::from_secs(ttl)).unwrap(),
    }
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_dig_sees_records_and_ttl() {
    let bind = Bind::start(1, "walrus-area1");
    let ns = updater(&bind, "a1", bind.key.clone());
    let d = director("a1", 7);

    let want = d
        .wanted(&decision(
            1,
            &[("a1", answer("c1", &["10.0.1.1", "10.0.1.2", "2001:db8::1"]))],
        ))
        .unwrap()
        .unwrap();
    let serial0 = bind.serial();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    // One message: the serial grows by exactly one.
    assert_eq!(bind.serial(), serial0 + 1);

    // What a client's resolver sees: the site name is a CNAME (BIND does not chase it
    // into the other zone), the area name has the records with our TTL.
    let site = dig(bind.addr, "www.example.com", "A");
    assert_eq!(site.status, "NOERROR");
    assert_eq!(site.data_of("CNAME"), vec!["www.area-1.example.com."]);
    let a = dig(bind.addr, "www.area-1.example.com", "A");
    assert_eq!(a.data_of("A"), vec!["10.0.1.1", "10.0.1.2"]);
    assert!(
        a.answer.iter().filter(|r| r.2 == "A").all(|r| r.1 == 7),
        "{a:?}"
    );
    let aaaa = dig(bind.addr, "www.area-1.example.com", "AAAA");
    assert_eq!(aaaa.data_of("AAAA"), vec!["2001:db8::1"]);

    // The next decision moves the area to another cluster, IPv4 only, TTL 1 s.
    let d = director("a1", 1);
    let want = d
        .wanted(&decision(2, &[("a1", answer("c2", &["10.0.2.1"]))]))
        .unwrap()
        .unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    let a = dig(bind.addr, "www.area-1.example.com", "A");
    assert_eq!(a.data_of("A"), vec!["10.0.2.1"]);
    assert_eq!(a.answer.iter().find(|r| r.2 == "A").unwrap().1, 1);
    let aaaa = dig(bind.addr, "www.area-1.example.com", "AAAA");
    assert!(
        aaaa.data_of("AAAA").is_empty(),
        "old AAAA deleted: {aaaa:?}"
    );
    assert_eq!(aaaa.status, "NOERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_answer_sends_no_update() {
    let bind = Bind::start(1, "walrus-area1");
    let ns = updater(&bind, "a1", bind.key.clone());
    let want = director("a1", 30)
        .wanted_for(&answer("c1", &["10.0.1.1"]))
        .unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })));
    let serial = bind.serial();
    for _ in 0..3 {
        let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
        assert_eq!(
            r.outcome(),
            Ok(&Applied::Unchanged {
                serial: Some(serial)
            })
        );
    }
    assert_eq!(bind.serial(), serial, "no update was sent");
    // Planted fault for the checker: a changed TTL alone is a change and moves the serial.
    let want_ttl = director("a1", 31)
        .wanted_for(&answer("c1", &["10.0.1.1"]))
        .unwrap();
    let r = apply(&ns, &want_ttl, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })));
    assert_eq!(bind.serial(), serial + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tsig_key_is_refused_and_reported_once() {
    let bind = Bind::start(1, "walrus-area1");
    let want = director("a1", 30)
        .wanted_for(&answer("c1", &["10.0.1.1"]))
        .unwrap();
    let serial = bind.serial();

    // Same name, other secret: BADSIG.
    let other = director_support::tsig_keygen("walrus-area1");
    let ns = updater(&bind, "a1", other);
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert_eq!(
        r.attempts.len(),
        1,
        "a refusal is not retried: {:?}",
        r.attempts[0]
    );
    let e = r.outcome().unwrap_err();
    assert!(matches!(e, NameServerError::Refused { .. }), "{e:?}");
    let msg = e.to_string();
    for needle in ["a1", &bind.addr.to_string(), "walrus-area1", "BADSIG"] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }

    // A key the server does not know: BADKEY.
    let stranger = director_support::tsig_keygen("walrus-stranger");
    let ns = updater(&bind, "a1", stranger);
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    let msg = r.outcome().unwrap_err().to_string();
    assert!(
        msg.contains("BADKEY") && msg.contains("walrus-stranger"),
        "{msg}"
    );

    // The right key, but the policy does not grant this name: refused, not retried.
    let ns = Rfc2136Updater::new(Rfc2136Config {
        area: AreaName::from("a1"),
        server: bind.addr,
        area_zone: walrus_actors::director::zone::fqdn("example.com").unwrap(),
        key: bind.key.clone(),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert_eq!(r.attempts.len(), 1);
    assert!(
        matches!(r.outcome(), Err(NameServerError::Refused { reason, .. }) if reason.contains("REFUSED")),
        "{r:?}"
    );

    assert_eq!(bind.serial(), serial, "nothing changed");
    assert!(dig(bind.addr, "www.area-1.example.com", "A")
        .answer
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_restarted_mid_test_director_catches_up() {
    let mut bind = Bind::start(1, "walrus-area1");
    let ns = updater(&bind, "a1", bind.key.clone());
    let d = director("a1", 30);
    let first = d.wanted_for(&answer("c1", &["10.0.1.1"])).unwrap();
    let r = apply(&ns, &first, &RetryPolicy::default(), &mut rng()).await;
    assert!(r.outcome().is_ok());

    // BIND crashes; a new decision arrives while it is down.
    bind.kill();
    let second = d
        .wanted_for(&answer("c2", &["10.0.2.1", "10.0.2.2"]))
        .unwrap();
    let policy = RetryPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_millis(800),
        max_attempts: 60,
    };
    let ns2 = ns.clone();
    let task = tokio::spawn(async move { apply(&ns2, &second, &policy, &mut rng()).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !task.is_finished(),
        "must still be retrying while BIND is down"
    );
    tokio::task::block_in_place(|| bind.restart());
    let r = task.await.unwrap();
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert!(r.attempts.len() > 1, "it had to retry: {r:?}");
    assert!(r.attempts[..r.attempts.len() - 1]
        .iter()
        .all(|a| matches!(a.outcome, Err(NameServerError::Unreachable { .. }))));
    assert_eq!(
        dig(bind.addr, "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.2.1", "10.0.2.2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn area_1_decision_never_touches_area_2_server() {
    let b1 = Bind::start(1, "walrus-area1");
    let b2 = Bind::start(2, "walrus-area2");
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
    let bind = Bind::start(1, "walrus-area1");
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

/// Issue 17: writes to a real BIND are fenced by the decision's epoch. A deposed writer's
/// late update of an older decision is refused (and not retried); two writers racing on
/// the same epoch read make the loser's prerequisite fail (BIND answers NXRRSET) instead
/// of overwriting; the newest answer stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_late_update_is_refused_by_bind() {
    use walrus_actors::director::{apply_fenced, Fence, NameServer};
    let bind = Bind::start(1, "walrus-area1");
    let new_writer = updater(&bind, "a1", bind.key.clone());
    let old_writer = updater(&bind, "a1", bind.key.clone());
    let d = director("a1", 5);
    let newer = d.wanted_for(&answer("c2", &["10.0.2.1"])).unwrap();
    let older = d.wanted_for(&answer("c1", &["10.0.1.1"])).unwrap();

    let r = apply_fenced(
        &new_writer,
        &newer,
        &Fence::of(2_000),
        &RetryPolicy::default(),
        &mut rng(),
    )
    .await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert_eq!(new_writer.held().await.unwrap().epoch, Some(2_000));
    let serial = bind.serial();

    // The late update of the older decision (epoch 1,000).
    let r = apply_fenced(
        &old_writer,
        &older,
        &Fence::of(1_000),
        &RetryPolicy::default(),
        &mut rng(),
    )
    .await;
    assert!(
        matches!(
            r.outcome(),
            Err(NameServerError::Stale {
                held: 2_000,
                ours: 1_000,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(r.attempts.len(), 1, "a stale writer does not retry");
    assert_eq!(bind.serial(), serial, "nothing was written");
    assert_eq!(
        dig(bind.addr, "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.2.1"]
    );

    // A writer that read epoch 1,500 (before the 2,000 write) loses the compare-and-swap.
    let raced = Fence {
        epoch: 2_500,
        expect: Some(1_500),
        stamp: false,
    };
    let e = old_writer.replace(&older, &raced).await.unwrap_err();
    assert!(e.to_string().contains("NXRRSET"), "{e}");
    assert!(e.is_retryable(), "it re-reads and decides again");
    assert_eq!(bind.serial(), serial, "nothing was written");

    // Not blind: an unfenced write goes through (the fence is what stopped the others).
    let r = apply(&old_writer, &older, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert_eq!(
        dig(bind.addr, "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.1.1"]
    );
}
