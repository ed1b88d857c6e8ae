//! Primary + 2 replicas over TCP loopback, real directories, the real watcher: every kind
//! of change reaches both replicas; a replica that was down catches up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::time::Duration;
use walrus_actors::replicator::manifest::Limits;
use walrus_actors::replicator::transfer::{PrimarySource, ServeOptions};
use walrus_actors::replicator::watcher::{run_primary, PrimaryScanner, WatchConfig};
use walrus_testkit::actors::replicator::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_follow_every_kind_of_change() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("site");
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("index.html"), b"<h1>v1</h1>").unwrap();
    fs::write(root.join("docs/a.txt"), b"a").unwrap();

    let source = Arc::new(PrimarySource::new(&root).unwrap());
    let scanner = PrimaryScanner::open(&root, &t.path().join("state"), Limits::default()).unwrap();
    let cfg = WatchConfig {
        quiet: Duration::from_millis(50),
        rescan_every: Duration::from_secs(2),
        ..WatchConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(run_primary(scanner, source.clone(), cfg, async {
        let _ = stop_rx.await;
    }));
    let server = serve_tcp(source.clone(), ServeOptions::default()).await;
    let r1 = follow(&source, server.addr, &t.path().join("r1"));
    let r2 = follow(&source, server.addr, &t.path().join("r2"));
    let cur = |f: &Follower| f.store_dir.join("current");

    let check = |what: &'static str| {
        let (root, c1, c2) = (root.clone(), cur(&r1), cur(&r2));
        async move {
            wait_same(&root, &c1, what).await;
            wait_same(&root, &c2, what).await;
        }
    };
    check("initial tree").await;

    // Create: nested directories, an empty file, a symlink inside, one escaping.
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/b/c/deep.html"), b"deep").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    symlink("docs/a.txt", root.join("link-inside")).unwrap();
    symlink("../../etc/passwd", root.join("link-escaping")).unwrap();
    check("create").await;
    for r in [&r1, &r2] {
        assert!(fs::symlink_metadata(cur(r).join("link-escaping")).is_err());
        assert_eq!(fs::read(cur(r).join("link-inside")).unwrap(), b"a");
        assert_eq!(fs::read(cur(r).join("empty")).unwrap(), b"");
    }

    // Modify, rename (file and directory), delete (file and directory), chmod.
    fs::write(root.join("index.html"), b"<h1>v2</h1>").unwrap();
    fs::rename(root.join("docs/a.txt"), root.join("docs/renamed.txt")).unwrap();
    fs::rename(root.join("a/b"), root.join("a/moved")).unwrap();
    check("modify and rename").await;
    fs::remove_file(root.join("empty")).unwrap();
    fs::remove_dir_all(root.join("a")).unwrap();
    chmod(&root.join("index.html"), 0o600);
    chmod(&root.join("docs"), 0o750);
    check("delete and chmod").await;
    assert!(!cur(&r1).join("a").exists());
    assert!(!cur(&r2).join("empty").exists());

    // Replica 2 is down while three generations go by; it catches up on restart.
    let r2_dir = r2.store_dir.clone();
    drop(r2);
    for i in 0..3 {
        fs::write(root.join(format!("while-down-{i}")), format!("{i}")).unwrap();
        wait_same(&root, &cur(&r1), "replica 1 while 2 is down").await;
    }
    let down_gen = fs::read_link(r2_dir.join("current")).unwrap();
    let r2 = follow(&source, server.addr, &r2_dir);
    wait_same(&root, &cur(&r2), "replica 2 catch-up").await;
    assert_ne!(fs::read_link(r2_dir.join("current")).unwrap(), down_gen);

    // Old generations beyond `keep` (2) are removed.
    let gens = fs::read_dir(r1.store_dir.join("gens"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
        .count();
    assert!(gens <= 2, "{gens} generation directories kept");

    stop_tx.send(()).unwrap();
    watcher.await.unwrap().unwrap();
}

/// The tree checker itself catches a replica that differs (a planted fault).
#[tokio::test]
#[should_panic(expected = "differs")]
async fn the_tree_checker_catches_a_planted_difference() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for d in [&a, &b] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("f"), b"same").unwrap();
    }
    chmod(&b.join("f"), 0o600);
    tokio::time::pause();
    wait_same(&a, &b, "planted").await;
}
