//! walrus-testkit: the one place the workspace's tests take their support from, so that a
//! test folder never grows its own copy (STYLE.md, "Tests").
//!
//! ```text
//!  a test (walrus-*/tests, tests/, examples, the lab)
//!    ├─ prelude  what most process tests import (`use walrus_testkit::prelude::*`)
//!    ├─ dir      TempDir (tempfile; WALRUS_KEEP_TMP=1 keeps it)
//!    ├─ net      free ports (TCP, UDP, both), wait for a port, HTTP/1.0 GET
//!    ├─ process  `need` a Debian binary, ChildGuard: SIGKILL and reap on drop
//!    ├─ wait     poll until, with the last state or the logs in the panic
//!    ├─ web      nginx (one process or master + workers), Apache: guarded, restartable
//!    ├─ dns      BIND 9 (`named -g`) guarded, `dig`, the SOA serial
//!    ├─ rsync    an rsync daemon on loopback
//!    ├─ nft      Partition: nftables rules dropping UDP between two port sets
//!    ├─ netns    network namespaces and processes inside them, undone on drop
//!    ├─ deploy   a loopback deployment's walrus.toml (areas, servers, nodes)
//!    ├─ delay    DelayRelay: UDP and TCP to a server, held a one-way delay each way
//!    ├─ node     (feature `node`) queries of an in-process deployment (master, serial)
//!    └─ actors   (feature `actors`) topology and statistics fixtures, the Director's
//!                authority servers (BIND, Knot, PowerDNS) and their shared checks
//! ```
//!
//! Not here: anything a release binary needs. The kit is a dev-dependency of walrus-gcs,
//! walrus-actors and walrus-node, and a dependency of the lab (`walrus-lab`,
//! itself a test tool); walrus-node's binary never links it.
//!
//! Failing is the kit's way to report: a launcher that cannot start its server panics with
//! the server's log, the way a test would. The few helpers the lab uses at run time
//! ([`process::ChildGuard::spawn`], [`netns`]) return errors instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod delay;
pub mod deploy;
pub mod dir;
pub mod dns;
pub mod net;
pub mod netns;
pub mod nft;
#[cfg(feature = "node")]
pub mod node;
pub mod prelude;
pub mod process;
pub mod rsync;
pub mod wait;
pub mod web;

#[cfg(feature = "actors")]
pub mod actors;

pub use dir::TempDir;
pub use net::{free_dns_port, free_tcp_port, free_udp_port, http_get, wait_port};
pub use process::{need, ChildGuard};
pub use wait::{poll_until, poll_until_async, poll_until_with, PATIENCE};

/// Logs to the test's output when RUST_LOG is set (e.g. `RUST_LOG=walrus_actors=info`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
