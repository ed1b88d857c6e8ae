//! Tests of the generation store: builds, deltas, salvage, recycling, files created ahead.

use super::super::manifest::Scanner;
use super::*;

fn scan(root: &Path, g: u64) -> Manifest {
    Scanner::new()
        .scan(root, Generation(g), &Limits::default())
        .unwrap()
}

/// Builds `m` from `src` by local reads (the transfer stand-in for unit tests).
fn build_from(store: &mut ReplicaStore, src: &Path, m: Manifest) {
    finish_from(store.begin(m).unwrap(), src);
}

/// Fetches a build's pending files from `src` by local reads and commits it.
fn finish_from(b: Build<'_>, src: &Path) {
    for p in b.pending().to_vec() {
        let e = &b.manifest().entries[p.index];
        let data = fs::read(e.path.under(src)).unwrap();
        let mut w = b.writer(&p).unwrap();
        for (off, len) in p.ranges() {
            w.write(&data[off as usize..(off + len) as usize]).unwrap();
        }
        if p.delta.is_none() {
            w.write(&data).unwrap();
        }
        w.finish().unwrap();
    }
    b.commit().unwrap();
}

#[test]
fn files_created_ahead_are_filled_in_order_and_untaken_ones_are_removed() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    for i in 0..200 {
        let d = src.join(format!("d{}", i % 4));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i:03}")), format!("file {i}")).unwrap();
    }
    let m = scan(&src, 1);
    // A whole build through the helper.
    let mut s = ReplicaStore::open(&t.path().join("a"), StoreConfig::default()).unwrap();
    let b = s.begin(m.clone()).unwrap();
    let mut ahead = b.open_ahead(8);
    assert!(ahead.thread.is_some(), "200 files get a helper");
    for p in b.pending().to_vec() {
        let e = &b.manifest().entries[p.index];
        let mut w = b.writer_ahead(&p, &mut ahead).unwrap();
        w.write(&fs::read(e.path.under(&src)).unwrap()).unwrap();
        w.finish().unwrap();
    }
    drop(ahead);
    b.commit().unwrap();
    for i in [0, 77, 199] {
        let rel = format!("d{}/f{i:03}", i % 4);
        assert_eq!(
            fs::read(s.current_path().join(&rel)).unwrap(),
            fs::read(src.join(&rel)).unwrap()
        );
    }
    // A pull that stops after 10 files leaves only those 10 behind.
    let mut s = ReplicaStore::open(&t.path().join("b"), StoreConfig::default()).unwrap();
    let b = s.begin(m).unwrap();
    let incoming = b.incoming.clone();
    let mut ahead = b.open_ahead(8);
    for p in b.pending().to_vec().iter().take(10) {
        let e = &b.manifest().entries[p.index];
        let mut w = b.writer_ahead(p, &mut ahead).unwrap();
        w.write(&fs::read(e.path.under(&src)).unwrap()).unwrap();
        w.finish().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(50)); // the helper runs ahead
    drop(ahead);
    let mut files = 0;
    for d in fs::read_dir(&incoming).unwrap() {
        files += fs::read_dir(d.unwrap().path()).unwrap().count();
    }
    assert_eq!(
        files, 10,
        "files the helper made but nobody filled stay behind"
    );
    drop(b);
}

#[test]
fn builds_switches_links_unchanged_and_prunes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/same"), b"same").unwrap();
    fs::write(src.join("gone"), b"x").unwrap();
    let mut s = ReplicaStore::open(&t.path().join("store"), StoreConfig::default()).unwrap();
    build_from(&mut s, &src, scan(&src, 1));
    let cur = s.current_path();
    assert_eq!(fs::read(cur.join("d/same")).unwrap(), b"same");
    let ino1 = fs::metadata(cur.join("d/same")).unwrap().ino();

    fs::remove_file(src.join("gone")).unwrap();
    fs::write(src.join("new"), b"new").unwrap();
    build_from(&mut s, &src, scan(&src, 2));
    assert_eq!(s.current_generation(), Generation(2));
    assert!(!cur.join("gone").exists());
    assert_eq!(fs::read(cur.join("new")).unwrap(), b"new");
    assert_eq!(
        fs::metadata(cur.join("d/same")).unwrap().ino(),
        ino1,
        "hard-linked"
    );

    fs::write(src.join("new"), b"newer").unwrap();
    build_from(&mut s, &src, scan(&src, 3));
    s.prune().unwrap();
    let gens: Vec<u64> = s
        .list_generations()
        .unwrap()
        .iter()
        .map(|g| g.0 .0)
        .collect();
    assert_eq!(gens, [2, 3]);
    // Reopening finds the current generation and its manifest.
    let again = ReplicaStore::open(s.dir(), StoreConfig::default()).unwrap();
    assert_eq!(again.current_generation(), Generation(3));
    assert_eq!(again.current_manifest(), s.current_manifest());
}

/// `n` pseudo-random bytes (content-defined chunking needs varied content).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_delta_copies_local_chunks_and_checks_fetched_ones() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = noise(
        super::super::manifest::CHUNKED_FILE_MIN as usize + 300_000,
        7,
    );
    fs::write(src.join("big"), &data).unwrap();
    let mut s = ReplicaStore::open(&t.path().join("store"), StoreConfig::default()).unwrap();
    build_from(&mut s, &src, scan(&src, 1));
    // A change in the middle and an append: local, remote, local, remote segments.
    data[4_000_000..4_000_100].fill(0xee);
    data.extend(noise(1_000_000, 9));
    fs::write(src.join("big"), &data).unwrap();
    let b = s.begin(scan(&src, 2)).unwrap();
    let p = b.pending()[0].clone();
    let (_, segs) = p.delta.clone().expect("a delta");
    assert!(segs.iter().any(|s| matches!(s, Segment::Local { .. })));
    assert!(p.ranges().len() >= 2, "{segs:?}");
    assert!(p.ranges().iter().map(|r| r.1).sum::<u64>() < data.len() as u64 / 2);
    finish_from(b, &src);
    assert_eq!(fs::read(s.current_path().join("big")).unwrap(), data);

    // Planted faults in the next delta: one wrong fetched byte; a missing range; extra bytes.
    data[1_000_000] ^= 1;
    data.extend(noise(500_000, 11));
    fs::write(src.join("big"), &data).unwrap();
    let m3 = scan(&src, 3);
    let b = s.begin(m3.clone()).unwrap();
    let p = b.pending()[0].clone();
    assert!(p.delta.is_some());
    let ranges = p.ranges();
    let mut w = b.writer(&p).unwrap();
    let (off, len) = ranges[0];
    let mut bad = data[off as usize..(off + len) as usize].to_vec();
    bad[len as usize / 2] ^= 0x80;
    assert!(matches!(
        w.write(&bad).and_then(|()| w.finish()),
        Err(StoreError::DeltaMismatch { .. })
    ));
    let mut w = b.writer(&p).unwrap();
    let (off, len) = ranges[0];
    w.write(&data[off as usize..(off + len) as usize]).unwrap();
    assert!(matches!(w.finish(), Err(StoreError::DeltaMismatch { .. })));
    let mut w = b.writer(&p).unwrap();
    for (off, len) in &ranges {
        w.write(&data[*off as usize..(off + len) as usize]).unwrap();
    }
    assert!(matches!(
        w.write(b"x"),
        Err(StoreError::DeltaMismatch { .. })
    ));
    drop(b);
    assert_eq!(s.current_generation(), Generation(2));
    // The honest bytes still build it.
    let b = s.begin(m3).unwrap();
    finish_from(b, &src);
    assert_eq!(fs::read(s.current_path().join("big")).unwrap(), data);
}

#[test]
fn wrong_bytes_are_refused_and_the_old_generation_stays() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"good").unwrap();
    let mut s = ReplicaStore::open(&t.path().join("store"), StoreConfig::default()).unwrap();
    build_from(&mut s, &src, scan(&src, 1));
    fs::write(src.join("f"), b"next").unwrap();
    let b = s.begin(scan(&src, 2)).unwrap();
    let p = b.pending()[0].clone();
    let mut w = b.writer(&p).unwrap();
    w.write(b"evil").unwrap();
    assert!(matches!(
        w.finish(),
        Err(StoreError::ContentMismatch { .. })
    ));
    drop(b);
    // Nothing refused is left under the file's name, nor beside it.
    let incoming = t.path().join("store/incoming");
    let left: Vec<_> = fs::read_dir(&incoming)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(s.interrupted(), Some(Generation(2)));
    assert_eq!(fs::read(s.current_path().join("f")).unwrap(), b"good");
    // Not newer: refused.
    assert!(matches!(
        s.begin(scan(&src, 1)),
        Err(StoreError::NotNewer { .. })
    ));
}

#[test]
fn an_interrupted_build_is_salvaged() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"aaa").unwrap();
    fs::write(src.join("b"), b"bbb").unwrap();
    let m = scan(&src, 1);
    let dir = t.path().join("store");
    {
        let mut s = ReplicaStore::open(&dir, StoreConfig::default()).unwrap();
        let b = s.begin(m.clone()).unwrap();
        let p = b.pending()[0].clone();
        let mut w = b.writer(&p).unwrap();
        w.write(b"aaa").unwrap();
        w.finish().unwrap();
        // b is cut off after two bytes (a fresh tree writes files under their names).
        let q = b.pending()[1].clone();
        let mut w = b.writer(&q).unwrap();
        w.write(b"bb").unwrap();
        drop(w);
        // "crash": the build is dropped half done.
    }
    let mut s = ReplicaStore::open(&dir, StoreConfig::default()).unwrap();
    assert_eq!(s.interrupted(), Some(Generation(1)));
    assert_eq!(s.current_generation(), Generation(0));
    let b = s.begin(m).unwrap();
    let left: Vec<_> = b
        .pending()
        .iter()
        .map(|p| b.manifest().entries[p.index].path.as_str().to_owned())
        .collect();
    assert_eq!(
        left,
        ["b"],
        "a was salvaged; the cut-off b is fetched again"
    );
    let mut w = b.writer(&b.pending()[0].clone()).unwrap();
    w.write(b"bbb").unwrap();
    w.finish().unwrap();
    b.commit().unwrap();
    assert_eq!(fs::read(s.current_path().join("a")).unwrap(), b"aaa");
    assert_eq!(fs::read(s.current_path().join("b")).unwrap(), b"bbb");
}

/// The tree under `dir` as manifest entries, directory modes and mtimes included:
/// equal trees give equal lists. Symlink mtimes are not replicated: left out.
fn tree(dir: &Path) -> Vec<Entry> {
    norm(&scan(dir, 1).entries)
}

fn norm(entries: &[Entry]) -> Vec<Entry> {
    let mut v = entries.to_vec();
    for e in &mut v {
        if matches!(e.kind, Kind::Symlink { .. }) {
            e.mtime = crate::replicator::manifest::Mtime { secs: 0, nanos: 0 };
        }
    }
    v
}

#[test]
fn a_recycled_generation_equals_a_fresh_one_and_spares_the_served_one() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let w = |p: &str, b: &[u8]| {
        let p = src.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b).unwrap();
    };
    w("keep/a", b"a");
    w("keep/b", b"b");
    w("becomes-dir", b"file");
    w("becomes-file/x", b"x");
    w("gone/deep/y", b"y");
    w("mode", b"m");
    w("changes", b"v1");
    symlink("keep/a", src.join("link")).unwrap();
    let mut s = ReplicaStore::open(&t.path().join("store"), StoreConfig::default()).unwrap();
    let m1 = scan(&src, 1);
    build_from(&mut s, &src, m1.clone());
    w("changes", b"v2");
    build_from(&mut s, &src, scan(&src, 2));
    let served = tree(&s.current_path());
    // Generation 3 recycles generation 1 (keep = 2): every kind of change at once.
    fs::remove_file(src.join("becomes-dir")).unwrap();
    w("becomes-dir/z", b"z");
    fs::remove_dir_all(src.join("becomes-file")).unwrap();
    w("becomes-file", b"now a file");
    fs::remove_dir_all(src.join("gone")).unwrap();
    fs::set_permissions(src.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
    w("changes", b"v3");
    w("new/n", b"n");
    fs::remove_file(src.join("link")).unwrap();
    symlink("keep/b", src.join("link")).unwrap();
    fs::create_dir(src.join("ro")).unwrap();
    w("ro/f", b"f");
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let m3 = scan(&src, 3);
    let gen2 = s.dir().join("gens/2");
    let b = s.begin(m3.clone()).unwrap();
    assert!(b.recycled(), "generation 1 is recycled");
    assert_eq!(b.pending().len(), 5, "{:?}", b.pending());
    // While generation 3 is built, generation 2 is served untouched.
    assert_eq!(tree(&gen2), served);
    finish_from(b, &src);
    assert_eq!(tree(&s.current_path()), norm(&m3.entries));
    assert_eq!(tree(&gen2), served, "the previous generation is untouched");
    // And again from the in-memory previous manifest (generation 2 is recycled).
    w("changes", b"v4");
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(src.join("ro")).unwrap();
    let m4 = scan(&src, 4);
    let b = s.begin(m4.clone()).unwrap();
    assert!(b.recycled());
    finish_from(b, &src);
    assert_eq!(tree(&s.current_path()), norm(&m4.entries));
    assert_eq!(tree(&s.dir().join("gens/3")), norm(&m3.entries));
    // The checker catches a tree that differs (the planted fault).
    fs::write(s.current_path().join("keep/a"), b"A").unwrap();
    assert_ne!(tree(&s.current_path()), norm(&m4.entries));
}

#[test]
fn an_interrupted_recycled_build_is_salvaged_and_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"1").unwrap();
    fs::write(src.join("g"), b"g").unwrap();
    let dir = t.path().join("store");
    let mut s = ReplicaStore::open(&dir, StoreConfig::default()).unwrap();
    build_from(&mut s, &src, scan(&src, 1));
    fs::write(src.join("d/f"), b"2").unwrap();
    build_from(&mut s, &src, scan(&src, 2));
    fs::write(src.join("d/f"), b"3").unwrap();
    let m3 = scan(&src, 3);
    let b = s.begin(m3.clone()).unwrap();
    assert!(b.recycled());
    drop(b); // "crash" before anything was fetched
    let mut s = ReplicaStore::open(&dir, StoreConfig::default()).unwrap();
    assert_eq!(s.current_generation(), Generation(2));
    assert_eq!(fs::read(s.current_path().join("d/f")).unwrap(), b"2");
    build_from(&mut s, &src, m3.clone());
    assert_eq!(tree(&s.current_path()), norm(&m3.entries));
}

#[test]
fn the_second_generation_recycles_a_spare() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"1").unwrap();
    fs::write(src.join("g"), b"g").unwrap();
    let dir = t.path().join("store");
    let mut s = ReplicaStore::open(&dir, StoreConfig::default()).unwrap();
    build_from(&mut s, &src, scan(&src, 1));
    assert!(s.prepare_spare().unwrap());
    assert!(!s.prepare_spare().unwrap(), "one spare is enough");
    assert_eq!(tree(&dir.join("spare-1")), tree(&s.current_path()));
    fs::write(src.join("d/f"), b"2").unwrap();
    let m2 = scan(&src, 2);
    let b = s.begin(m2.clone()).unwrap();
    assert!(b.recycled());
    assert_eq!(b.pending().len(), 1);
    finish_from(b, &src);
    assert_eq!(tree(&s.current_path()), norm(&m2.entries));
    assert_eq!(fs::read(dir.join("gens/1/d/f")).unwrap(), b"1");
    assert!(!dir.join("spare-1").exists());
    // Two generations now: the next build recycles generation 1, no spare needed.
    assert!(!s.prepare_spare().unwrap());
}

#[test]
fn keep_one_never_recycles() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"1").unwrap();
    let cfg = StoreConfig {
        keep: 1,
        ..StoreConfig::default()
    };
    let mut s = ReplicaStore::open(&t.path().join("store"), cfg).unwrap();
    for g in 1..=3 {
        fs::write(src.join("f"), g.to_string()).unwrap();
        let b = s.begin(scan(&src, g)).unwrap();
        assert!(!b.recycled());
        drop(b);
        build_from(&mut s, &src, scan(&src, g));
        s.prune().unwrap();
        assert!(!s.prepare_spare().unwrap());
    }
    assert_eq!(s.list_generations().unwrap().len(), 1);
}
