//! The Director against a real PowerDNS Authoritative on loopback (gsqlite3 backend, zones
//! loaded from our `bind_config` files, the key allowed to update the area zone by its
//! metadata): the same RFC 2136 checks as against BIND (see `walrus_testkit::actors::director::checks`),
//! including the epoch fence's prerequisites. PowerDNS has no per-name grant, so the
//! narrow-policy check of the BIND and Knot tests does not apply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use walrus_testkit::actors::director::checks;
use walrus_testkit::actors::director::Authoritative;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_dig_sees_records_and_ttl() {
    let pdns = Authoritative::pdns(1, "walrus-area1");
    checks::decisions_in_dig_sees_records_and_ttl(&pdns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_answer_sends_no_update() {
    let pdns = Authoritative::pdns(1, "walrus-area1");
    checks::unchanged_answer_sends_no_update(&pdns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tsig_key_is_refused_and_reported_once() {
    let pdns = Authoritative::pdns(1, "walrus-area1");
    let seen =
        checks::wrong_tsig_key_is_refused_and_reported_once(&pdns, "walrus-area1", false).await;
    eprintln!("pdns answered: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdns_restarted_mid_test_director_catches_up() {
    let mut pdns = Authoritative::pdns(1, "walrus-area1");
    checks::restarted_mid_test_director_catches_up(&mut pdns).await;
    let _ = pdns.log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_late_update_is_refused_by_pdns() {
    let pdns = Authoritative::pdns(1, "walrus-area1");
    let seen = checks::a_deposed_writers_late_update_is_refused(&pdns).await;
    eprintln!("pdns answered: {seen:#?}");
}
