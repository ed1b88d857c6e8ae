//! The replica's generation store: complete generations side by side, one `current` symlink.
//!
//! ```text
//!   STORE/current -> gens/7        the web server's document root is STORE/current
//!   STORE/gens/6/ gens/7/          complete generations (unchanged files hard-linked)
//!   STORE/gens/7.manifest          the manifest of each kept generation
//!   STORE/incoming/                the generation being built (not served)
//!   STORE/incoming.target          its generation number: an interrupted build
//!   STORE/salvage/                 a crashed build's files, reused after hash checks
//!   STORE/tmp/                     files being written, renamed into incoming when whole
//!   STORE/trash-5/                 a pruned generation, being deleted in the background
//!   STORE/spare-7/                 a hard-linked copy of gens/7 for the next build to recycle
//! ```
//!
//! A build makes `incoming` either by **recycling** a tree that is no longer served (the
//! generation about to be pruned, or the spare) and changing it in place into the new
//! generation, which costs what changed; or from scratch: directories, symlinks, hard links
//! and local copies from the current generation. Then the fetched files (written beside
//! their final name, their hash checked, then renamed in; a large file's delta copies its
//! unchanged chunks from the current generation inside the kernel and checks the fetched
//! chunks, see [`FileWriter`]). Files are never written in place:
//! an inode shared by hard links with the served generation is replaced, never modified. [`Build::commit`] makes it durable (one `syncfs`), renames
//! it to `gens/N` and switches `current` with one `rename(2)` of a new symlink: the web
//! server sees the old tree or the new one, never a mix. A crash at any point leaves
//! `current` on the old generation; on restart the leftover `incoming` becomes `salvage`.

use super::diff::{diff, Action, Segment};
use super::manifest::{
    Chunk, ContentHash, Entry, Kind, Limits, Manifest, ManifestError, TransferCheck,
    TransferChecker,
};
use super::path::RelPath;
use super::protocol::{load_manifest, save_manifest, FrameError};
use crate::model::Generation;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How a replica store behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// How many complete generations to keep, the current one included (at least 1).
    /// Default 2.
    pub keep: usize,
    /// Whether to make a generation durable (`syncfs`) before switching to it. Default true.
    pub durable: bool,
    /// Bounds on manifests. Default [`Limits::default`].
    pub limits: Limits,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            keep: 2,
            durable: true,
            limits: Limits::default(),
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A saved manifest could not be read.
    #[error("manifest file {path}: {source}")]
    ManifestFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: FrameError,
    },
    /// A manifest was refused.
    #[error("manifest refused: {0}")]
    Manifest(#[from] ManifestError),
    /// The new generation is not newer than the current one.
    #[error("generation {offered:?} is not newer than current {current:?}")]
    NotNewer {
        /// The generation offered.
        offered: Generation,
        /// The one served now.
        current: Generation,
    },
    /// Received content does not match the manifest (it changed on the primary, or the
    /// primary sent the wrong bytes). The build stays resumable.
    #[error("{path}: received {got_bytes} bytes with check {got:?}, manifest says {want_bytes} bytes {want:?}")]
    ContentMismatch {
        /// The file.
        path: RelPath,
        /// Bytes received.
        got_bytes: u64,
        /// Bytes expected.
        want_bytes: u64,
        /// Transfer check of the bytes received.
        got: TransferCheck,
        /// Transfer check the manifest gives.
        want: TransferCheck,
    },
    /// A delta's bytes do not match the manifest's chunks (a chunk's hash differs, or the
    /// bytes do not line up with the chunks). The build stays resumable.
    #[error("{path}: delta at byte {at}: {reason}")]
    DeltaMismatch {
        /// The file.
        path: RelPath,
        /// Bytes of the new file written when the mismatch showed.
        at: u64,
        /// What did not match.
        reason: String,
    },
    /// An action refers to an entry that is not a file.
    #[error("{0} is not a file in the manifest")]
    NotAFile(RelPath),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// A replica's content store (see the module doc for the layout).
#[derive(Debug)]
pub struct ReplicaStore {
    dir: PathBuf,
    cfg: StoreConfig,
    current: Manifest,
    /// The manifest of the generation served before `current` (kept in memory after a
    /// switch so that recycling it does not have to read it back from disk).
    previous: Option<Manifest>,
}

impl ReplicaStore {
    /// Opens (or creates) the store at `dir`, removing leftovers of a crash other than an
    /// interrupted build, which is kept for salvage.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Self, StoreError> {
        let gens = dir.join("gens");
        fs::create_dir_all(&gens).map_err(io_err("create", &gens))?;
        let current = match fs::read_link(dir.join("current")) {
            Ok(t) => t
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u64>().ok())
                .map(Generation),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("readlink", dir)(e)),
        };
        let manifest = match current {
            Some(g) => {
                let p = gens.join(format!("{}.manifest", g.0));
                let m = load_manifest(&p, cfg.limits.max_entries).map_err(|source| {
                    StoreError::ManifestFile {
                        path: p.clone(),
                        source,
                    }
                })?;
                m.check(&cfg.limits)?;
                m
            }
            None => Manifest::empty(Generation(0)),
        };
        let store = Self {
            dir: dir.to_path_buf(),
            cfg,
            current: manifest,
            previous: None,
        };
        for de in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let de = de.map_err(io_err("list", dir))?;
            let name = de.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("trash-") {
                remove_in_background(de.path());
            } else if name == "spare.tmp"
                || name
                    .strip_prefix("spare-")
                    .is_some_and(|g| current.is_none_or(|c| g != c.0.to_string()))
            {
                // An unfinished spare, or the spare of another generation.
                remove_any(&de.path())?;
            }
        }
        // Generations newer than current were renamed but never switched to: drop them.
        for (g, path) in store.list_generations()? {
            if current.is_none_or(|c| g > c) {
                remove_any(&path)?;
                remove_any(&path.with_extension("manifest"))?;
            }
        }
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory a web server serves (`STORE/current`).
    pub fn current_path(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// The generation served now (`Generation(0)`: nothing yet).
    pub fn current_generation(&self) -> Generation {
        self.current.generation
    }

    /// The manifest of the generation served now.
    pub fn current_manifest(&self) -> &Manifest {
        &self.current
    }

    /// The generation an interrupted build was heading for, if one was left behind.
    pub fn interrupted(&self) -> Option<Generation> {
        fs::read_to_string(self.dir.join("incoming.target"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Generation)
    }

    /// Complete generation directories on disk, oldest first.
    pub fn list_generations(&self) -> Result<Vec<(Generation, PathBuf)>, StoreError> {
        let gens = self.dir.join("gens");
        let mut out = Vec::new();
        for de in fs::read_dir(&gens).map_err(io_err("list", &gens))? {
            let de = de.map_err(io_err("list", &gens))?;
            if let Some(g) = de.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                out.push((Generation(g), de.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Starts building `new` beside the current generation: checks the manifest, lays out
    /// everything that needs no transfer, and returns the files still to fetch.
    ///
    /// When an old generation is due for pruning anyway (`keep` ≥ 2 complete generations on
    /// disk besides the one being built), it is **recycled**: renamed to `incoming` and
    /// changed in place into `new` (entries it lacks are added, entries `new` lacks removed,
    /// changed files replaced by rename), so the work follows the change, not the tree. It
    /// is no longer served (`current` left it at the previous switch) and its inodes are
    /// never written in place (shared ones are replaced, never modified), so the served
    /// generation is untouched. Otherwise the tree is built from scratch.
    pub fn begin(&mut self, new: Manifest) -> Result<Build<'_>, StoreError> {
        new.check(&self.cfg.limits)?;
        if new.generation <= self.current.generation {
            return Err(StoreError::NotNewer {
                offered: new.generation,
                current: self.current.generation,
            });
        }
        let incoming = self.dir.join("incoming");
        let salvage = self.dir.join("salvage");
        let tmp = self.dir.join("tmp");
        if incoming.exists() {
            remove_any(&salvage)?;
            fs::rename(&incoming, &salvage).map_err(io_err("rename", &incoming))?;
        }
        remove_any(&tmp)?;
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let recycled = match self.recycle_candidate()? {
            Some((path, old, spare)) => {
                fs::rename(&path, &incoming).map_err(io_err("rename", &path))?;
                if !spare {
                    remove_any(&path.with_extension("manifest"))?;
                }
                Some(old)
            }
            None => {
                fs::create_dir(&incoming).map_err(io_err("create", &incoming))?;
                None
            }
        };
        let target = self.dir.join("incoming.target");
        fs::write(&target, new.generation.0.to_string()).map_err(io_err("write", &target))?;

        let base = self
            .dir
            .join("gens")
            .join(self.current.generation.0.to_string());
        let plan = diff(&self.current, &new);
        let (pending, local, dirs_to_fix) = match &recycled {
            Some(old) => layout_recycled(old, &new, plan.actions, &incoming, &salvage)?,
            None => {
                let (pending, local) = layout_fresh(&new, plan.actions, &incoming, &salvage)?;
                (pending, local, None)
            }
        };
        link_and_copy(
            &new.entries,
            &local,
            &base,
            &incoming,
            &tmp,
            recycled.is_some(),
        )?;
        Ok(Build {
            store: self,
            manifest: new,
            pending,
            incoming,
            tmp,
            base,
            dirs_to_fix,
            recycled: recycled.is_some(),
        })
    }

    /// The tree to recycle into the next build, with its manifest and whether it is a
    /// spare: the oldest complete generation when it would be pruned after the build
    /// anyway (`keep` ≥ 2 and `keep` complete generations on disk), never the current one;
    /// else the spare copy of the current generation ([`Self::prepare_spare`]), if any.
    fn recycle_candidate(&mut self) -> Result<Option<(PathBuf, Manifest, bool)>, StoreError> {
        let keep = self.cfg.keep.max(1);
        let gens = self.list_generations()?;
        let Some((g, path)) = gens.first().cloned() else {
            return Ok(None);
        };
        if keep < 2 {
            return Ok(None);
        }
        if gens.len() < keep || g == self.current.generation {
            // Nothing due for pruning: a spare copy of the current generation, if any.
            let spare = self.spare_path(self.current.generation);
            if spare.is_dir() {
                return Ok(Some((spare, self.current.clone(), true)));
            }
            return Ok(None);
        }
        let cached = self.previous.take().filter(|m| m.generation == g);
        let m = match cached {
            Some(m) => m,
            None => {
                let p = path.with_extension("manifest");
                match load_manifest(&p, self.cfg.limits.max_entries) {
                    Ok(m) if m.generation == g && m.check(&self.cfg.limits).is_ok() => m,
                    // Unreadable: build from scratch; prune removes it later.
                    _ => return Ok(None),
                }
            }
        };
        Ok(Some((path, m, false)))
    }

    fn spare_path(&self, g: Generation) -> PathBuf {
        self.dir.join(format!("spare-{}", g.0))
    }

    /// Prepares a **spare**, a hard-linked copy of the current generation, when the next
    /// build would otherwise have no old generation to recycle (right after the first
    /// one), so that it too costs what changed rather than the whole tree. Removes spares
    /// that are no longer of use. Called after a switch, off the change-to-visible path;
    /// returns whether a spare was made.
    pub fn prepare_spare(&self) -> Result<bool, StoreError> {
        let cur = self.current.generation;
        let keep = self.cfg.keep.max(1);
        let want = keep >= 2 && cur.0 > 0 && self.list_generations()?.len() < keep;
        let mut have = false;
        for de in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let de = de.map_err(io_err("list", &self.dir))?;
            let name = de.file_name();
            let Some(g) = name.to_str().and_then(|n| n.strip_prefix("spare-")) else {
                continue;
            };
            if want && g == cur.0.to_string() {
                have = true;
            } else {
                remove_any(&de.path())?;
            }
        }
        if !want || have {
            return Ok(false);
        }
        let tmp = self.dir.join("spare.tmp");
        remove_any(&tmp)?;
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        let base = self.dir.join("gens").join(cur.0.to_string());
        let mut local = Vec::new();
        for (i, e) in self.current.entries.iter().enumerate() {
            let dst = e.path.under(&tmp);
            match &e.kind {
                Kind::Dir => fs::create_dir(&dst).map_err(io_err("mkdir", &dst))?,
                Kind::Symlink { target } => {
                    symlink(target, &dst).map_err(io_err("symlink", &dst))?;
                }
                Kind::File { .. } => local.push((i, e.path.clone(), true)),
            }
        }
        link_and_copy(&self.current.entries, &local, &base, &tmp, &tmp, false)?;
        for e in self.current.entries.iter().rev() {
            if matches!(e.kind, Kind::Dir) {
                let p = e.path.under(&tmp);
                let d = fs::File::open(&p).map_err(io_err("open", &p))?;
                set_meta(&d, e, &p)?;
            }
        }
        let to = self.spare_path(cur);
        fs::rename(&tmp, &to).map_err(io_err("rename", &tmp))?;
        Ok(true)
    }

    /// Removes complete generations beyond `keep` (oldest first), never the current one.
    /// Each is renamed to `STORE/trash-N` at once (so it is gone from `gens/`) and deleted
    /// by a background thread: deleting a large tree takes seconds and must not delay the
    /// next generation. Returns how many were removed.
    pub fn prune(&self) -> Result<usize, StoreError> {
        let gens = self.list_generations()?;
        let keep = self.cfg.keep.max(1);
        let mut removed = 0;
        if gens.len() > keep {
            for (g, path) in &gens[..gens.len() - keep] {
                if *g == self.current.generation {
                    continue;
                }
                remove_any(&path.with_extension("manifest"))?;
                let to = self.dir.join(format!("trash-{}", g.0));
                remove_any(&to)?;
                fs::rename(path, &to).map_err(io_err("rename", path))?;
                remove_in_background(to);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Adopts a tree that another method (rsync) wrote into `STORE/incoming`: scans it
    /// into the manifest of `generation`, removes what the scan refuses (escaping symlinks,
    /// special files, names that are not UTF-8) and switches to it like a normal build.
    pub fn commit_external(&mut self, generation: Generation) -> Result<(), StoreError> {
        let incoming = self.dir.join("incoming");
        let mut scanner = super::manifest::Scanner::new();
        let m = scanner.scan(&incoming, generation, &self.cfg.limits)?;
        // What the scan refuses (escaping symlinks, special files) must not be served.
        for skipped in &scanner.skipped {
            remove_any(&skipped.path)?;
        }
        if generation <= self.current.generation {
            return Err(StoreError::NotNewer {
                offered: generation,
                current: self.current.generation,
            });
        }
        let tmp = self.dir.join("tmp");
        let base = self
            .dir
            .join("gens")
            .join(self.current.generation.0.to_string());
        Build {
            store: self,
            manifest: m,
            pending: Vec::new(),
            incoming,
            tmp,
            base,
            dirs_to_fix: None,
            recycled: false,
        }
        .commit()
    }
}

/// A file laid out from the current generation: index in the new manifest, path in the
/// current generation, hard link (`true`) or local copy with new metadata (`false`).
type Local = (usize, RelPath, bool);

/// A laid-out build: files to fetch, files to link or copy, and the indexes of the
/// directories whose mode and mtime to set at commit (`None`: all).
type Layout = (Vec<Pending>, Vec<Local>, Option<Vec<usize>>);

/// Lays out a generation from scratch in the empty `incoming`: directories and symlinks
/// now, in order (a parent before its children); returns the files to fetch and the files
/// to link or copy from the current generation.
fn layout_fresh(
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
fn layout_recycled(
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
fn link_and_copy(
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
    store: &'a mut ReplicaStore,
    manifest: Manifest,
    pending: Vec<Pending>,
    incoming: PathBuf,
    tmp: PathBuf,
    base: PathBuf,
    /// Indexes of the directories whose mode and mtime to set at commit; `None`: all.
    dirs_to_fix: Option<Vec<usize>>,
    /// Whether an old generation was recycled into this one.
    recycled: bool,
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

/// A file created for a pending entry: the name it is written under, and the open file.
type Created = (PathBuf, fs::File);

/// Files of a build created ahead on a helper thread ([`Build::open_ahead`]). Dropping it
/// stops the helper (within one file) and removes the files it made that were not taken.
#[derive(Debug)]
pub struct OpenAhead {
    rx: Option<std::sync::mpsc::Receiver<(usize, Option<Created>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl OpenAhead {
    /// No helper: every file is created by [`Build::writer_ahead`] itself.
    fn none() -> Self {
        Self {
            rx: None,
            thread: None,
            stop: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The file created for entry `index`, if the helper made it (`None`: create it here).
    fn take(&mut self, index: usize) -> Option<Created> {
        match self.rx.as_ref()?.recv() {
            Ok((i, created)) if i == index => created,
            Ok((_, created)) => {
                // Out of step (never expected): stop the helper, undo what it made, and
                // create the rest inline.
                Self::remove(created);
                self.stop();
                None
            }
            Err(_) => {
                self.stop();
                None
            }
        }
    }

    /// Stops the helper and removes every file it created that was not taken.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(rx) = self.rx.take() {
            // Ends when the helper returns (it checks `stop` before each file).
            for (_, created) in rx {
                Self::remove(created);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn remove(created: Option<Created>) {
        if let Some((path, file)) = created {
            drop(file);
            let _ = fs::remove_file(path);
        }
    }
}

impl Drop for OpenAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives one file's bytes, checks them and puts the file in place.
///
/// A whole file is checked against the manifest's [`TransferCheck`] (XXH3-128, from the same
/// read on the primary as the content hash). A **delta** (a large file
/// rebuilt from its copy in a kept generation plus the ranges fetched from the primary) is
/// checked chunk by chunk instead, which costs only what changed:
/// - every fetched byte is hashed into the manifest chunk it belongs to, and each chunk's
///   hash must match the new manifest's;
/// - the local segments are copied inside the kernel (`copy_file_range(2)`; read/write where
///   the file system cannot) and not re-hashed. Each is made of whole chunks of the new
///   manifest whose hashes equal chunks of the old manifest at that place of the base file
///   ([`diff`] matched them), and the base file belongs to a generation of this store,
///   whose files were checked when it was built and are never written in place;
/// - the chunks cover the file exactly ([`Manifest::check`]), so a delta that passes holds
///   the content the primary chunked. The whole-content hash is not recomputed (the primary
///   computed it from the same read as the chunks).
///
/// What this trusts that the whole-file check did not: that nobody modified a kept
/// generation's file behind the store's back (the web server only reads them).
#[derive(Debug)]
pub struct FileWriter {
    /// Unbuffered: data arrives in frames of up to 1 MiB (a buffer per file costs more
    /// than it saves over 20,000 small files).
    file: fs::File,
    /// Where the bytes go: `dst` itself in a tree built from scratch, else a name beside it.
    tmp: PathBuf,
    dst: PathBuf,
    /// The transfer check of a file fetched whole (unused for a delta).
    checker: TransferChecker,
    /// Bytes of the new file written so far (fetched and copied).
    written: u64,
    want: TransferCheck,
    entry: Entry,
    /// For a delta: the base file in a kept generation.
    base: Option<fs::File>,
    /// Delta segments still to write, last first.
    segments: Vec<Segment>,
    /// Bytes still expected for the current remote segment.
    remote_left: u64,
    /// For a delta: the new file's chunks (empty for a file fetched whole).
    chunks: Vec<Chunk>,
    /// Index in `chunks` of the chunk the next byte belongs to.
    next_chunk: usize,
    /// Hash of the fetched bytes of chunk `next_chunk` so far.
    chunk_hasher: blake3::Hasher,
    /// How many bytes of chunk `next_chunk` went into `chunk_hasher`.
    chunk_fill: u64,
}

impl FileWriter {
    /// Feeds bytes from the primary (the whole file, or the delta's remote ranges in order).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        if self.base.is_none() {
            self.checker.update(data);
            return self.put(data);
        }
        while !data.is_empty() {
            if self.remote_left == 0 {
                self.copy_local()?;
                match self.segments.pop() {
                    Some(Segment::Remote { offset, len }) if offset == self.written => {
                        self.remote_left = len
                    }
                    Some(Segment::Remote { offset, .. }) => {
                        return Err(self.fail(format!("remote segment at {offset} is misplaced")))
                    }
                    _ => return Err(self.fail("more bytes than the delta announced".into())),
                }
            }
            let n = (self.remote_left.min(data.len() as u64)) as usize;
            self.put_remote(&data[..n])?;
            self.remote_left -= n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes fetched bytes of a delta, checking each chunk they complete.
    fn put_remote(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let mut rest = data;
        while !rest.is_empty() {
            let Some(c) = self.chunks.get(self.next_chunk).copied() else {
                return Err(self.fail("bytes beyond the last chunk".into()));
            };
            let len = u64::from(c.len);
            let n = (len - self.chunk_fill).min(rest.len() as u64) as usize;
            self.chunk_hasher.update(&rest[..n]);
            self.chunk_fill += n as u64;
            rest = &rest[n..];
            if self.chunk_fill == len {
                let got = ContentHash(*self.chunk_hasher.finalize().as_bytes());
                if got != c.hash {
                    return Err(self.fail(format!(
                        "chunk at {} of {len} bytes has hash {got:?}, manifest says {:?}",
                        c.offset, c.hash
                    )));
                }
                self.chunk_hasher.reset();
                self.chunk_fill = 0;
                self.next_chunk += 1;
            }
        }
        self.put(data)
    }

    /// Copies the local segments that come next from the base file.
    fn copy_local(&mut self) -> Result<(), StoreError> {
        while let Some(Segment::Local { offset, len }) = self.segments.last().copied() {
            self.segments.pop();
            // The segment must be whole chunks of the new file, starting here.
            let end = self.written + len;
            let mut at = self.written;
            while at < end && self.chunk_fill == 0 {
                match self.chunks.get(self.next_chunk) {
                    Some(c) if c.offset == at => {
                        at += u64::from(c.len);
                        self.next_chunk += 1;
                    }
                    _ => break,
                }
            }
            if at != end {
                return Err(self.fail(format!(
                    "local segment of {len} bytes at {} does not cover whole chunks",
                    self.written
                )));
            }
            let Some(base) = self.base.as_ref() else {
                return Ok(());
            };
            copy_range(base, offset, len, &self.file).map_err(io_err("copy base", &self.tmp))?;
            self.written = end;
        }
        Ok(())
    }

    fn put(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.written += data.len() as u64;
        self.file
            .write_all(data)
            .map_err(io_err("write", &self.tmp))
    }

    /// A delta that does not line up with the manifest: the temporary file goes.
    fn fail(&self, reason: String) -> StoreError {
        let _ = fs::remove_file(&self.tmp);
        StoreError::DeltaMismatch {
            path: self.entry.path.clone(),
            at: self.written,
            reason,
        }
    }

    /// Checks size and transfer check (chunk hashes for a delta), sets mode and mtime, renames into the
    /// generation.
    pub fn finish(mut self) -> Result<(), StoreError> {
        if self.base.is_some() {
            self.copy_local()?;
            if !self.segments.is_empty()
                || self.remote_left != 0
                || self.chunk_fill != 0
                || self.next_chunk != self.chunks.len()
                || self.written != self.entry.size
            {
                return Err(self.fail(format!(
                    "delta ends after {} of {} bytes",
                    self.written, self.entry.size
                )));
            }
        } else {
            let got = self.checker.finish();
            if got != self.want || self.written != self.entry.size {
                let _ = fs::remove_file(&self.tmp);
                return Err(StoreError::ContentMismatch {
                    path: self.entry.path.clone(),
                    got_bytes: self.written,
                    want_bytes: self.entry.size,
                    got,
                    want: self.want,
                });
            }
        }
        set_meta(&self.file, &self.entry, &self.tmp)?;
        drop(self.file);
        if self.tmp == self.dst {
            return Ok(());
        }
        fs::rename(&self.tmp, &self.dst).map_err(io_err("rename", &self.tmp))
    }
}

/// Appends `len` bytes at `offset` of `base` to `out` (at its file position): inside the
/// kernel with `copy_file_range(2)`, or by read/write where the file systems cannot.
fn copy_range(base: &fs::File, mut offset: u64, len: u64, out: &fs::File) -> io::Result<()> {
    use rustix::io::Errno;
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(base, Some(&mut offset), out, None, n) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(k) => left -= k as u64,
            Err(e)
                if e == Errno::XDEV
                    || e == Errno::NOSYS
                    || e == Errno::INVAL
                    || e == Errno::OPNOTSUPP =>
            {
                return copy_by_read(base, offset, left, out);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// [`copy_range`] through user space.
fn copy_by_read(base: &fs::File, mut offset: u64, len: u64, mut out: &fs::File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        base.read_exact_at(&mut buf[..n], offset)?;
        out.write_all(&buf[..n])?;
        offset += n as u64;
        left -= n as u64;
    }
    Ok(())
}

fn set_meta(f: &fs::File, e: &Entry, p: &Path) -> Result<(), StoreError> {
    f.set_permissions(fs::Permissions::from_mode(e.mode & 0o777))
        .map_err(io_err("chmod", p))?;
    if let Some(t) = e.mtime.to_system_time() {
        f.set_modified(t).map_err(io_err("set mtime", p))?;
    }
    Ok(())
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
    match super::manifest::hash_file(&src, e.size) {
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

fn syncfs(dir: &Path) -> Result<(), StoreError> {
    let d = fs::File::open(dir).map_err(io_err("open", dir))?;
    rustix::fs::syncfs(&d).map_err(|e| io_err("syncfs", dir)(e.into()))
}

/// Deletes a pruned generation on a background thread (leftovers of a crash are deleted
/// by the next open).
fn remove_in_background(trash: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("walrus-trash".into())
        .spawn(move || {
            if let Err(e) = remove_any(&trash) {
                tracing::warn!(error = %e, "replicator: could not empty the trash");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "replicator: could not start the trash thread");
    }
}

/// Removes a file, symlink or directory tree; a missing path is fine.
fn remove_any(p: &Path) -> Result<(), StoreError> {
    let r = match fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(io_err("remove", p))
}

#[cfg(test)]
mod tests {
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
}
