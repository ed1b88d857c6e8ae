//! The transfer driver: the primary's side ([`serve`]) and the replica's ([`pull`]), over
//! any `AsyncRead`/`AsyncWrite` pair (a QUIC bi-directional stream later; TCP loopback or a
//! tokio duplex now).
//!
//! The primary serves only what a manifest it published lists, and opens files with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to its root, so a request can
//! never read outside the root even if the tree changed since the scan. The replica checks
//! every manifest ([`Manifest::check`]) and every fetched file (whole files by their XXH3-128
//! [`TransferCheck`](super::manifest::TransferCheck), deltas chunk by chunk by blake3)
//! before using it.
//!
//! File-system calls are made directly from these async functions: each is short and local,
//! and each connection runs on its own task. A pull of 64 files or more creates them on a
//! helper thread, ahead of their bytes ([`ReplicaStore`]'s `Build::open_ahead`).

use super::manifest::{Kind, Manifest};
use super::path::RelPath;
use super::protocol::{
    pages, read_frame, read_head, read_message, write_data, write_message, write_page, FileRequest,
    Frame, FrameError, Head, Request, Response, DATA_FRAME_MAX, MAX_FILES_PER_REQUEST,
    MAX_RANGES_PER_FILE,
};
use super::store::{ReplicaStore, StoreError};
use crate::model::Generation;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::watch;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The stream or its framing failed.
    #[error("transfer stream: {0}")]
    Frame(#[from] FrameError),
    /// The replica's store refused or failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The primary refused a request.
    #[error("primary refused: {reason}")]
    Refused {
        /// Its reason.
        reason: String,
    },
    /// The primary could not send a file (it changed or vanished since the scan): retry
    /// with the next generation.
    #[error("{path} unavailable on the primary: {reason}")]
    Unavailable {
        /// The file.
        path: RelPath,
        /// The primary's reason.
        reason: String,
    },
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Number of recent generations whose manifests the primary keeps for replicas.
const KEEP_MANIFESTS: usize = 4;

/// What the primary serves: its content root and the manifests it published.
#[derive(Debug)]
pub struct PrimarySource {
    root: PathBuf,
    root_dir: fs::File,
    generations: Mutex<BTreeMap<Generation, Arc<Manifest>>>,
    announce: watch::Sender<Generation>,
}

/// Options of [`serve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Pause after every data frame (tests use it to catch a transfer in the middle).
    pub throttle: Option<Duration>,
}

impl PrimarySource {
    /// A source serving files under `root`.
    pub fn new(root: &Path) -> io::Result<Self> {
        Ok(Self {
            root: root.to_path_buf(),
            root_dir: fs::File::open(root)?,
            generations: Mutex::new(BTreeMap::new()),
            announce: watch::channel(Generation(0)).0,
        })
    }

    /// The content root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Publishes a new generation and announces it to subscribers.
    pub fn publish(&self, m: Manifest) {
        let g = m.generation;
        {
            let mut gens = self.lock();
            gens.insert(g, Arc::new(m));
            while gens.len() > KEEP_MANIFESTS {
                gens.pop_first();
            }
        }
        self.announce.send_replace(g);
    }

    /// The newest published manifest.
    pub fn latest(&self) -> Option<Arc<Manifest>> {
        self.lock().last_key_value().map(|(_, m)| m.clone())
    }

    /// A receiver that sees every announced generation.
    pub fn subscribe(&self) -> watch::Receiver<Generation> {
        self.announce.subscribe()
    }

    fn get(&self, g: Generation) -> Option<Arc<Manifest>> {
        self.lock().get(&g).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Generation, Arc<Manifest>>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is
        // still a valid map.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens `path` beneath the root without following any symlink, and checks it is
    /// still the regular file of `size` bytes the manifest lists.
    fn open_file(&self, path: &RelPath, size: u64) -> Result<fs::File, String> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let fd = openat2(
            &self.root_dir,
            path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| format!("open: {e}"))?;
        let f = fs::File::from(fd);
        let md = f.metadata().map_err(|e| format!("stat: {e}"))?;
        if !md.is_file() || md.size() != size {
            return Err("changed since the scan".into());
        }
        Ok(f)
    }
}

/// Serves one replica connection until it closes. Refused requests are answered and
/// logged; a broken stream ends the connection with an error.
pub async fn serve<R, W>(
    source: &PrimarySource,
    r: R,
    w: W,
    opts: ServeOptions,
) -> Result<(), TransferError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut r = BufReader::new(r);
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut buf = Vec::new();
    let mut data = vec![0u8; DATA_FRAME_MAX];
    loop {
        let req = match read_frame::<Request, _>(&mut r, &mut buf).await {
            Ok(Frame::Message(m)) => m,
            Ok(Frame::Eof) => return Ok(()),
            Ok(Frame::Data) => return Err(FrameError::Unexpected("data from a replica").into()),
            Err(e) => {
                tracing::warn!(error = %e, "replicator: bad request frame, closing");
                return Err(e.into());
            }
        };
        match req {
            Request::Latest => {
                let generation = source.latest().map(|m| m.generation);
                write_message(&mut w, &Response::Latest { generation }).await?;
            }
            Request::Manifest { generation } => match source.get(generation) {
                None => refuse(&mut w, format!("generation {generation:?} not kept")).await?,
                Some(m) => {
                    let ps = pages(&m);
                    let n = ps.len();
                    for (i, p) in ps.into_iter().enumerate() {
                        write_page(&mut w, generation, p, i + 1 == n).await?;
                    }
                }
            },
            Request::Files { generation, files } => {
                let Some(m) = source.get(generation) else {
                    refuse(&mut w, format!("generation {generation:?} not kept")).await?;
                    w.flush().await.map_err(FrameError::from)?;
                    continue;
                };
                if files.len() > MAX_FILES_PER_REQUEST {
                    refuse(&mut w, format!("{} files in one request", files.len())).await?;
                    w.flush().await.map_err(FrameError::from)?;
                    continue;
                }
                for f in &files {
                    send_file(source, &m, f, &mut w, &mut data, opts).await?;
                }
                write_message(&mut w, &Response::FilesEnd).await?;
            }
        }
        w.flush().await.map_err(FrameError::from)?;
    }
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: String) -> Result<(), FrameError> {
    tracing::warn!(%reason, "replicator: refused a replica's request");
    write_message(w, &Response::Refused { reason }).await
}

async fn send_file<W: AsyncWrite + Unpin>(
    source: &PrimarySource,
    m: &Manifest,
    f: &FileRequest,
    w: &mut W,
    data: &mut [u8],
    opts: ServeOptions,
) -> Result<(), FrameError> {
    let size = match m.get(&f.path) {
        Some(e) if matches!(e.kind, Kind::File { .. }) => e.size,
        _ => {
            let reason = format!("{} is not a file of {:?}", f.path, m.generation);
            tracing::warn!(%reason, "replicator: refused a file request");
            return write_message(w, &Response::FileUnavailable { reason }).await;
        }
    };
    let ranges: Vec<(u64, u64)> = if f.ranges.is_empty() {
        vec![(0, size)]
    } else {
        f.ranges.clone()
    };
    let in_file = |&(o, l): &(u64, u64)| o.checked_add(l).is_some_and(|end| end <= size);
    if ranges.len() > MAX_RANGES_PER_FILE || !ranges.iter().all(in_file) {
        let reason = format!("bad ranges for {}", f.path);
        tracing::warn!(%reason, "replicator: refused a file request");
        return write_message(w, &Response::FileUnavailable { reason }).await;
    }
    let mut file = match source.open_file(&f.path, size) {
        Ok(file) => file,
        Err(reason) => {
            tracing::info!(path = %f.path, %reason, "replicator: file unavailable");
            return write_message(w, &Response::FileUnavailable { reason }).await;
        }
    };
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    write_message(w, &Response::File { size: total }).await?;
    for (offset, len) in ranges {
        file.seek(SeekFrom::Start(offset))?;
        let mut left = len;
        while left > 0 {
            let want = left.min(data.len() as u64) as usize;
            let mut got = 0;
            while got < want {
                match file.read(&mut data[got..want])? {
                    0 => break,
                    n => got += n,
                }
            }
            if got < want {
                // Truncated since the scan: pad; the replica's hash check refuses the file.
                data[got..want].fill(0);
            }
            write_data(w, &data[..want]).await?;
            left -= want as u64;
            if let Some(t) = opts.throttle {
                w.flush().await?;
                tokio::time::sleep(t).await;
            }
        }
    }
    Ok(())
}

/// What one [`pull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// The generation the replica serves now.
    pub generation: Generation,
    /// Whether it already served the newest one.
    pub up_to_date: bool,
    /// Files fetched from the primary (whole or delta).
    pub fetched_files: usize,
    /// Bytes of file data received.
    pub fetched_bytes: u64,
    /// When the new generation became visible (`current` switched), before old
    /// generations were pruned.
    pub switched_at: Option<tokio::time::Instant>,
    /// Where the time went.
    pub timings: PullTimings,
    /// Whether an old generation was recycled into the new one (changed in place) rather
    /// than the new tree built from scratch (see [`ReplicaStore::begin`]).
    pub recycled: bool,
}

/// Where one [`pull`]'s time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullTimings {
    /// Fetching the manifest.
    pub manifest: Duration,
    /// Checking it, diffing, laying out directories, links and local copies.
    pub layout: Duration,
    /// Fetching and writing the missing files.
    pub fetch: Duration,
    /// Making it durable and switching `current`.
    pub commit: Duration,
    /// Removing old generations (and preparing a spare for the next build, once).
    pub prune: Duration,
}

/// Brings the replica's store to the primary's newest generation over one connection,
/// then prunes generations beyond `keep`. A refusal (bad manifest, bad stream, content
/// that does not match) is logged and returned; the served generation never changes then.
pub async fn pull<R, W>(store: &mut ReplicaStore, r: R, w: W) -> Result<PullReport, TransferError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = pull_inner(store, r, w).await;
    if let Err(e) = &result {
        tracing::warn!(error = %e, "replicator: pull refused or failed");
    }
    result
}

async fn pull_inner<R, W>(store: &mut ReplicaStore, r: R, w: W) -> Result<PullReport, TransferError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let mut w = BufWriter::new(w);
    let mut buf = Vec::new();
    write_message(&mut w, &Request::Latest).await?;
    w.flush().await.map_err(FrameError::from)?;
    let generation = match read_message::<Response, _>(&mut r, &mut buf).await? {
        Response::Latest {
            generation: Some(g),
        } => g,
        Response::Latest { generation: None } => {
            return Err(TransferError::Refused {
                reason: "the primary has no generation yet".into(),
            })
        }
        other => return Err(unexpected(&other)),
    };
    if generation <= store.current_generation() {
        return Ok(PullReport {
            generation: store.current_generation(),
            up_to_date: true,
            fetched_files: 0,
            fetched_bytes: 0,
            switched_at: None,
            timings: PullTimings::default(),
            recycled: false,
        });
    }
    let t0 = tokio::time::Instant::now();
    write_message(&mut w, &Request::Manifest { generation }).await?;
    w.flush().await.map_err(FrameError::from)?;
    let max_entries = crate::replicator::manifest::Limits::default().max_entries;
    let mut manifest = Manifest::empty(generation);
    loop {
        match read_message::<Response, _>(&mut r, &mut buf).await? {
            Response::ManifestPage {
                generation: g,
                entries,
                last,
            } if g == generation => {
                if manifest.entries.len() + entries.len() > max_entries {
                    return Err(TransferError::Protocol("manifest too long".into()));
                }
                manifest.entries.extend(entries);
                if last {
                    break;
                }
            }
            Response::Refused { reason } => return Err(TransferError::Refused { reason }),
            other => return Err(unexpected(&other)),
        }
    }
    let t_manifest = t0.elapsed();
    let build = store.begin(manifest)?;
    let recycled = build.recycled();
    let t_layout = t0.elapsed();
    let pending = build.pending().to_vec();
    let batches: Vec<&[super::store::Pending]> = pending.chunks(MAX_FILES_PER_REQUEST).collect();
    let send = async {
        for b in &batches {
            let files = b
                .iter()
                .map(|p| FileRequest {
                    path: build.manifest().entries[p.index].path.clone(),
                    ranges: p.ranges(),
                })
                .collect();
            write_message(&mut w, &Request::Files { generation, files }).await?;
            w.flush().await.map_err(FrameError::from)?;
        }
        Ok::<(), TransferError>(())
    };
    let receive = async {
        let mut ahead = build.open_ahead(64);
        let mut bytes = 0u64;
        for b in &batches {
            for p in b.iter() {
                let path = &build.manifest().entries[p.index].path;
                let size = match read_message::<Response, _>(&mut r, &mut buf).await? {
                    Response::File { size } => size,
                    Response::FileUnavailable { reason } => {
                        return Err(TransferError::Unavailable {
                            path: path.clone(),
                            reason,
                        })
                    }
                    Response::Refused { reason } => return Err(TransferError::Refused { reason }),
                    other => return Err(unexpected(&other)),
                };
                let want: u64 = match &p.delta {
                    None => build.manifest().entries[p.index].size,
                    Some(_) => p.ranges().iter().map(|r| r.1).sum(),
                };
                if size != want {
                    return Err(TransferError::Protocol(format!(
                        "{path}: primary offers {size} bytes, expected {want}"
                    )));
                }
                let mut fw = build.writer_ahead(p, &mut ahead)?;
                let mut left = size;
                while left > 0 {
                    match read_head::<Response, _>(&mut r, &mut buf).await? {
                        Head::Data { len } if len as u64 <= left => {
                            // Straight from the reader's buffer into the file (no copy).
                            let mut rest = len;
                            while rest > 0 {
                                let chunk = r.fill_buf().await.map_err(FrameError::from)?;
                                if chunk.is_empty() {
                                    return Err(FrameError::Io(
                                        io::ErrorKind::UnexpectedEof.into(),
                                    )
                                    .into());
                                }
                                let n = rest.min(chunk.len());
                                fw.write(&chunk[..n])?;
                                r.consume(n);
                                rest -= n;
                            }
                            left -= len as u64;
                        }
                        _ => {
                            return Err(TransferError::Protocol(format!(
                                "{path}: bad data framing"
                            )))
                        }
                    }
                }
                fw.finish()?;
                bytes += size;
            }
            match read_message::<Response, _>(&mut r, &mut buf).await? {
                Response::FilesEnd => {}
                other => return Err(unexpected(&other)),
            }
        }
        Ok::<u64, TransferError>(bytes)
    };
    let ((), fetched_bytes) = tokio::try_join!(send, receive)?;
    let t_fetch = t0.elapsed();
    build.commit()?;
    let switched_at = Some(tokio::time::Instant::now());
    let t_commit = t0.elapsed();
    store.prune()?;
    // Only an optimisation of the next build: a failure is not the pull's.
    if let Err(e) = store.prepare_spare() {
        tracing::warn!(error = %e, "replicator: could not prepare a spare generation");
    }
    let timings = PullTimings {
        manifest: t_manifest,
        layout: t_layout - t_manifest,
        fetch: t_fetch - t_layout,
        commit: t_commit - t_fetch,
        prune: t0.elapsed() - t_commit,
    };
    tracing::debug!(?timings, generation = generation.0, "replicator: pulled");
    Ok(PullReport {
        generation,
        up_to_date: false,
        fetched_files: pending.len(),
        fetched_bytes,
        switched_at,
        timings,
        recycled,
    })
}

fn unexpected(r: &Response) -> TransferError {
    let what = match r {
        Response::Latest { .. } => "Latest",
        Response::ManifestPage { .. } => "ManifestPage",
        Response::File { .. } => "File",
        Response::FileUnavailable { .. } => "FileUnavailable",
        Response::FilesEnd => "FilesEnd",
        Response::Refused { .. } => "Refused",
    };
    TransferError::Protocol(format!("unexpected {what}"))
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{Limits, Scanner};
    use super::super::store::StoreConfig;
    use super::*;

    async fn sync_once(src: &PrimarySource, store: &mut ReplicaStore) -> PullReport {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let server = serve(src, ar, aw, ServeOptions::default());
        let client = async {
            let r = pull(store, br, bw).await;
            r
        };
        let (s, c) = tokio::join!(server, client);
        s.unwrap();
        c.unwrap()
    }

    #[tokio::test]
    async fn pulls_a_tree_then_only_the_changes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/a"), b"aaa").unwrap();
        fs::write(root.join("b"), b"bbbb").unwrap();
        let src = PrimarySource::new(&root).unwrap();
        let mut scanner = Scanner::new();
        src.publish(
            scanner
                .scan(&root, Generation(1), &Limits::default())
                .unwrap(),
        );
        let mut store =
            ReplicaStore::open(&t.path().join("store"), StoreConfig::default()).unwrap();
        let rep = sync_once(&src, &mut store).await;
        assert_eq!(
            (rep.generation, rep.fetched_files, rep.fetched_bytes),
            (Generation(1), 2, 7)
        );
        fs::write(root.join("b"), b"BB").unwrap();
        src.publish(
            scanner
                .scan(&root, Generation(2), &Limits::default())
                .unwrap(),
        );
        let rep = sync_once(&src, &mut store).await;
        assert_eq!(
            (rep.generation, rep.fetched_files, rep.fetched_bytes),
            (Generation(2), 1, 2)
        );
        assert_eq!(fs::read(store.current_path().join("b")).unwrap(), b"BB");
        assert!(sync_once(&src, &mut store).await.up_to_date);
    }

    #[tokio::test]
    async fn the_primary_refuses_paths_outside_its_manifest() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("ok"), b"ok").unwrap();
        fs::write(t.path().join("secret"), b"secret").unwrap();
        let src = PrimarySource::new(&root).unwrap();
        src.publish(
            Scanner::new()
                .scan(&root, Generation(1), &Limits::default())
                .unwrap(),
        );
        // The scanned file is replaced by a symlink to a file outside the root.
        fs::remove_file(root.join("ok")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("ok")).unwrap();
        let err = src.open_file(&RelPath::new("ok").unwrap(), 2).unwrap_err();
        assert!(err.contains("open"), "{err}");
    }
}
