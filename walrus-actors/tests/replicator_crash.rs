//! A replica process killed (SIGKILL) in the middle of a transfer keeps serving the old
//! generation, and a restarted replica finishes the build, reusing what had arrived.
//!
//! The kill is triggered by observed transfer progress: files of the new generation that
//! arrived whole (renamed into `incoming` under their own names, content checked), while
//! the primary throttles every data frame so the rest takes seconds. Every file's content
//! is unique across both generations: the replica copies a file locally when the same
//! content exists anywhere in the generation it serves, and earlier versions of this test
//! (where generation 2's files were generation 1's under other names) transferred nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use walrus_actors::model::Generation;
use walrus_actors::replicator::manifest::Limits;
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_actors::replicator::transfer::ServeOptions;
use walrus_testkit::actors::replicator::*;

const FILES: usize = 100;
/// Pause after every data frame (one per file here): the whole transfer takes at least
/// `FILES * THROTTLE` = 4 s, the kill comes after the first few files.
const THROTTLE: Duration = Duration::from_millis(40);

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

/// 100 KiB of pseudo-random bytes, different for every (file, generation).
fn body(i: usize, tag: u8) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((i as u64) << 8 | u64::from(tag));
    (0..100 * 1024)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write_files(root: &std::path::Path, tag: u8) {
    for i in 0..FILES {
        fs::write(root.join(format!("f{i:03}")), body(i, tag)).unwrap();
    }
}

/// Files of generation `tag` that arrived whole in `incoming` (a file being written has a
/// temporary name; a whole one is renamed to its own name after its hash was checked).
fn arrived(incoming: &std::path::Path, tag: u8) -> usize {
    (0..FILES)
        .filter(|&i| fs::read(incoming.join(format!("f{i:03}"))).is_ok_and(|b| b == body(i, tag)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_transfer_keeps_serving_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("site");
    let store_dir = t.path().join("replica");
    fs::create_dir_all(&root).unwrap();
    write_files(&root, 1);
    let (source, mut scanner) = primary_at_generation_1(&root);
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
            throttle: Some(THROTTLE),
        },
    )
    .await;
    let mut proc = ChildGuard::new(
        "replica child process",
        child(slow.addr, &store_dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let incoming = store_dir.join("incoming");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if arrived(&incoming, 2) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the transfer never got going");
        assert!(proc.running(), "the replica finished too early");
        std::thread::sleep(Duration::from_millis(10));
    }
    proc.kill(); // SIGKILL, reaped
    let arrived = arrived(&incoming, 2);
    eprintln!("killed with {arrived} of {FILES} files arrived");
    assert!(
        (3..FILES).contains(&arrived),
        "killed mid-transfer: {arrived} of {FILES} files had arrived"
    );

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
