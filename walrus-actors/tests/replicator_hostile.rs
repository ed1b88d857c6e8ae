//! Hostile input: a primary sending manifests with `..`, absolute paths, escaping
//! symlinks, oversize entries or bad streams, and a replica asking for files outside the
//! root. Each is refused and logged, and nothing outside the root is touched or sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use walrus_actors::model::Generation;
use walrus_actors::replicator::manifest::{Limits, Scanner};
use walrus_actors::replicator::protocol::{read_frame, write_data, write_message, Frame};
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_actors::replicator::transfer::{pull, serve, PrimarySource, ServeOptions};
use walrus_testkit::actors::replicator::*;

// Wire-compatible mirrors of the protocol types with unchecked `String` paths, so a test
// can say what a validated type cannot.
#[derive(Serialize, Deserialize, Debug, Clone)]
enum RawKind {
    Dir,
    File {
        hash: [u8; 32],
        check: [u8; 16],
        chunks: Vec<(u64, u32, [u8; 32])>,
    },
    Symlink {
        target: String,
    },
}
#[derive(Serialize, Deserialize, Debug, Clone)]
struct RawEntry {
    path: String,
    kind: RawKind,
    mode: u32,
    size: u64,
    mtime: (i64, u32),
}
#[derive(Serialize, Deserialize, Debug)]
enum RawRequest {
    Latest,
    Manifest {
        generation: u64,
    },
    Files {
        generation: u64,
        files: Vec<(String, Vec<(u64, u64)>)>,
    },
}
#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum RawResponse {
    Latest {
        generation: Option<u64>,
    },
    ManifestPage {
        generation: u64,
        entries: Vec<RawEntry>,
        last: bool,
    },
    File {
        size: u64,
    },
    FileUnavailable {
        reason: String,
    },
    FilesEnd,
    Refused {
        reason: String,
    },
}
impl PartialEq for RawEntry {
    fn eq(&self, o: &Self) -> bool {
        self.path == o.path
    }
}

fn file(path: &str, content: &[u8]) -> RawEntry {
    RawEntry {
        path: path.into(),
        kind: RawKind::File {
            hash: *blake3::hash(content).as_bytes(),
            check: twox_hash::XxHash3_128::oneshot(content).to_le_bytes(),
            chunks: vec![],
        },
        mode: 0o644,
        size: content.len() as u64,
        mtime: (1, 0),
    }
}

fn link(path: &str, target: &str) -> RawEntry {
    RawEntry {
        path: path.into(),
        kind: RawKind::Symlink {
            target: target.into(),
        },
        mode: 0o777,
        size: 0,
        mtime: (1, 0),
    }
}

/// Every file under `dir` with its content (symlinks as their target).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let key = p.strip_prefix(dir).unwrap().display().to_string();
            if md.is_dir() {
                out.insert(key, b"dir".to_vec());
                stack.push(p);
            } else if md.is_symlink() {
                out.insert(
                    key,
                    fs::read_link(&p)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                );
            } else {
                out.insert(key, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A fake primary that offers `entries` as generation 5 and answers file requests with
/// `data` per file (or a raw oversize frame header if `data` is None).
async fn hostile_primary(entries: Vec<RawEntry>, data: Option<&'static [u8]>) -> (String, bool) {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), b"victim").unwrap();
    let store_dir = t.path().join("store");
    let before = snapshot(t.path());
    let (logs, _guard) = capture_logs();

    let (a, b) = tokio::io::duplex(1 << 16);
    let (mut pr, mut pw) = tokio::io::split(a);
    let (rr, rw) = tokio::io::split(b);
    let primary = async move {
        let mut buf = Vec::new();
        while let Ok(Frame::Message(req)) = read_frame::<RawRequest, _>(&mut pr, &mut buf).await {
            match req {
                RawRequest::Latest => {
                    let r = RawResponse::Latest {
                        generation: Some(5),
                    };
                    write_message(&mut pw, &r).await.unwrap();
                }
                RawRequest::Manifest { .. } => {
                    let r = RawResponse::ManifestPage {
                        generation: 5,
                        entries: entries.clone(),
                        last: true,
                    };
                    write_message(&mut pw, &r).await.unwrap();
                }
                RawRequest::Files { files, .. } => {
                    for _ in files {
                        match data {
                            Some(d) => {
                                let r = RawResponse::File {
                                    size: d.len() as u64,
                                };
                                write_message(&mut pw, &r).await.unwrap();
                                write_data(&mut pw, d).await.unwrap();
                            }
                            None => {
                                use tokio::io::AsyncWriteExt;
                                let _ = pw.write_all(&[1, 0xff, 0xff, 0xff, 0x7f]).await;
                            }
                        }
                    }
                    let _ = write_message(&mut pw, &RawResponse::FilesEnd).await;
                }
            }
            use tokio::io::AsyncWriteExt;
            let _ = pw.flush().await;
        }
    };
    let replica = async {
        let mut store = ReplicaStore::open(&store_dir, StoreConfig::default()).unwrap();
        let r = pull(&mut store, rr, rw).await;
        assert_eq!(store.current_generation(), Generation(0));
        r
    };
    let (_, result) = tokio::join!(primary, replica);
    let err = result.expect_err("a hostile primary must be refused");
    // Nothing outside the store changed; the store serves nothing.
    let after: BTreeMap<_, _> = snapshot(t.path())
        .into_iter()
        .filter(|(k, _)| !k.starts_with("store"))
        .collect();
    let before: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(k, _)| !k.starts_with("store"))
        .collect();
    assert_eq!(before, after, "something outside the store changed");
    assert!(!store_dir.join("current").exists());
    let logged = logs.text().contains("replicator: pull refused or failed");
    (err.to_string(), logged)
}

#[tokio::test]
async fn a_manifest_with_a_parent_dir_path_is_refused() {
    let (err, logged) =
        hostile_primary(vec![file("../outside/victim", b"pwned")], Some(b"pwned")).await;
    assert!(err.contains(".."), "{err}");
    assert!(logged);
}

#[tokio::test]
async fn a_manifest_with_an_absolute_path_is_refused() {
    let (err, logged) = hostile_primary(vec![file("/tmp/pwned", b"pwned")], Some(b"pwned")).await;
    assert!(err.contains("absolute"), "{err}");
    assert!(logged);
}

#[tokio::test]
async fn a_manifest_with_an_escaping_symlink_is_refused() {
    let entries = vec![link("l", "../outside"), file("l/victim", b"pwned")];
    let (err, logged) = hostile_primary(entries, Some(b"pwned")).await;
    assert!(err.contains("escapes"), "{err}");
    assert!(logged);
}

#[tokio::test]
async fn writing_through_an_inside_symlink_is_refused() {
    // `l -> .` is inside the tree, but `l/x` would be written through it.
    let entries = vec![file("a", b"pwned"), link("l", "."), file("l/x", b"pwned")];
    let (err, logged) = hostile_primary(entries, Some(b"pwned")).await;
    assert!(err.contains("no parent directory"), "{err}");
    assert!(logged);
}

#[tokio::test]
async fn an_oversize_entry_is_refused() {
    let mut e = file("big", b"");
    e.size = Limits::default().max_file_size + 1;
    let (err, logged) = hostile_primary(vec![e], Some(b"pwned")).await;
    assert!(err.contains("over limit"), "{err}");
    assert!(logged);
}

#[tokio::test]
async fn an_oversize_frame_is_refused() {
    let (err, logged) = hostile_primary(vec![file("f", b"fine!")], None).await;
    assert!(err.contains("over the limit"), "{err}");
    assert!(logged);
}

#[tokio::test]
async fn content_that_does_not_match_the_manifest_is_refused() {
    let (err, logged) = hostile_primary(vec![file("f", b"fine!")], Some(b"pwned")).await;
    assert!(err.contains("manifest says"), "{err}");
    assert!(logged);
}

/// Sends `req` to a real primary and returns everything it answered until it closed or
/// finished (FilesEnd), plus the raw data bytes.
async fn ask_real_primary(
    source: &PrimarySource,
    reqs: Vec<Vec<u8>>,
) -> (Vec<RawResponse>, Vec<u8>, bool) {
    use tokio::io::AsyncWriteExt;
    let (a, b) = tokio::io::duplex(1 << 16);
    let (pr, pw) = tokio::io::split(a);
    let (mut cr, mut cw) = tokio::io::split(b);
    let server = serve(source, pr, pw, ServeOptions::default());
    let client = async move {
        for r in reqs {
            cw.write_all(&r).await.unwrap();
        }
        cw.shutdown().await.unwrap();
        let mut out = Vec::new();
        let mut data = Vec::new();
        let mut buf = Vec::new();
        loop {
            match read_frame::<RawResponse, _>(&mut cr, &mut buf).await {
                Ok(Frame::Message(m)) => out.push(m),
                Ok(Frame::Data) => data.extend_from_slice(&buf),
                _ => break,
            }
        }
        (out, data)
    };
    let (s, (out, data)) = tokio::join!(server, client);
    (out, data, s.is_ok())
}

fn frame<T: Serialize>(m: &T) -> Vec<u8> {
    let body = walrus_gcs::codec::encode(m).unwrap();
    let mut f = vec![0u8];
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&body);
    f
}

#[tokio::test]
async fn the_primary_sends_nothing_from_outside_its_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("site");
    fs::create_dir_all(&root).unwrap();
    fs::write(t.path().join("secret"), b"TOPSECRET").unwrap();
    fs::write(root.join("page"), b"page!").unwrap();
    fs::write(root.join("swapped"), b"inside!!!").unwrap();
    let source = PrimarySource::new(&root).unwrap();
    source.publish(
        Scanner::new()
            .scan(&root, Generation(1), &Limits::default())
            .unwrap(),
    );
    // After the scan, `swapped` becomes a symlink to the secret (same size).
    fs::remove_file(root.join("swapped")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("swapped")).unwrap();
    let (logs, _guard) = capture_logs();

    let files = |paths: &[(&str, Vec<(u64, u64)>)]| {
        frame(&RawRequest::Files {
            generation: 1,
            files: paths
                .iter()
                .map(|(p, r)| (p.to_string(), r.clone()))
                .collect(),
        })
    };
    // Not in the manifest, swapped for a symlink, ranges past the end: each unavailable;
    // the good file is still served.
    let (out, data, ok) = ask_real_primary(
        &source,
        vec![files(&[
            ("secret", vec![]),
            ("swapped", vec![]),
            ("page", vec![(3, 10)]),
            ("page", vec![]),
        ])],
    )
    .await;
    assert!(ok);
    assert!(
        matches!(out[0], RawResponse::FileUnavailable { .. }),
        "{out:?}"
    );
    assert!(
        matches!(out[1], RawResponse::FileUnavailable { .. }),
        "{out:?}"
    );
    assert!(
        matches!(out[2], RawResponse::FileUnavailable { .. }),
        "{out:?}"
    );
    assert_eq!(out[3], RawResponse::File { size: 5 });
    assert_eq!(out[4], RawResponse::FilesEnd);
    assert_eq!(data, b"page!");

    // `..` and absolute paths do not even decode: the connection is closed.
    for bad in ["../secret", "/etc/passwd"] {
        let (out, data, ok) = ask_real_primary(&source, vec![files(&[(bad, vec![])])]).await;
        assert!(!ok && out.is_empty() && data.is_empty(), "{bad}: {out:?}");
    }
    // An oversize frame header: closed before reading the body.
    let (out, _, ok) = ask_real_primary(&source, vec![vec![0, 0xff, 0xff, 0xff, 0x7f]]).await;
    assert!(!ok && out.is_empty());
    // An unknown generation is refused, the connection stays up.
    let (out, _, ok) = ask_real_primary(
        &source,
        vec![
            frame(&RawRequest::Manifest { generation: 99 }),
            frame(&RawRequest::Latest),
        ],
    )
    .await;
    assert!(ok);
    assert!(matches!(out[0], RawResponse::Refused { .. }));
    assert_eq!(
        out[1],
        RawResponse::Latest {
            generation: Some(1)
        }
    );

    let logs = logs.text();
    assert!(logs.contains("refused a file request"), "{logs}");
    assert!(logs.contains("bad request frame"), "{logs}");
    assert!(!logs.contains("TOPSECRET"));
}

/// The "nothing outside changed" checker catches a planted write outside the store: what
/// a receiver that joined `../outside/victim` to its root without validation would do.
#[test]
fn the_outside_checker_catches_a_planted_write() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    fs::create_dir_all(t.path().join("outside")).unwrap();
    fs::create_dir_all(&store).unwrap();
    fs::write(t.path().join("outside/victim"), b"victim").unwrap();
    let before = snapshot(t.path());
    fs::write(store.join("../outside/victim"), b"pwned").unwrap();
    assert_ne!(before, snapshot(t.path()));
}
