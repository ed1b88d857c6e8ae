//! The RFC 2136 checks every real name server must pass, written once over
//! [`Authority`] (BIND, Knot, PowerDNS): decisions in → `dig` sees the records and TTL;
//! an unchanged answer sends no update; a wrong key is refused and reported, not retried;
//! a server killed and restarted mid-test → the Director catches up; the epoch fence
//! (a late update of an older decision is refused, a compare-and-swap against a stale
//! epoch fails with NXRRSET/YXRRSET and writes nothing).

use super::{tsig_keygen, Authority};
use crate::dns::dig;
use crate::process::need;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use walrus_actors::director::retry::RetryPolicy;
use walrus_actors::director::rfc2136::{Rfc2136Config, Rfc2136Updater, TsigKey};
use walrus_actors::director::zone::RecordTtl;
use walrus_actors::director::{
    apply, apply_fenced, Applied, AreaDirector, Fence, NameServer, NameServerError,
};
use walrus_actors::model::{AreaAnswer, AreaName, ClusterName, Decision, Round};

pub fn updater(s: &impl Authority, area: &str, key: TsigKey) -> Rfc2136Updater {
    Rfc2136Updater::new(Rfc2136Config {
        area: AreaName::from(area),
        server: s.addr(),
        area_zone: s.layout().area_zone.clone(),
        key,
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

pub fn answer(cluster: &str, addrs: &[&str]) -> AreaAnswer {
    AreaAnswer {
        cluster: ClusterName::from(cluster),
        records: addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
    }
}

pub fn decision(round: u64, answers: &[(&str, AreaAnswer)]) -> Decision {
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

pub fn director(area: &str, ttl: u64) -> AreaDirector {
    AreaDirector {
        area: AreaName::from(area),
        ttl: RecordTtl::try_from(Duration::from_secs(ttl)).unwrap(),
    }
}

pub fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(1)
}

/// Runs `nsupdate -y hmac-sha256:NAME:SECRET` with `script` (lines without `server` and
/// `send`) against `s`; its output (stdout and stderr) and whether it succeeded.
pub fn nsupdate(s: &impl Authority, key: &TsigKey, script: &str) -> (bool, String) {
    use std::io::Write as _;
    let name = key.name.to_ascii();
    let spec = format!(
        "hmac-sha256:{}:{}",
        name.trim_end_matches('.'),
        key.secret_base64()
    );
    let mut child = Command::new(need("nsupdate", "bind9-dnsutils"))
        .args(["-y", &spec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let full = format!(
        "server {} {}\nzone {}\n{script}\nsend\n",
        s.addr().ip(),
        s.addr().port(),
        s.layout().area_zone.to_ascii()
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(full.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Decisions in → `dig` sees the records with our TTL; the next decision replaces them
/// (the old AAAA deleted); each update moves the serial by exactly one.
pub async fn decisions_in_dig_sees_records_and_ttl(s: &impl Authority) {
    let ns = updater(s, "a1", s.key().clone());
    let d = director("a1", 7);
    let want = d
        .wanted(&decision(
            1,
            &[("a1", answer("c1", &["10.0.1.1", "10.0.1.2", "2001:db8::1"]))],
        ))
        .unwrap()
        .unwrap();
    let serial0 = s.serial();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert_eq!(s.serial(), serial0 + 1, "one message, one serial step");

    let site = dig(s.addr(), "www.example.com", "A");
    assert_eq!(site.status, "NOERROR", "{site:?}");
    assert_eq!(site.data_of("CNAME"), vec!["www.area-1.example.com."]);
    let a = dig(s.addr(), "www.area-1.example.com", "A");
    assert_eq!(a.data_of("A"), vec!["10.0.1.1", "10.0.1.2"]);
    assert!(
        a.answer.iter().filter(|r| r.2 == "A").all(|r| r.1 == 7),
        "{a:?}"
    );
    let aaaa = dig(s.addr(), "www.area-1.example.com", "AAAA");
    assert_eq!(aaaa.data_of("AAAA"), vec!["2001:db8::1"]);

    let d = director("a1", 1);
    let want = d
        .wanted(&decision(2, &[("a1", answer("c2", &["10.0.2.1"]))]))
        .unwrap()
        .unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert_eq!(s.serial(), serial0 + 2);
    let a = dig(s.addr(), "www.area-1.example.com", "A");
    assert_eq!(a.data_of("A"), vec!["10.0.2.1"]);
    assert_eq!(a.answer.iter().find(|r| r.2 == "A").unwrap().1, 1);
    let aaaa = dig(s.addr(), "www.area-1.example.com", "AAAA");
    assert!(
        aaaa.data_of("AAAA").is_empty(),
        "old AAAA deleted: {aaaa:?}"
    );
    assert_eq!(aaaa.status, "NOERROR");
}

/// An answer the server already holds sends nothing (serial unchanged); a changed TTL
/// alone is a change.
pub async fn unchanged_answer_sends_no_update(s: &impl Authority) {
    let ns = updater(s, "a1", s.key().clone());
    let want = director("a1", 30)
        .wanted_for(&answer("c1", &["10.0.1.1"]))
        .unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    let serial = s.serial();
    for _ in 0..3 {
        let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
        assert_eq!(
            r.outcome(),
            Ok(&Applied::Unchanged {
                serial: Some(serial)
            })
        );
    }
    assert_eq!(s.serial(), serial, "no update was sent");
    let want_ttl = director("a1", 31)
        .wanted_for(&answer("c1", &["10.0.1.1"]))
        .unwrap();
    let r = apply(&ns, &want_ttl, &RetryPolicy::default(), &mut rng()).await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert_eq!(s.serial(), serial + 1);
}

/// Same key name with another secret (BADSIG), an unknown key (BADKEY), and the right key
/// on a zone it may not update: each refused once, reported with area, server and key,
/// never retried; nothing written. Returns what the server answered, for the report.
///
/// `tsig_errors`: the server says BADSIG/BADKEY in its TSIG record (BIND, Knot); PowerDNS
/// answers a bad signature with a bare REFUSED.
pub async fn wrong_tsig_key_is_refused_and_reported_once(
    s: &impl Authority,
    key_name: &str,
    tsig_errors: bool,
) -> Vec<String> {
    let (badsig, badkey) = if tsig_errors {
        ("BADSIG", "BADKEY")
    } else {
        ("REFUSED", "REFUSED")
    };
    let mut seen = Vec::new();
    let want = director("a1", 30)
        .wanted_for(&answer("c1", &["10.0.1.1"]))
        .unwrap();
    let serial = s.serial();

    let other = tsig_keygen(key_name);
    let ns = updater(s, "a1", other);
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert_eq!(r.attempts.len(), 1, "a refusal is not retried: {r:?}");
    let e = r.outcome().unwrap_err();
    assert!(matches!(e, NameServerError::Refused { .. }), "{e:?}");
    let msg = e.to_string();
    for needle in ["a1", &s.addr().to_string(), key_name, badsig] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    seen.push(format!("other secret: {msg}"));

    let stranger = tsig_keygen("walrus-stranger");
    let ns = updater(s, "a1", stranger);
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert_eq!(r.attempts.len(), 1, "{r:?}");
    let msg = r.outcome().unwrap_err().to_string();
    assert!(
        msg.contains(badkey) && msg.contains("walrus-stranger"),
        "{msg}"
    );
    seen.push(format!("unknown key: {msg}"));

    // The right key on the site zone, which it may not update.
    let ns = Rfc2136Updater::new(Rfc2136Config {
        area: AreaName::from("a1"),
        server: s.addr(),
        area_zone: walrus_actors::director::zone::fqdn("example.com").unwrap(),
        key: s.key().clone(),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let r = apply(&ns, &want, &RetryPolicy::default(), &mut rng()).await;
    assert_eq!(r.attempts.len(), 1, "{r:?}");
    let e = r.outcome().unwrap_err();
    assert!(matches!(e, NameServerError::Refused { .. }), "{e:?}");
    seen.push(format!("site zone: {e}"));

    assert_eq!(s.serial(), serial, "nothing changed");
    assert!(dig(s.addr(), "www.area-1.example.com", "A")
        .answer
        .is_empty());
    seen
}

/// The area's key may change only `www` A/AAAA and the epoch TXT: another name in the
/// area zone is refused (checked with `nsupdate`, outside our client).
pub fn key_may_not_touch_other_names(s: &impl Authority) -> String {
    let area = s.layout().area_zone.to_ascii();
    // Control: the same key through the same tool may change www (so the refusals below
    // are the policy's, not a botched key).
    let (ok, out) = nsupdate(s, s.key(), &format!("update add www.{area} 30 A 10.9.9.8"));
    assert!(
        ok,
        "nsupdate of www.{area} must succeed: {out}\n{}",
        s.log()
    );
    let serial = s.serial();
    let (ok, out) = nsupdate(
        s,
        s.key(),
        &format!("update add other.{area} 30 A 10.9.9.9"),
    );
    assert!(!ok, "an update of other.{area} must be refused: {out}");
    assert_eq!(s.serial(), serial);
    let (ok, out2) = nsupdate(s, s.key(), &format!("update add ns.{area} 30 A 10.9.9.9"));
    assert!(!ok, "an update of ns.{area} must be refused: {out2}");
    assert_eq!(s.serial(), serial);
    assert!(dig(s.addr(), &format!("other.{area}"), "A")
        .answer
        .is_empty());
    format!("other.{area}: {}; ns.{area}: {}", out.trim(), out2.trim())
}

/// The server is killed while a new decision arrives; the Director retries (unreachable)
/// and catches up once it is back.
pub async fn restarted_mid_test_director_catches_up(s: &mut impl Authority) {
    let ns = updater(s, "a1", s.key().clone());
    let d = director("a1", 30);
    let first = d.wanted_for(&answer("c1", &["10.0.1.1"])).unwrap();
    let r = apply(&ns, &first, &RetryPolicy::default(), &mut rng()).await;
    assert!(r.outcome().is_ok(), "{r:?}");

    s.kill();
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
    assert!(!task.is_finished(), "must still be retrying while down");
    tokio::task::block_in_place(|| s.restart());
    let r = task.await.unwrap();
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    assert!(r.attempts.len() > 1, "it had to retry: {r:?}");
    assert!(r.attempts[..r.attempts.len() - 1]
        .iter()
        .all(|a| matches!(a.outcome, Err(NameServerError::Unreachable { .. }))));
    assert_eq!(
        dig(s.addr(), "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.2.1", "10.0.2.2"]
    );
}

/// The epoch fence on a real server: the first fenced write ("RRset does not exist"
/// prerequisite) stores the epoch TXT; a deposed writer's late update of an older
/// decision is refused (Stale, not retried); a compare-and-swap against a stale epoch
/// ("RRset exists (value dependent)") fails with NXRRSET/YXRRSET and writes nothing; a
/// CAS against the right epoch goes through. Returns what the server answered.
pub async fn a_deposed_writers_late_update_is_refused(s: &impl Authority) -> Vec<String> {
    let mut seen = Vec::new();
    let new_writer = updater(s, "a1", s.key().clone());
    let old_writer = updater(s, "a1", s.key().clone());
    let d = director("a1", 5);
    let newer = d.wanted_for(&answer("c2", &["10.0.2.1"])).unwrap();
    let older = d.wanted_for(&answer("c1", &["10.0.1.1"])).unwrap();
    let epoch_name = format!("_walrus-epoch.{}", s.layout().area_zone.to_ascii());

    // First fenced write: prerequisite "the epoch TXT does not exist".
    let r = apply_fenced(
        &new_writer,
        &newer,
        &Fence::of(2_000),
        &RetryPolicy::default(),
        &mut rng(),
    )
    .await;
    assert!(matches!(r.outcome(), Ok(Applied::Updated { .. })), "{r:?}");
    seen.push("first fenced write (TXT must not exist): NOERROR".into());
    assert_eq!(new_writer.held().await.unwrap().epoch, Some(2_000));
    assert_eq!(
        dig(s.addr(), &epoch_name, "TXT").data_of("TXT"),
        vec!["\"2000\""]
    );
    let serial = s.serial();

    // The same prerequisite again, now that the TXT exists: YXRRSET, nothing written.
    let again = Fence {
        epoch: 2_100,
        expect: Some(0),
        stamp: false,
    };
    let e = old_writer.replace(&older, &again).await.unwrap_err();
    assert!(e.to_string().contains("YXRRSET"), "{e}");
    assert!(e.is_retryable());
    seen.push(format!("'TXT does not exist' while it does: {e}"));
    assert_eq!(s.serial(), serial, "nothing was written");

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
    assert_eq!(s.serial(), serial, "nothing was written");
    assert_eq!(
        dig(s.addr(), "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.2.1"]
    );

    // A writer that read epoch 1,500 loses the compare-and-swap.
    let raced = Fence {
        epoch: 2_500,
        expect: Some(1_500),
        stamp: false,
    };
    let e = old_writer.replace(&older, &raced).await.unwrap_err();
    assert!(
        e.to_string().contains("NXRRSET") || e.to_string().contains("YXRRSET"),
        "{e}"
    );
    assert!(e.is_retryable(), "it re-reads and decides again");
    seen.push(format!("TXT holds 2000, prerequisite 1500: {e}"));
    assert_eq!(s.serial(), serial, "nothing was written");
    assert_eq!(
        dig(s.addr(), &epoch_name, "TXT").data_of("TXT"),
        vec!["\"2000\""]
    );

    // The CAS against the epoch actually held goes through and moves the epoch on.
    let right = Fence {
        epoch: 3_000,
        expect: Some(2_000),
        stamp: false,
    };
    old_writer.replace(&older, &right).await.unwrap();
    seen.push("TXT holds 2000, prerequisite 2000: NOERROR".into());
    assert_eq!(s.serial(), serial + 1);
    assert_eq!(old_writer.held().await.unwrap().epoch, Some(3_000));
    assert_eq!(
        dig(s.addr(), "www.area-1.example.com", "A").data_of("A"),
        vec!["10.0.1.1"]
    );
    seen
}
