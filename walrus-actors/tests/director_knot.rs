//! The Director against a real Knot DNS on loopback (zone files from our `bind_config`,
//! an ACL granting the area's key only `www` and `_walrus-epoch` in the area zone): the
//! same RFC 2136 checks as against BIND (see `walrus_testkit::actors::director::checks`), including the
//! epoch fence's prerequisites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use walrus_testkit::actors::director::checks;
use walrus_testkit::actors::director::Authoritative;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_dig_sees_records_and_ttl() {
    let knot = Authoritative::knot(1, "walrus-area1");
    checks::decisions_in_dig_sees_records_and_ttl(&knot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_answer_sends_no_update() {
    let knot = Authoritative::knot(1, "walrus-area1");
    checks::unchanged_answer_sends_no_update(&knot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tsig_key_is_refused_and_reported_once() {
    let knot = Authoritative::knot(1, "walrus-area1");
    let seen =
        checks::wrong_tsig_key_is_refused_and_reported_once(&knot, "walrus-area1", true).await;
    eprintln!("knot answered: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_may_not_touch_other_names() {
    let knot = Authoritative::knot(1, "walrus-area1");
    let seen = checks::key_may_not_touch_other_names(&knot);
    eprintln!("knot answered: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_restarted_mid_test_director_catches_up() {
    let mut knot = Authoritative::knot(1, "walrus-area1");
    checks::restarted_mid_test_director_catches_up(&mut knot).await;
    let _ = knot.log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_late_update_is_refused_by_knot() {
    let knot = Authoritative::knot(1, "walrus-area1");
    let seen = checks::a_deposed_writers_late_update_is_refused(&knot).await;
    eprintln!("knot answered: {seen:#?}");
}
