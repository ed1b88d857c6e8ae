//! A replica process killed (SIGKILL) in the middle of a transfer keeps serving the old
//! generation, and a restarted replica finishes the build, reusing what had arrived.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod replicator_util;

use replicator_util::*;
use std::fs;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walrus_actors::model::Generation;
use walrus_actors::replicator::manifest::{Limits, Scanner};
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_actors::replicator::transfer::{PrimarySource, ServeOptions};

const FILES: usize = 60;

/// The replica process: one pull into `WALRUS_TEST_STORE` from `WALRUS_TEST_PRIMARY`.
/// Run only by the test below, which starts this test binary again for it.
#[test]
#[ignore = "child process of a_replica_killed_mid_transfer_keeps_serving_and_resumes"]
fn child_replica_pull() {
    let (Ok(addr), Ok(store)) = (
        std::env::var("WALRUS_TEST_PRIMARY"),
        std::env::var("WALRUS_TEST_STORE"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = ReplicaStore::open(store.as_ref(), StoreConfig::default()).unwrap();
        let rep = pull_tcp(&mut s, addr.parse().unwrap()).await.unwrap();
        println!("PULLED {} {}", rep.generation.0, rep.fetched_files);
    });
}

fn child(addr: std::net::SocketAddr, store: &std::path::Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "child_replica_pull",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("WALRUS_TEST_PRIMARY", addr.to_string())
    .env("WALRUS_TEST_STORE", store)
    .stdin(Stdio::null());
    c
}

fn write_files(root: &std::path::Path, tag: u8) {
    for i in 0..FILES {
        let body: Vec<u8> = (0..100 * 1024)
            .map(|j| (j as u8) ^ (i as u8) ^ tag)
            .collect();
        fs::write(root.join(format!("f{i:02}")), body).unwrap();
    }
}

/// Files of generation 2 complete in `incoming` (a build that recycles an old tree starts
/// with generation 1's files there).
fn arrived(incoming: &std::path::Path) -> usize {
    (0..FILES)
        .filter(|&i| {
            fs::read(incoming.join(format!("f{i:02}")))
                .is_ok_and(|b| b.len() == 100 * 1024 && b[0] == (i as u8) ^ 2)
        })
        .count()
}

// Flaky on a quiet machine: a clean-clone CI run saw all 60 files in `incoming` at the
// first poll, so the kill landed after the end ("killed after the end (60 files)"); it
// passed every time under load. Run it by hand with `--ignored` until the trigger waits on
// the transfer's progress rather than a directory count (issue 7's closing note).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky: the SIGKILL can land after the transfer ends; see the comment above"]
async fn a_replica_killed_mid_transfer_keeps_serving_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("site");
    let store_dir = t.path().join("replica");
    fs::create_dir_all(&root).unwrap();
    write_files(&root, 1);
    let source = Arc::new(PrimarySource::new(&root).unwrap());
    let mut scanner = Scanner::new();
    source.publish(
        scanner
            .scan(&root, Generation(1), &Limits::default())
            .unwrap(),
    );
    let fast = serve_tcp(source.clone(), ServeOptions::default()).await;
    {
        let mut s = ReplicaStore::open(&store_dir, StoreConfig::default()).unwrap();
        pull_tcp(&mut s, fast.addr).await.unwrap();
    }
    let gen1 = tree(&store_dir.join("current"));
    assert_eq!(gen1, tree(&root));

    // Generation 2 changes every file; the primary sends slowly so the kill lands mid-way.
    write_files(&root, 2);
    source.publish(
        scanner
            .scan(&root, Generation(2), &Limits::default())
            .unwrap(),
    );
    let slow = serve_tcp(
        source.clone(),
        ServeOptions {
            throttle: Some(Duration::from_millis(40)),
        },
    )
    .await;
    let mut proc = ChildGuard(
        child(slow.addr, &store_dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let incoming = store_dir.join("incoming");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if arrived(&incoming) >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the transfer never got going");
        assert!(
            proc.0.try_wait().unwrap().is_none(),
            "the replica finished too early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    proc.0.kill().unwrap(); // SIGKILL
    proc.0.wait().unwrap();
    let arrived = arrived(&incoming);
    assert!(arrived < FILES, "killed after the end ({arrived} files)");

    // The old generation is still served, whole; the interrupted build is recognisable.
    assert_eq!(tree(&store_dir.join("current")), gen1);
    let s = ReplicaStore::open(&store_dir, StoreConfig::default()).unwrap();
    assert_eq!(s.current_generation(), Generation(1));
    assert_eq!(s.interrupted(), Some(Generation(2)));
    drop(s);

    // A restarted replica finishes, fetching only what had not arrived.
    let out = child(fast.addr, &store_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("PULLED").map(|i| &l[i..]))
        .expect(&stdout);
    let fetched: usize = line.split(' ').nth(2).unwrap().parse().unwrap();
    assert_eq!(line.split(' ').nth(1), Some("2"));
    assert!(
        fetched <= FILES - arrived + 1,
        "fetched {fetched}, {arrived} had arrived"
    );
    assert_eq!(tree(&store_dir.join("current")), tree(&root));
    assert!(!incoming.exists() && !store_dir.join("salvage").exists());
}
