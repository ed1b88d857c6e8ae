//! The Reporter against a real Apache started by the test on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use walrus_testkit::actors::reporter::Kind;

#[tokio::test]
async fn hits_follow_traffic() {
    walrus_testkit::actors::reporter::hits_follow_traffic(Kind::Apache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_on_stop_then_recover() {
    walrus_testkit::actors::reporter::panic_on_stop_then_recover(Kind::Apache).await;
}
