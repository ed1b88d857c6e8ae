//! Building a generation in `STORE/incoming`: laying it out (from scratch or by recycling
//! an old tree), linking and copying what the current generation has, salvaging a crashed
//! build's files, and [`Build`], which hands out the writers and commits.

use super::writer::set_meta;
use super::*;

/// A file laid out from the current generation: index in the new manifest, path in the
/// current generation, hard link (`true`) or local copy with new metadata (`false`).
type Local = (usize, RelPath, bool);

/// A laid-out build: files to fetch, files to link or copy, and the indexes of the
/// directories whose mode and mtime to set at commit (`None`: all).
type Layout = (Vec<Pending>, Vec<Local>, Option<Vec<usize>>);

/// Lays out a generation from scratch in the empty `incoming`: directories and symlinks
/// now, in order (a parent before its children); returns the files to fetch and the files
/// to link or copy from the current generation.
pub(super) fn layout_fresh(
    new: &Manifest,
    actions: Vec<Action>,
    incoming: &Path,
    salvage: &Path,
) -> Result<(Vec<Pending>, Vec<Local>), StoreError> {
    let mut pending = Vec::new();
    let mut local = Vec::new();
    for (i, (e, action)) in new.entries.iter().zip(actions).enumerate() {
        let dst = e.path.under(incoming);
        match action {
            Action::Dir => fs::create_dir(&dst).map_err(io_err("mkdir", &dst))?,
            Action::Symlink => {
                if let Kind::Symlink { target } = &e.kind {
                    symlink(target, &dst).map_err(io_err("symlink", &dst))?;
                }
            }
            Action::Link { from } => local.push((i, from, true)),
            Action::Copy { from } => local.push((i, from, false)),
            a @ (Action::Fetch | Action::Delta { .. }) => {
                if let Some(p) = fetch_or_salvage(i, e, a, &dst, salvage)? {
                    pending.push(p);
                }
            }
        }
    }
    Ok((pending, local))
}

/// A pending fetch for entry `i`, or `None` if a crashed build left the right file.
fn fetch_or_salvage(
    i: usize,
    e: &Entry,
    action: Action,
    dst: &Path,
    salvage: &Path,
) -> Result<Option<Pending>, StoreError> {
    if salvaged(salvage, e, dst)? {
        return Ok(None);
    }
    Ok(Some(Pending {
        index: i,
        delta: match action {
            Action::Delta { base, segments } => Some((base, segments)),
            _ => None,
        },
    }))
}

/// Whether two entries at the same path are the same kind of thing (directory, file,
/// symlink).
fn same_kind(a: &Kind, b: &Kind) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Whether the entry `old` of a recycled generation is already exactly `new` on disk.
fn unchanged(old: &Entry, new: &Entry) -> bool {
    match (&old.kind, &new.kind) {
        (Kind::Dir, Kind::Dir) => true,
        (Kind::Symlink { target: a }, Kind::Symlink { target: b }) => a == b,
        (Kind::File { hash: a, .. }, Kind::File { hash: b, .. }) => {
            a == b && old.size == new.size && old.mode == new.mode && old.mtime == new.mtime
        }
        _ => false,
    }
}

/// Changes the recycled generation `old` (already renamed to `incoming`) into `new`:
/// removes what `new` lacks, creates missing directories and symlinks, and returns the
/// files to fetch, the files to link or copy from the current generation, and the
/// directories whose mode and mtime must be set again at commit (new ones, changed ones,
/// and every directory whose listing changed).
pub(super) fn layout_recycled(
    old: &Manifest,
    new: &Manifest,
    actions: Vec<Action>,
    incoming: &Path,
    salvage: &Path,
) -> Result<Layout, StoreError> {
    use std::collections::HashSet;
    let mut touched: HashSet<RelPath> = HashSet::new();
    // A directory without write permission for its owner cannot be changed (by a replica
    // that is not root): open it up now, its mode is set again at commit.
    for o in &old.entries {
        if matches!(o.kind, Kind::Dir) && o.mode & 0o200 == 0 {
            let p = o.path.under(incoming);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700 | (o.mode & 0o777)))
                .map_err(io_err("chmod", &p))?;
            touched.insert(o.path.clone());
        }
    }
    // Merge the two sorted lists: remove what is gone or changed kind; note what stays.
    let mut keep = vec![false; new.entries.len()];
    let (mut i, mut j) = (0, 0);
    while i < old.entries.len() {
        let o = &old.entries[i];
        let n = new.entries.get(j);
        match n.map(|n| o.path.cmp(&n.path)) {
            Some(std::cmp::Ordering::Greater) => {
                j += 1;
                continue;
            }
            Some(std::cmp::Ordering::Equal) => {
                let n = &new.entries[j];
                if unchanged(o, n) {
                    keep[j] = true;
                    if matches!(n.kind, Kind::Dir) && (o.mode != n.mode || o.mtime != n.mtime) {
                        touched.insert(n.path.clone());
                    }
                } else if !same_kind(&o.kind, &n.kind) || matches!(o.kind, Kind::Symlink { .. }) {
                    remove_any(&o.path.under(incoming))?;
                    touched.extend(o.path.parent());
                }
                j += 1;
            }
            _ => {
                // Gone from `new` (removing a directory takes its subtree; the entries
                // under it then find nothing to remove).
                remove_any(&o.path.under(incoming))?;
                touched.extend(o.path.parent());
            }
        }
        i += 1;
    }
    let mut pending = Vec::new();
    let mut local = Vec::new();
    for (i, (e, action)) in new.entries.iter().zip(actions).enumerate() {
        if keep[i] {
            continue;
        }
        let dst = e.path.under(incoming);
        touched.extend(e.path.parent());
        match action {
            Action::Dir => {
                fs::create_dir(&dst).map_err(io_err("mkdir", &dst))?;
                touched.insert(e.path.clone());
            }
            Action::Symlink => {
                if let Kind::Symlink { target } = &e.kind {
                    symlink(target, &dst).map_err(io_err("symlink", &dst))?;
                }
            }
            Action::Link { from } => local.push((i, from, true)),
            Action::Copy { from } => local.push((i, from, false)),
            a @ (Action::Fetch | Action::Delta { .. }) => {
                if let Some(p) = fetch_or_salvage(i, e, a, &dst, salvage)? {
                    pending.push(p);
                }
            }
        }
    }
    let dirs = new
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, Kind::Dir) && touched.contains(&e.path))
        .map(|(i, _)| i)
        .collect();
    Ok((pending, local, Some(dirs)))
}

/// Hard-links or copies the `local` files from the current generation (`base`) into
/// `incoming`, spread over threads (one link per unchanged file is most of a fresh build's
/// cost). With `replace`, a file already at the destination (a recycled generation's old
/// version) is replaced.
pub(super) fn link_and_copy(
    entries: &[Entry],
    local: &[Local],
    base: &Path,
    incoming: &Path,
    tmp: &Path,
    replace: bool,
) -> Result<(), StoreError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let per = local.len().div_ceil(threads).max(1024);
    std::thread::scope(|scope| {
        let workers: Vec<_> = local
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    for (i, from, link) in part {
                        let e = &entries[*i];
                        let src = from.under(base);
                        let dst = e.path.under(incoming);
                        if *link {
                            match fs::hard_link(&src, &dst) {
                                Err(err)
                                    if replace && err.kind() == io::ErrorKind::AlreadyExists =>
                                {
                                    fs::remove_file(&dst).map_err(io_err("remove", &dst))?;
                                    fs::hard_link(&src, &dst).map_err(io_err("link", &src))?;
                                }
                                r => r.map_err(io_err("link", &src))?,
                            }
                        } else {
                            let t = tmp.join(i.to_string());
                            fs::copy(&src, &t).map_err(io_err("copy", &src))?;
                            let f = fs::OpenOptions::new()
                                .write(true)
                                .open(&t)
                                .map_err(io_err("open", &t))?;
                            set_meta(&f, e, &t)?;
                            fs::rename(&t, &dst).map_err(io_err("rename", &t))?;
                        }
                    }
                    Ok::<(), StoreError>(())
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok::<(), StoreError>(())
    })
}

/// A file of a [`Build`] that must come from the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Index of the entry in the new manifest.
    pub index: usize,
    /// For a delta: the old file and the segments; `None`: fetch whole.
    pub delta: Option<(RelPath, Vec<Segment>)>,
}

impl Pending {
    /// The byte ranges of the new file to ask the primary for (empty: the whole file).
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        match &self.delta {
            None => Vec::new(),
            Some((_, segs)) => segs
                .iter()
                .filter_map(|s| match s {
                    Segment::Remote { offset, len } => Some((*offset, *len)),
                    Segment::Local { .. } => None,
                })
                .collect(),
        }
    }
}

/// A generation being built in `STORE/incoming`.
#[derive(Debug)]
pub struct Build<'a> {
    pub(super) store: &'a mut ReplicaStore,
    pub(super) manifest: Manifest,
    pub(super) pending: Vec<Pending>,
    pub(super) incoming: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) base: PathBuf,
    /// Indexes of the directories whose mode and mtime to set at commit; `None`: all.
    pub(super) dirs_to_fix: Option<Vec<usize>>,
    /// Whether an old generation was recycled into this one.
    pub(super) recycled: bool,
}

impl Build<'_> {
    /// Whether an old generation was recycled (changed in place) rather than the tree
    /// built from scratch.
    pub fn recycled(&self) -> bool {
        self.recycled
    }

    /// The manifest being built.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Files still to fetch from the primary, in manifest order.
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Opens a writer for pending file `p`; feed it the bytes the primary sends.
    pub fn writer(&self, p: &Pending) -> Result<FileWriter, StoreError> {
        self.writer_with(p, None)
    }

    /// [`Build::writer`], taking the file `ahead` created for `p` if it did.
    pub fn writer_ahead(
        &self,
        p: &Pending,
        ahead: &mut OpenAhead,
    ) -> Result<FileWriter, StoreError> {
        let created = ahead.take(p.index);
        self.writer_with(p, created)
    }

    /// Starts creating the pending files on a helper thread, at most `depth` ahead of
    /// [`Build::writer_ahead`] (which must take them in [`Build::pending`] order). Creating
    /// an inode is a third of a first sync's pulling thread (ext4 searches its bitmaps);
    /// the helper does it on the other core while this thread writes the files before.
    /// Builds of fewer than 64 files get no helper.
    pub fn open_ahead(&self, depth: usize) -> OpenAhead {
        if self.pending.len() < 64 {
            return OpenAhead::none();
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        let jobs: Vec<(usize, RelPath)> = self
            .pending
            .iter()
            .map(|p| (p.index, self.manifest.entries[p.index].path.clone()))
            .collect();
        let (incoming, tmp, recycled) = (self.incoming.clone(), self.tmp.clone(), self.recycled);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("walrus-open-ahead".into())
            .spawn(move || {
                for (index, path) in jobs {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let created = create_target(&incoming, &tmp, recycled, &path, index).ok();
                    if tx.send((index, created)).is_err() {
                        return; // the pull ended
                    }
                }
            });
        match thread {
            Ok(t) => OpenAhead {
                rx: Some(rx),
                thread: Some(t),
                stop,
            },
            Err(e) => {
                tracing::debug!(error = %e, "replicator: no open-ahead thread");
                OpenAhead::none()
            }
        }
    }

    fn writer_with(
        &self,
        p: &Pending,
        created: Option<(PathBuf, fs::File)>,
    ) -> Result<FileWriter, StoreError> {
        let entry = self.manifest.entries[p.index].clone();
        let Kind::File {
            check, ref chunks, ..
        } = entry.kind
        else {
            return Err(StoreError::NotAFile(entry.path));
        };
        // A delta is checked chunk by chunk (see [`FileWriter`]); a whole file by its transfer check.
        let chunks = if p.delta.is_some() {
            chunks.clone()
        } else {
            Vec::new()
        };
        let (tmp, file) = match created {
            Some(c) => c,
            None => create_target(
                &self.incoming,
                &self.tmp,
                self.recycled,
                &entry.path,
                p.index,
            )?,
        };
        let base = match &p.delta {
            Some((base, _)) => {
                let b = base.under(&self.base);
                Some(fs::File::open(&b).map_err(io_err("open", &b))?)
            }
            None => None,
        };
        let segments = p.delta.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        Ok(FileWriter {
            file,
            tmp,
            dst: entry.path.under(&self.incoming),
            checker: TransferChecker::new(),
            written: 0,
            want: check,
            entry,
            base,
            segments: segments.into_iter().rev().collect(),
            remote_left: 0,
            chunks,
            next_chunk: 0,
            chunk_hasher: blake3::Hasher::new(),
            chunk_fill: 0,
        })
    }

    /// Makes the generation durable, renames it into `gens/` and switches `current` to it
    /// (call [`ReplicaStore::prune`] after).
    pub fn commit(self) -> Result<(), StoreError> {
        let g = self.manifest.generation;
        let dir = self.store.dir.clone();
        // Directory modes and mtimes last (deepest first): filling a directory changes its
        // mtime, and a read-only directory could not be filled.
        let fix_dir = |e: &Entry| {
            let p = e.path.under(&self.incoming);
            let d = fs::File::open(&p).map_err(io_err("open", &p))?;
            set_meta(&d, e, &p)
        };
        match &self.dirs_to_fix {
            None => {
                for e in self.manifest.entries.iter().rev() {
                    if matches!(e.kind, Kind::Dir) {
                        fix_dir(e)?;
                    }
                }
            }
            Some(dirs) => {
                for &i in dirs.iter().rev() {
                    fix_dir(&self.manifest.entries[i])?;
                }
            }
        }
        let gens = dir.join("gens");
        let mpath = gens.join(format!("{}.manifest", g.0));
        save_manifest(&self.manifest, &mpath).map_err(|source| StoreError::ManifestFile {
            path: mpath.clone(),
            source,
        })?;
        if self.store.cfg.durable {
            syncfs(&dir)?;
        }
        let gdir = gens.join(g.0.to_string());
        remove_any(&gdir)?;
        fs::rename(&self.incoming, &gdir).map_err(io_err("rename", &self.incoming))?;
        // The switch: a new symlink renamed over `current` (atomic in POSIX).
        let next = dir.join("current.next");
        remove_any(&next)?;
        symlink(format!("gens/{}", g.0), &next).map_err(io_err("symlink", &next))?;
        fs::rename(&next, dir.join("current")).map_err(io_err("switch", &next))?;
        if self.store.cfg.durable {
            fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", &dir))?;
        }
        remove_any(&dir.join("incoming.target"))?;
        remove_any(&dir.join("salvage"))?;
        remove_any(&self.tmp)?;
        let _ = &self.base;
        let previous = std::mem::replace(&mut self.store.current, self.manifest);
        // The next build recycles the previous generation (keep = 2): keep its manifest.
        self.store.previous = (self.store.cfg.keep >= 2).then_some(previous);
        Ok(())
    }
}

/// Creates the file that receives pending entry `index` (at `path`) of a build into
/// `incoming`: the name it is written under, and the open file.
///
/// A tree built from scratch is served only after the switch, and after a crash `salvaged`
/// checks each file's size and hash before keeping it, so a fetched file is written under its
/// own name and no rename is needed. A recycled tree's names may still be hard links into the
/// served generation: there the file is written beside its name and renamed over it (never
/// written in place). The temporary file lives in its final directory, like rsync's: ext4
/// allocates a new inode near its directory, and 20,000 files created in one `tmp/`
/// directory make every allocation scan the same crowded block group. `create_new` never
/// clobbers an entry that happens to have that name; then `tmp` (`STORE/tmp/`) is used.
fn create_target(
    incoming: &Path,
    tmp: &Path,
    recycled: bool,
    path: &RelPath,
    index: usize,
) -> Result<(PathBuf, fs::File), StoreError> {
    let create = |path: &Path| {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
    };
    let dst = path.under(incoming);
    if !recycled {
        if let Ok(f) = create(&dst) {
            return Ok((dst, f));
        }
    }
    let name = path.as_str().rsplit('/').next().unwrap_or("f");
    let near = dst.with_file_name(format!(".{name}.walrus-tmp"));
    match create(&near) {
        Ok(f) => Ok((near, f)),
        Err(_) => {
            let t = tmp.join(index.to_string());
            let f = fs::File::create(&t).map_err(io_err("create", &t))?;
            Ok((t, f))
        }
    }
}
/// Reuses a file of a crashed build if it is a regular file with the right content.
fn salvaged(salvage: &Path, e: &Entry, dst: &Path) -> Result<bool, StoreError> {
    let Kind::File { hash, .. } = &e.kind else {
        return Ok(false);
    };
    let src = e.path.under(salvage);
    match fs::symlink_metadata(&src) {
        // A file shared with a complete generation (nlink > 1) must not get new metadata.
        Ok(md) if md.is_file() && md.len() == e.size && md.nlink() == 1 => {}
        _ => return Ok(false),
    }
    match crate::replicator::manifest::hash_file(&src, e.size) {
        Ok((h, _, _)) if h == *hash => {}
        _ => return Ok(false),
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .map_err(io_err("open", &src))?;
    set_meta(&f, e, &src)?;
    fs::rename(&src, dst).map_err(io_err("rename", &src))?;
    Ok(true)
}
