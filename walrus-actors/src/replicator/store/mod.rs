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
//!
//! Where each part lives: this file is the store ([`ReplicaStore`]: open, generations,
//! spare, prune, and starting a build); `build.rs` the build ([`Build`]: layout from
//! scratch or by recycling, links and local copies, salvage, commit); `writer.rs` the
//! writers ([`FileWriter`], and the helper thread of [`OpenAhead`]).

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

mod build;
mod writer;

pub use build::{Build, Pending};
pub use writer::{FileWriter, OpenAhead};

use build::{layout_fresh, layout_recycled, link_and_copy};
use writer::set_meta;

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
mod tests;
