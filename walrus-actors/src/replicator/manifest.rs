//! Manifests: what one generation of the content tree holds, and how a tree is scanned.
//!
//! A [`Manifest`] lists every entry of a generation, sorted by path: directories, regular
//! files (mode, size, mtime, blake3 content hash, an XXH3-128 transfer check, and for large
//! files a list of content-defined chunks so a small change is sent as a small delta), and
//! symlinks that stay inside the tree. Special files (devices, fifos, sockets), names that
//! are not UTF-8 and escaping symlinks are skipped with a warning. [`Manifest::check`] is applied to every
//! manifest that arrives from the wire before anything is done with it.

use super::path::{check_symlink_target, PathError, RelPath};
use crate::model::Generation;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A blake3 hash of content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        hex_prefix(&self.0, f)
    }
}

/// A digest in logs: its first 6 bytes in hex.
fn hex_prefix(digest: &[u8], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    for b in digest.iter().take(6) {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl ContentHash {
    /// Hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

/// An XXH3-128 checksum of a file's content, computed by the primary from the same read as
/// its [`ContentHash`]. A replica checks every file it fetches whole against it.
///
/// Why not the blake3 hash: the check guards against accidents (the file changed on the
/// primary between its scan and the send, a truncated read, a bug in framing or writing),
/// not against an adversary: the bytes arrive over mutually authenticated TLS from the
/// primary, which writes the manifest anyway. A 128-bit non-cryptographic checksum catches
/// those as surely, at several times blake3's speed (rsync checks transfers with XXH3-128 for
/// the same reason). The content hash stays blake3: replicas link unchanged files by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferCheck(pub [u8; 16]);

impl std::fmt::Debug for TransferCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        hex_prefix(&self.0, f)
    }
}

impl TransferCheck {
    /// Checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(twox_hash::XxHash3_128::oneshot(bytes).to_le_bytes())
    }
}

/// Computes a [`TransferCheck`] over bytes fed in pieces.
#[derive(Clone, Default)]
pub struct TransferChecker(twox_hash::XxHash3_128);

impl std::fmt::Debug for TransferChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferChecker")
    }
}

impl TransferChecker {
    /// A checker that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    /// The check of every byte fed so far.
    pub fn finish(&self) -> TransferCheck {
        TransferCheck(self.0.finish_128().to_le_bytes())
    }
}

/// Both digests of a file's content ([`ContentHash`], [`TransferCheck`]), fed from one read.
#[derive(Clone)]
pub struct ContentHasher {
    hash: blake3::Hasher,
    check: TransferChecker,
}

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentHasher")
    }
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ContentHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self {
            hash: blake3::Hasher::new(),
            check: TransferChecker::new(),
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        self.check.update(bytes);
    }

    /// The digests of every byte fed so far.
    pub fn finalize(&self) -> (ContentHash, TransferCheck) {
        (
            ContentHash(*self.hash.finalize().as_bytes()),
            self.check.finish(),
        )
    }
}

/// One content-defined chunk of a large file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Offset of the chunk in the file.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub len: u32,
    /// blake3 hash of the chunk's bytes.
    pub hash: ContentHash,
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// blake3 hash of the whole content.
        hash: ContentHash,
        /// XXH3-128 checksum of the whole content (a replica checks a fetched file by it).
        check: TransferCheck,
        /// Content-defined chunks covering the file, for files of at least
        /// [`CHUNKED_FILE_MIN`] bytes; empty for smaller files.
        chunks: Vec<Chunk>,
    },
    /// A symlink whose target stays inside the tree.
    Symlink {
        /// The link's target, relative.
        target: String,
    },
}

/// Modification time (seconds and nanoseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Mtime {
    /// Seconds since 1970-01-01 UTC.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Mtime {
    /// As a `SystemTime`, if representable.
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        let d = std::time::Duration::new(self.secs.unsigned_abs(), self.nanos.min(999_999_999));
        if self.secs >= 0 {
            std::time::UNIX_EPOCH.checked_add(d)
        } else {
            std::time::UNIX_EPOCH.checked_sub(d)
        }
    }
}

/// One entry of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the content root.
    pub path: RelPath,
    /// Directory, file or symlink.
    pub kind: Kind,
    /// Permission bits (`0o7777` mask; replicas apply only `0o777`).
    pub mode: u32,
    /// Size in bytes (files; zero otherwise).
    pub size: u64,
    /// Modification time (files; replicas set it on the copy).
    pub mtime: Mtime,
}

/// Everything one generation holds, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The generation this manifest describes.
    pub generation: Generation,
    /// Entries sorted by path (byte order, so a parent comes before its children).
    pub entries: Vec<Entry>,
}

/// Files of at least this size get a chunk list (smaller ones are sent whole).
pub const CHUNKED_FILE_MIN: u64 = 8 * 1024 * 1024;
/// Most chunks one file may have (bounds one entry to well under a frame).
pub const MAX_CHUNKS: usize = 16 * 1024;
/// Average chunk size for files up to `MAX_CHUNKS / 2` times this size.
const CHUNK_AVG_MIN: u64 = 64 * 1024;

/// Bounds on a manifest (checked on every manifest from the wire and on scans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in one generation. Default 2,000,000.
    pub max_entries: usize,
    /// Largest single file, in bytes. Default 64 GiB.
    pub max_file_size: u64,
    /// Largest total of file sizes, in bytes. Default 4 TiB.
    pub max_total_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 2_000_000,
            max_file_size: 64 << 30,
            max_total_size: 4 << 40,
        }
    }
}

/// Why a manifest was refused or a scan failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A path is not acceptable (absolute, `..`, escaping symlink, too long).
    #[error("bad path: {0}")]
    Path(#[from] PathError),
    /// Entries are not strictly sorted (or a path repeats).
    #[error("entry {path} is out of order or repeated")]
    Unsorted {
        /// The entry found out of place.
        path: RelPath,
    },
    /// An entry's parent is not a directory entry of the manifest.
    #[error("entry {path} has no parent directory in the manifest")]
    NoParent {
        /// The orphaned entry.
        path: RelPath,
    },
    /// A bound of [`Limits`] or of the chunk list was broken.
    #[error("entry {path}: {what}")]
    OverLimit {
        /// The entry (or the last one read).
        path: String,
        /// Which bound, with the numbers.
        what: String,
    },
    /// Reading the tree failed.
    #[error("scan {path}: {source}")]
    Io {
        /// The file-system path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl Manifest {
    /// An empty manifest (the state of a replica that has nothing yet).
    pub fn empty(generation: Generation) -> Self {
        Self {
            generation,
            entries: Vec::new(),
        }
    }

    /// Checks ordering, parents, symlink targets, chunk lists and [`Limits`]. Called on every
    /// manifest received; a manifest that fails is refused as a whole.
    pub fn check(&self, limits: &Limits) -> Result<(), ManifestError> {
        if self.entries.len() > limits.max_entries {
            return Err(ManifestError::OverLimit {
                path: String::new(),
                what: format!(
                    "{} entries, limit {}",
                    self.entries.len(),
                    limits.max_entries
                ),
            });
        }
        let mut dirs: HashSet<&RelPath> = HashSet::new();
        let mut total: u64 = 0;
        let mut prev: Option<&RelPath> = None;
        for e in &self.entries {
            if prev.is_some_and(|p| p >= &e.path) {
                return Err(ManifestError::Unsorted {
                    path: e.path.clone(),
                });
            }
            prev = Some(&e.path);
            if let Some(parent) = e.path.parent() {
                if !dirs.contains(&parent) {
                    return Err(ManifestError::NoParent {
                        path: e.path.clone(),
                    });
                }
            }
            let over = |what: String| ManifestError::OverLimit {
                path: e.path.to_string(),
                what,
            };
            if e.mode > 0o7777 {
                return Err(over(format!("mode {:o}", e.mode)));
            }
            match &e.kind {
                Kind::Dir => {
                    dirs.insert(&e.path);
                }
                Kind::Symlink { target } => check_symlink_target(&e.path, target)?,
                Kind::File { chunks, .. } => {
                    if e.size > limits.max_file_size {
                        return Err(over(format!(
                            "size {} over limit {}",
                            e.size, limits.max_file_size
                        )));
                    }
                    total = total.saturating_add(e.size);
                    if total > limits.max_total_size {
                        return Err(over(format!(
                            "total size {total} over limit {}",
                            limits.max_total_size
                        )));
                    }
                    check_chunks(e.size, chunks).map_err(over)?;
                }
            }
        }
        Ok(())
    }

    /// The entry at `path`, if any (binary search: entries are sorted).
    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Whether `other` lists the same tree (generation numbers aside).
    pub fn same_tree(&self, other: &Manifest) -> bool {
        self.entries == other.entries
    }

    /// Sum of the sizes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

fn check_chunks(size: u64, chunks: &[Chunk]) -> Result<(), String> {
    if chunks.is_empty() {
        return Ok(());
    }
    if chunks.len() > MAX_CHUNKS {
        return Err(format!("{} chunks, limit {MAX_CHUNKS}", chunks.len()));
    }
    let mut at = 0u64;
    for c in chunks {
        if c.offset != at || c.len == 0 || c.len as usize > fastcdc::v2020::MAXIMUM_MAX {
            return Err(format!(
                "chunk at {} of {} bytes is misplaced",
                c.offset, c.len
            ));
        }
        at += u64::from(c.len);
    }
    if at != size {
        return Err(format!("chunks cover {at} bytes of {size}"));
    }
    Ok(())
}

/// Chunker sizes (min, avg, max) for a file of `size` bytes, or `None` if it is sent whole
/// (under [`CHUNKED_FILE_MIN`], or so large that its chunk list would be unbounded).
/// The average grows with the file so that a file never has more than [`MAX_CHUNKS`] chunks.
pub fn chunk_sizes(size: u64) -> Option<(usize, usize, usize)> {
    if size < CHUNKED_FILE_MIN {
        return None;
    }
    let mut avg = CHUNK_AVG_MIN;
    // Worst case the chunker cuts at min = avg / 4: keep size / min under MAX_CHUNKS.
    while size / (avg / 4) >= MAX_CHUNKS as u64 && avg < fastcdc::v2020::AVERAGE_MAX as u64 {
        avg *= 2;
    }
    if size / (avg / 4) >= MAX_CHUNKS as u64 {
        // Over about 16 GiB: sent whole rather than with an unbounded chunk list.
        return None;
    }
    let avg = avg as usize;
    Some((avg / 4, avg, (avg * 4).min(fastcdc::v2020::MAXIMUM_MAX)))
}

/// What scanning one file yields: its whole-content hash and check, and for a large file
/// its chunk list.
pub type FileDigests = (ContentHash, TransferCheck, Vec<Chunk>);

/// Hashes a file: the whole-content hash and check and, for a large file, its chunk list.
pub fn hash_file(path: &Path, size: u64) -> io::Result<FileDigests> {
    hash_file_resumable(path, size, None).map(|(d, _)| d)
}

/// A large file's whole-content hash state at the start of its last chunk (the one cut by
/// the end of the file, not by its content): an append is hashed from there.
#[derive(Debug, Clone)]
pub(crate) struct Resume(ContentHasher);

/// [`hash_file`], resuming after an append when `prev` (the file's previous size, chunks
/// and [`Resume`]) allows: the chunks before the previous last one are read again and
/// their hashes checked (on several threads; one blake3 pass instead of chunking and two
/// hash passes), then chunking and the whole hash continue from the previous last chunk's
/// start. Content-defined cuts depend only on the bytes since the previous cut, so the
/// result equals a full hash. Anything else (a chunk that changed, other chunker sizes)
/// falls back to the full hash. Also returns the [`Resume`] of the new content.
pub(crate) fn hash_file_resumable(
    path: &Path,
    size: u64,
    prev: Option<(u64, &[Chunk], &Resume)>,
) -> io::Result<(FileDigests, Option<Resume>)> {
    let file = fs::File::open(path)?;
    match chunk_sizes(size) {
        None => {
            let mut hasher = ContentHasher::new();
            // Under glibc's mmap threshold: no mmap/munmap per file.
            let mut buf = vec![0u8; 64 * 1024];
            let mut r = io::BufReader::with_capacity(0, file);
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let (hash, check) = hasher.finalize();
            Ok(((hash, check, Vec::new()), None))
        }
        Some(sizes) => {
            let mut start = (0u64, Vec::new(), ContentHasher::new());
            if let Some((old_size, old_chunks, resume)) = prev {
                if let Some((_, kept)) = old_chunks.split_last() {
                    if size >= old_size
                        && chunk_sizes(old_size) == Some(sizes)
                        && prefix_unchanged(&file, kept)?
                    {
                        let at = kept.last().map_or(0, |c| c.offset + u64::from(c.len));
                        start = (at, kept.to_vec(), resume.0.clone());
                    }
                }
            }
            chunk_and_hash(file, sizes, start)
        }
    }
}

/// Chunks and hashes `file` from `start.0` on, continuing the chunk list `start.1` and the
/// whole-content hasher `start.2` (both for the bytes before `start.0`).
fn chunk_and_hash(
    mut file: fs::File,
    (min, avg, max): (usize, usize, usize),
    (at, mut chunks, hasher): (u64, Vec<Chunk>, ContentHasher),
) -> io::Result<(FileDigests, Option<Resume>)> {
    use std::io::Seek;
    file.seek(io::SeekFrom::Start(at))?;
    // One read of the file; the whole-content hash runs on a second thread beside the
    // chunker and the chunk hashes (a large file's rescan is all hashing).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    std::thread::scope(|scope| {
        let whole = scope.spawn(move || {
            let mut hasher = hasher;
            // The state before the chunk last received: the next append resumes there.
            let mut before_last = None;
            for data in rx {
                before_last = Some(hasher.clone());
                hasher.update(&data);
            }
            (hasher.finalize(), before_last)
        });
        for c in fastcdc::v2020::StreamCDC::new(file, min, avg, max) {
            let c = c.map_err(|e| io::Error::other(e.to_string()))?;
            chunks.push(Chunk {
                offset: at + c.offset,
                len: c.length as u32,
                hash: ContentHash::of(&c.data),
            });
            if tx.send(c.data).is_err() {
                break; // the hasher is gone: it panicked, joined below
            }
        }
        drop(tx);
        let ((hash, check), before_last) = match whole.join() {
            Ok(h) => h,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if chunks.len() > MAX_CHUNKS {
            // The file changed while we read it; the next scan sees it settled.
            return Err(io::Error::other("file changed while chunking"));
        }
        Ok(((hash, check, chunks), before_last.map(Resume)))
    })
}

/// Whether `file` still holds `chunks` (read again and hashed, over up to 4 threads).
fn prefix_unchanged(file: &fs::File, chunks: &[Chunk]) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    if chunks.is_empty() {
        return Ok(true);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let per = chunks.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    for c in part {
                        buf.resize(c.len as usize, 0);
                        file.read_exact_at(&mut buf, c.offset)?;
                        if ContentHash::of(&buf) != c.hash {
                            return Ok(false);
                        }
                    }
                    Ok::<_, io::Error>(true)
                })
            })
            .collect();
        let mut same = true;
        for h in handles {
            match h.join() {
                Ok(r) => same &= r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(same)
    })
}

/// What makes a scanned file's cached hash still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatKey {
    size: u64,
    mtime: Mtime,
    ctime: (i64, i64),
    ino: u64,
}

/// An entry a scan left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its file-system path.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

/// Scans a content root into manifests, re-hashing only files whose size, mtime, ctime or
/// inode changed since the previous scan (the primary keeps one `Scanner`). A large file
/// that grew on the same inode is re-hashed from its previous last chunk once the chunks
/// before it are read again and found unchanged (an append; see `hash_file_resumable`).
#[derive(Debug, Default)]
pub struct Scanner {
    cache: Cache,
    /// Entries skipped by the last scan (special files, bad names, escaping symlinks).
    pub skipped: Vec<Skipped>,
}

impl Scanner {
    /// A scanner with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `root` and returns its manifest, labelled `generation`.
    pub fn scan(
        &mut self,
        root: &Path,
        generation: Generation,
        limits: &Limits,
    ) -> Result<Manifest, ManifestError> {
        let old = std::mem::take(&mut self.cache);
        let count = AtomicUsize::new(0);
        let mut top = Walk::new(root, &old, limits, &count);
        top.cache.reserve(old.len());
        // The root's own files here; its directories spread over threads.
        let (dirs, files): (Vec<_>, Vec<_>) =
            top.list(None)?.into_iter().partition(|(_, md)| md.is_dir());
        for (rel, md) in files {
            top.visit_with(rel, md)?;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get().min(4))
            .min(dirs.len());
        if threads <= 1 {
            for (rel, md) in dirs {
                top.visit_with(rel, md)?;
            }
        } else {
            let mut parts: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
            for (i, d) in dirs.into_iter().enumerate() {
                parts[i % threads].push(d);
            }
            let (old, count) = (&old, &count);
            let walkers: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .map(|part| {
                        scope.spawn(move || {
                            let mut w = Walk::new(root, old, limits, count);
                            for (rel, md) in part {
                                w.visit_with(rel, md)?;
                            }
                            Ok::<_, ManifestError>((w.out, w.cache, w.skipped))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join()).collect()
            });
            for w in walkers {
                match w {
                    Ok(r) => {
                        let (out, cache, skipped) = r?;
                        top.out.extend(out);
                        top.cache.extend(cache);
                        top.skipped.extend(skipped);
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
        let Walk {
            out: mut entries,
            cache,
            skipped,
            ..
        } = top;
        self.cache = cache;
        self.skipped = skipped;
        entries.sort_unstable_by(|a: &Entry, b: &Entry| a.path.cmp(&b.path));
        let m = Manifest {
            generation,
            entries,
        };
        m.check(limits)?;
        Ok(m)
    }

    /// Rescans only the `dirty` paths (each with its subtree) and their parent directories'
    /// own entries, on top of `prev`: the cost follows the change, not the tree. Returns
    /// `None` when the result is not consistent (a dirty path under a directory that is
    /// not in the manifest, say): the caller then runs a full [`scan`](Self::scan).
    pub fn scan_dirty(
        &mut self,
        root: &Path,
        prev: &Manifest,
        dirty: &std::collections::BTreeSet<RelPath>,
        generation: Generation,
        limits: &Limits,
    ) -> Result<Option<Manifest>, ManifestError> {
        let mut map: std::collections::BTreeMap<RelPath, Entry> = prev
            .entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect();
        let count = AtomicUsize::new(0);
        let mut w = Walk::new(root, &self.cache, limits, &count);
        let mut parents = std::collections::BTreeSet::new();
        let mut done: Vec<&RelPath> = Vec::new();
        for d in dirty {
            if let Some(p) = d.parent() {
                parents.insert(p);
            }
            // A path under one already rescanned is covered (dirty is sorted).
            if done
                .last()
                .is_some_and(|last| d.as_str().starts_with(&format!("{last}/")))
            {
                continue;
            }
            done.push(d);
            let prefix = format!("{d}/");
            let stale: Vec<RelPath> = map
                .range(d.clone()..)
                .take_while(|(k, _)| *k == d || k.as_str().starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                map.remove(&k);
            }
            w.visit(d.clone())?;
            for e in w.out.drain(..) {
                map.insert(e.path.clone(), e);
            }
        }
        for p in parents {
            let covered = done
                .iter()
                .any(|d| p == **d || p.as_str().starts_with(&format!("{d}/")));
            if covered {
                continue;
            }
            let Some(entry) = map.get_mut(&p) else {
                return Ok(None);
            };
            match fs::symlink_metadata(p.under(root)) {
                Ok(md) if md.is_dir() && matches!(entry.kind, Kind::Dir) => {
                    entry.mode = md.permissions().mode() & 0o7777;
                    entry.mtime = Mtime {
                        secs: md.mtime(),
                        nanos: md.mtime_nsec().clamp(0, 999_999_999) as u32,
                    };
                }
                _ => return Ok(None),
            }
        }
        let (cache, skipped) = (w.cache, w.skipped);
        self.cache.extend(cache);
        self.skipped = skipped;
        let m = Manifest {
            generation,
            entries: map.into_values().collect(),
        };
        if m.check(limits).is_err() {
            return Ok(None);
        }
        Ok(Some(m))
    }
}

/// What the hash cache holds per file: the stat that made it valid, hash, chunks, and for a
/// large file where an append resumes hashing.
type Cache = HashMap<RelPath, (StatKey, FileDigests, Option<Resume>)>;

/// One walker of a scan: reads the previous scan's cache, collects entries, the new cache
/// and what it skipped. A full scan runs one per thread over the top-level directories.
struct Walk<'a> {
    root: &'a Path,
    old: &'a Cache,
    limits: &'a Limits,
    /// Entries visited by all walkers of the scan (bounds the total).
    count: &'a AtomicUsize,
    out: Vec<Entry>,
    cache: Cache,
    skipped: Vec<Skipped>,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Path, old: &'a Cache, limits: &'a Limits, count: &'a AtomicUsize) -> Self {
        Self {
            root,
            old,
            limits,
            count,
            out: Vec::new(),
            cache: HashMap::new(),
            skipped: Vec::new(),
        }
    }

    /// Adds everything under directory `dir` (the root: `None`) to `out`.
    fn walk(&mut self, dir: Option<&RelPath>) -> Result<(), ManifestError> {
        for (rel, md) in self.list(dir)? {
            self.visit_with(rel, md)?;
        }
        Ok(())
    }

    /// The entries of directory `dir` (the root: `None`) with their metadata; names that
    /// are not acceptable are skipped with a warning.
    fn list(
        &mut self,
        dir: Option<&RelPath>,
    ) -> Result<Vec<(RelPath, fs::Metadata)>, ManifestError> {
        let root = self.root;
        let mut listed = Vec::new();
        let abs = dir.map_or_else(|| root.to_path_buf(), |d| d.under(root));
        let io_err = |source| ManifestError::Io {
            path: abs.clone(),
            source,
        };
        let rd = match fs::read_dir(&abs) {
            Ok(rd) => rd,
            // Removed while we walked: the watcher will report it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_some() => return Ok(listed),
            Err(e) => return Err(io_err(e)),
        };
        for de in rd {
            let de = de.map_err(io_err)?;
            let name = de.file_name();
            let rel = match name.to_str() {
                Some(n) => match dir {
                    Some(d) => RelPath::new(format!("{d}/{n}")),
                    None => RelPath::new(n),
                },
                None => Err(PathError::NotUtf8(name.to_string_lossy().into_owned())),
            };
            let rel = match rel {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "replicator: skipping entry with a bad name");
                    self.skipped.push(Skipped {
                        path: abs.join(&name),
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            // `fstatat` on the directory's descriptor: no walk of the whole path per entry.
            let md = match de.metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ManifestError::Io {
                        path: abs.join(&name),
                        source,
                    })
                }
            };
            listed.push((rel, md));
        }
        Ok(listed)
    }

    /// Adds the entry at `rel` (and, for a directory, everything under it) to `out`.
    fn visit(&mut self, rel: RelPath) -> Result<(), ManifestError> {
        let root = self.root;
        let md = match fs::symlink_metadata(rel.under(root)) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ManifestError::Io {
                    path: rel.under(root),
                    source,
                })
            }
        };
        self.visit_with(rel, md)
    }

    /// [`visit`](Self::visit) with the entry's metadata (not following a symlink) in hand.
    fn visit_with(&mut self, rel: RelPath, md: fs::Metadata) -> Result<(), ManifestError> {
        let (root, limits) = (self.root, self.limits);
        if self.count.fetch_add(1, Ordering::Relaxed) >= limits.max_entries {
            return Err(ManifestError::OverLimit {
                path: rel.to_string(),
                what: format!("more than {} entries", limits.max_entries),
            });
        }
        let p = rel.under(root);
        let mtime = Mtime {
            secs: md.mtime(),
            nanos: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        };
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_dir() {
            self.out.push(Entry {
                path: rel.clone(),
                kind: Kind::Dir,
                mode,
                size: 0,
                mtime,
            });
            self.walk(Some(&rel))?;
        } else if ft.is_file() {
            let key = StatKey {
                size: md.len(),
                mtime,
                ctime: (md.ctime(), md.ctime_nsec()),
                ino: md.ino(),
            };
            let ((hash, check, chunks), resume) = match self.old.get(&rel) {
                Some((k, d, r)) if *k == key => (d.clone(), r.clone()),
                old => {
                    // Same inode, grown: maybe an append (checked, see hash_file_resumable).
                    let prev = old.and_then(|(k, (_, _, c), r)| {
                        (k.ino == key.ino && k.size <= key.size).then_some((
                            k.size,
                            c.as_slice(),
                            r.as_ref()?,
                        ))
                    });
                    match hash_file_resumable(&p, key.size, prev) {
                        Ok(hc) => hc,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                        Err(source) => return Err(ManifestError::Io { path: p, source }),
                    }
                }
            };
            if key.size > limits.max_file_size {
                return Err(ManifestError::OverLimit {
                    path: rel.to_string(),
                    what: format!("size {} over limit {}", key.size, limits.max_file_size),
                });
            }
            self.cache
                .insert(rel.clone(), (key, (hash, check, chunks.clone()), resume));
            self.out.push(Entry {
                path: rel,
                kind: Kind::File {
                    hash,
                    check,
                    chunks,
                },
                mode,
                size: key.size,
                mtime,
            });
        } else if ft.is_symlink() {
            let target = match fs::read_link(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(source) => return Err(ManifestError::Io { path: p, source }),
            };
            let checked = target
                .to_str()
                .ok_or_else(|| PathError::NotUtf8(target.to_string_lossy().into_owned()))
                .and_then(|t| check_symlink_target(&rel, t).map(|()| t.to_owned()));
            match checked {
                Ok(target) => self.out.push(Entry {
                    path: rel,
                    kind: Kind::Symlink { target },
                    mode: 0o777,
                    size: 0,
                    mtime,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "replicator: skipping symlink");
                    self.skipped.push(Skipped {
                        path: p,
                        reason: e.to_string(),
                    });
                }
            }
        } else {
            tracing::warn!(path = %rel, "replicator: skipping special file");
            self.skipped.push(Skipped {
                path: p,
                reason: "special file".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: Kind::File {
                hash: ContentHash::of(content),
                check: TransferCheck::of(content),
                chunks: vec![],
            },
            mode: 0o644,
            size: content.len() as u64,
            mtime: Mtime { secs: 1, nanos: 0 },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: Kind::Dir,
            mode: 0o755,
            size: 0,
            mtime: Mtime { secs: 1, nanos: 0 },
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            generation: Generation(1),
            entries,
        }
    }

    #[test]
    fn check_accepts_a_well_formed_manifest() {
        let m = manifest(vec![dir("a"), file("a/x", b"x"), file("b", b"")]);
        m.check(&Limits::default()).unwrap();
    }

    #[test]
    fn check_refuses_orphans_disorder_and_escapes() {
        let l = Limits::default();
        let orphan = manifest(vec![file("a/x", b"x")]);
        assert!(matches!(
            orphan.check(&l),
            Err(ManifestError::NoParent { .. })
        ));
        let under_file = manifest(vec![file("a", b"x"), file("a/x", b"x")]);
        assert!(matches!(
            under_file.check(&l),
            Err(ManifestError::NoParent { .. })
        ));
        let unsorted = manifest(vec![file("b", b""), file("a", b"")]);
        assert!(matches!(
            unsorted.check(&l),
            Err(ManifestError::Unsorted { .. })
        ));
        let repeated = manifest(vec![file("a", b""), file("a", b"")]);
        assert!(matches!(
            repeated.check(&l),
            Err(ManifestError::Unsorted { .. })
        ));
        let mut link = file("l", b"");
        link.kind = Kind::Symlink {
            target: "../../etc/passwd".into(),
        };
        assert!(matches!(
            manifest(vec![link]).check(&l),
            Err(ManifestError::Path(PathError::EscapingSymlink { .. }))
        ));
    }

    #[test]
    fn check_refuses_oversize_entries_and_bad_chunks() {
        let tight = Limits {
            max_entries: 2,
            max_file_size: 10,
            max_total_size: 15,
        };
        let big = manifest(vec![file("a", &[0; 11])]);
        assert!(matches!(
            big.check(&tight),
            Err(ManifestError::OverLimit { .. })
        ));
        let total = manifest(vec![file("a", &[0; 8]), file("b", &[0; 8])]);
        assert!(matches!(
            total.check(&tight),
            Err(ManifestError::OverLimit { .. })
        ));
        let many = manifest(vec![file("a", b""), file("b", b""), file("c", b"")]);
        assert!(matches!(
            many.check(&tight),
            Err(ManifestError::OverLimit { .. })
        ));
        let mut gap = file("a", &[0; 10]);
        gap.kind = Kind::File {
            hash: ContentHash::of(&[0; 10]),
            check: TransferCheck::of(&[0; 10]),
            chunks: vec![Chunk {
                offset: 0,
                len: 4,
                hash: ContentHash::of(&[0; 4]),
            }],
        };
        assert!(matches!(
            manifest(vec![gap]).check(&Limits::default()),
            Err(ManifestError::OverLimit { .. })
        ));
    }

    #[test]
    fn chunk_sizes_bound_the_chunk_count() {
        assert_eq!(chunk_sizes(CHUNKED_FILE_MIN - 1), None);
        assert_eq!(
            chunk_sizes(200 << 20),
            Some((16 << 10, 64 << 10, 256 << 10))
        );
        assert_eq!(chunk_sizes(64 << 30), None);
        for size in [1u64 << 30, 10 << 30, 15 << 30] {
            let (min, _, _) = chunk_sizes(size).unwrap();
            assert!(size / min as u64 <= MAX_CHUNKS as u64, "size {size}");
        }
    }

    #[test]
    fn scan_lists_files_dirs_symlinks_and_skips_escapes() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("d/e")).unwrap();
        fs::write(r.join("d/e/f.txt"), b"hello").unwrap();
        fs::write(r.join("empty"), b"").unwrap();
        symlink("d/e/f.txt", r.join("good")).unwrap();
        symlink("../outside", r.join("bad")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        let mut s = Scanner::new();
        let m = s.scan(r, Generation(3), &Limits::default()).unwrap();
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["d", "d/e", "d/e/f.txt", "empty", "good"]);
        assert_eq!(s.skipped.len(), 2);
        let f = m.get(&RelPath::new("d/e/f.txt").unwrap()).unwrap();
        assert_eq!(f.size, 5);
        assert!(matches!(&f.kind, Kind::File { hash, .. } if *hash == ContentHash::of(b"hello")));
        // A second scan with nothing changed gives the same tree.
        let again = s.scan(r, Generation(4), &Limits::default()).unwrap();
        assert!(again.same_tree(&m));
        fs::write(r.join("d/e/f.txt"), b"hello!").unwrap();
        let changed = s.scan(r, Generation(5), &Limits::default()).unwrap();
        assert!(!changed.same_tree(&m));
    }

    #[test]
    fn special_files_are_skipped_with_a_warning() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success(), "mkfifo (coreutils)");
        fs::write(t.path().join("f"), b"f").unwrap();
        let mut s = Scanner::new();
        let m = s.scan(t.path(), Generation(1), &Limits::default()).unwrap();
        assert_eq!(m.entries.len(), 1);
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(s.skipped[0].path, fifo);
    }

    #[test]
    fn a_dirty_rescan_equals_a_full_scan() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::create_dir_all(r.join("c")).unwrap();
        fs::write(r.join("a/b/f"), b"1").unwrap();
        fs::write(r.join("c/g"), b"2").unwrap();
        let l = Limits::default();
        let mut s = Scanner::new();
        let m1 = s.scan(r, Generation(1), &l).unwrap();
        fs::write(r.join("a/b/f"), b"changed").unwrap();
        fs::remove_dir_all(r.join("c")).unwrap();
        fs::create_dir_all(r.join("n/m")).unwrap();
        fs::write(r.join("n/m/h"), b"3").unwrap();
        let dirty: std::collections::BTreeSet<RelPath> = ["a/b/f", "c", "c/g", "n", "n/m/h"]
            .into_iter()
            .map(|p| RelPath::new(p).unwrap())
            .collect();
        let partial = s
            .scan_dirty(r, &m1, &dirty, Generation(2), &l)
            .unwrap()
            .unwrap();
        let full = Scanner::new().scan(r, Generation(2), &l).unwrap();
        assert_eq!(partial, full);
        // A dirty path whose parent is unknown asks for a full scan.
        fs::create_dir_all(r.join("x/y")).unwrap();
        let orphan = [RelPath::new("x/y").unwrap()].into_iter().collect();
        assert_eq!(
            s.scan_dirty(r, &full, &orphan, Generation(3), &l).unwrap(),
            None
        );
    }

    #[test]
    fn large_files_get_chunks_that_survive_an_append() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big");
        let mut data: Vec<u8> = (0..CHUNKED_FILE_MIN as usize + 100_000)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        fs::write(&p, &data).unwrap();
        let (h1, k1, c1) = hash_file(&p, data.len() as u64).unwrap();
        assert_eq!(h1, ContentHash::of(&data));
        assert_eq!(k1, TransferCheck::of(&data));
        check_chunks(data.len() as u64, &c1).unwrap();
        data.extend(std::iter::repeat_n(7u8, 300_000));
        fs::write(&p, &data).unwrap();
        let (_, _, c2) = hash_file(&p, data.len() as u64).unwrap();
        let old: HashSet<_> = c1.iter().map(|c| c.hash).collect();
        let shared = c2.iter().filter(|c| old.contains(&c.hash)).count();
        assert!(shared + 3 >= c1.len(), "shared {shared} of {}", c1.len());
    }

    #[test]
    fn an_append_is_hashed_from_the_last_chunk_and_a_changed_prefix_is_seen() {
        use std::io::{Seek, Write};
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let mut x = 88172645463325252u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        fs::write(root.join("big"), noise(CHUNKED_FILE_MIN as usize + 500_000)).unwrap();
        let limits = Limits::default();
        let mut s = Scanner::new();
        s.scan(root, Generation(1), &limits).unwrap();
        let full = |g| Scanner::new().scan(root, Generation(g), &limits).unwrap();
        let append = |bytes: &[u8]| {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(root.join("big"))
                .unwrap();
            f.write_all(bytes).unwrap();
        };
        // Appends (same inode, grown): resumed, equal to a full scan.
        append(&noise(700_000));
        assert_eq!(s.scan(root, Generation(2), &limits).unwrap(), full(2));
        append(&noise(10));
        assert_eq!(s.scan(root, Generation(3), &limits).unwrap(), full(3));
        // Planted fault: a byte in the prefix changed in place, then an append.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(root.join("big"))
            .unwrap();
        f.seek(std::io::SeekFrom::Start(1_000_000)).unwrap();
        f.write_all(b"!").unwrap();
        drop(f);
        append(&noise(1000));
        let m = s.scan(root, Generation(4), &limits).unwrap();
        assert_eq!(m, full(4));
        let data = fs::read(root.join("big")).unwrap();
        let Kind::File { hash, check, .. } = &m.entries[0].kind else {
            panic!("not a file");
        };
        assert_eq!(*hash, ContentHash::of(&data));
        assert_eq!(*check, TransferCheck::of(&data));
    }

    #[test]
    fn a_scan_over_threads_lists_everything_once_and_bounds_the_total() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let mut want = Vec::new();
        for d in 0..9 {
            fs::create_dir_all(r.join(format!("d{d}/sub"))).unwrap();
            want.push(format!("d{d}"));
            want.push(format!("d{d}/sub"));
            for f in 0..5 {
                let p = format!("d{d}/sub/f{f}");
                fs::write(r.join(&p), p.as_bytes()).unwrap();
                want.push(p);
            }
        }
        fs::write(r.join("top"), b"top").unwrap();
        want.push("top".into());
        want.sort();
        let l = Limits::default();
        let mut s = Scanner::new();
        let m = s.scan(r, Generation(1), &l).unwrap();
        let got: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(got, want);
        let f = m.get(&RelPath::new("d7/sub/f3").unwrap()).unwrap();
        assert!(
            matches!(&f.kind, Kind::File { hash, .. } if *hash == ContentHash::of(b"d7/sub/f3"))
        );
        // From the cache, the same; one entry over the limit, refused.
        assert_eq!(s.scan(r, Generation(2), &l).unwrap().entries, m.entries);
        let tight = Limits {
            max_entries: want.len() - 1,
            ..l
        };
        assert!(matches!(
            Scanner::new().scan(r, Generation(1), &tight),
            Err(ManifestError::OverLimit { .. })
        ));
    }
}
