//! One GCS node as its own OS process, for the multi-process tests, the namespace script
//! and the benchmark. It prints one JSON line per event on stdout.
//!
//! ```text
//! gcs-node --name n0 --listen 127.0.0.1:7000 --peer n1=127.0.0.1:7001 --peer n2=... \
//!          --certs DIR [--group G] [--send N] [--bench-secs S --size B [--rate R]]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;

use clap::Parser;

#[tokio::main]
async fn main() {
    node::run(node::Args::parse()).await;
}
