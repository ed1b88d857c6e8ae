//! The rsync method against a real rsync daemon on loopback: push into `incoming` with
//! `--link-dest` the current generation, then the same atomic switch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use walrus_actors::model::Generation;
use walrus_actors::replicator::rsync::RsyncMethod;
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_testkit::actors::replicator::*;

#[tokio::test]
async fn rsync_pushes_switch_generations_and_link_unchanged_files() {
    let rsync = need("rsync", "rsync");
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("site");
    let store_dir = t.path().join("replica");
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("d/e/same.html"), b"same").unwrap();
    fs::write(root.join("changes.html"), b"v1").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    symlink("d/e/same.html", root.join("inside")).unwrap();
    symlink("../../outside", root.join("escaping")).unwrap();
    let mut store = ReplicaStore::open(&store_dir, StoreConfig::default()).unwrap();

    let daemon = RsyncDaemon::start(t.path(), &store_dir);
    let url = daemon.url.clone();
    let method = RsyncMethod {
        program: rsync.clone(),
    };

    method.push(&root, &url, None).await.unwrap();
    store.commit_external(Generation(1)).unwrap();
    let cur = store.current_path();
    // The daemon rewrites the escaping link to `outside` (inside the tree, dangling), which
    // the replica's scan accepts; the original target never arrives.
    let target = fs::read_link(cur.join("escaping")).ok();
    assert_ne!(target, Some("../../outside".into()));
    fs::remove_file(cur.join("escaping")).ok();
    fs::remove_file(root.join("escaping")).unwrap();
    wait_same(&root, &cur, "first rsync push").await;
    let ino = fs::metadata(cur.join("d/e/same.html")).unwrap().ino();

    // A different size: rsync's quick check (size, mtime) misses a same-size rewrite in the
    // same second; that is rsync's rule, not ours.
    fs::write(root.join("changes.html"), b"version 2").unwrap();
    fs::remove_file(root.join("empty")).unwrap();
    chmod(&root.join("d"), 0o750);
    method
        .push(&root, &url, Some(store.current_generation()))
        .await
        .unwrap();
    // Until the switch the web server still sees generation 1.
    assert_eq!(fs::read(cur.join("changes.html")).unwrap(), b"v1");
    store.commit_external(Generation(2)).unwrap();
    wait_same(&root, &cur, "second rsync push").await;
    assert_eq!(fs::read(cur.join("changes.html")).unwrap(), b"version 2");
    assert_eq!(
        fs::metadata(cur.join("d/e/same.html")).unwrap().ino(),
        ino,
        "--link-dest hard-links unchanged files"
    );
    assert_eq!(store.current_generation(), Generation(2));
}
