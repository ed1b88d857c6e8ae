//! The Reporter against a real Apache started by the test on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reporter_support;
use reporter_support::Kind;

#[tokio::test]
async fn hits_follow_traffic() {
    reporter_support::hits_follow_traffic(Kind::Apache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_on_stop_then_recover() {
    reporter_support::panic_on_stop_then_recover(Kind::Apache).await;
}
