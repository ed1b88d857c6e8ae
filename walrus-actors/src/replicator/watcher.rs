//! The primary's watcher: turns changes of the content root into new generations.
//!
//! inotify events (through the `notify` crate) only mark the tree dirty; the [`Debouncer`]
//! waits for a quiet period (or a maximum delay under constant change) and then one rescan
//! decides whether the tree really changed. A periodic rescan is the safety net for lost
//! events (inotify queue overflow, changes made before the watch was set up). Each changed
//! scan becomes generation `latest + 1`, saved in the state directory (so numbering
//! continues after a restart) and published to the [`PrimarySource`].

use super::manifest::{Limits, Manifest, ManifestError, Scanner};
use super::path::RelPath;
use super::protocol::{load_manifest, save_manifest, FrameError};
use super::transfer::PrimarySource;
use crate::model::Generation;
use notify::Watcher as _;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Collapses bursts of change events into one rescan (sans-IO: time is passed in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debouncer {
    quiet: Duration,
    max_delay: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    /// Rescan once no change came for `quiet`, but at most `max_delay` after the first.
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Self {
            quiet,
            max_delay,
            first: None,
            last: None,
        }
    }

    /// A change was seen at `now`.
    pub fn on_change(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the next rescan is due, if a change is pending.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.first, self.last) {
            (Some(f), Some(l)) => Some((l + self.quiet).min(f + self.max_delay)),
            _ => None,
        }
    }

    /// Whether a rescan is due at `now`; if so the pending change is consumed.
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.deadline().is_some_and(|d| now >= d) {
            self.first = None;
            self.last = None;
            return true;
        }
        false
    }
}

/// Settings of the primary's watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// Quiet period that ends a change set. Default 50 ms: change-to-visible on a replica
    /// is about this plus a targeted rescan and one pull (tens of milliseconds for a small
    /// change, whatever the size of the tree); a writer that pauses longer than this in
    /// the middle of a deployment gets an intermediate generation.
    pub quiet: Duration,
    /// Longest a change waits under constant change. Default 1 s.
    pub max_delay: Duration,
    /// Safety-net rescan period. Default 60 s.
    pub rescan_every: Duration,
    /// Bounds on the tree. Default [`Limits::default`].
    pub limits: Limits,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            rescan_every: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }
}

/// Why the watcher stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// inotify could not be set up.
    #[error("watch {root}: {source}")]
    Notify {
        /// The content root.
        root: PathBuf,
        /// The error.
        source: notify::Error,
    },
    /// A scan failed.
    #[error("scan: {0}")]
    Scan(#[from] ManifestError),
    /// The state directory could not be written or read.
    #[error("state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The error.
        source: FrameError,
    },
}

/// The primary's scanning state: the scanner with its hash cache and the state directory.
#[derive(Debug)]
pub struct PrimaryScanner {
    root: PathBuf,
    state: PathBuf,
    scanner: Scanner,
    latest: Option<Manifest>,
    limits: Limits,
}

impl PrimaryScanner {
    /// Loads the last generation from `state_dir` (created if missing; keep it outside the
    /// content root).
    pub fn open(root: &Path, state_dir: &Path, limits: Limits) -> Result<Self, WatchError> {
        let state = state_dir.join("latest.manifest");
        std::fs::create_dir_all(state_dir).map_err(|e| WatchError::State {
            path: state_dir.to_path_buf(),
            source: e.into(),
        })?;
        let latest = if state.exists() {
            let m =
                load_manifest(&state, limits.max_entries).map_err(|source| WatchError::State {
                    path: state.clone(),
                    source,
                })?;
            m.check(&limits)?;
            Some(m)
        } else {
            None
        };
        Ok(Self {
            root: root.to_path_buf(),
            state,
            scanner: Scanner::new(),
            latest,
            limits,
        })
    }

    /// The newest generation's manifest.
    pub fn latest(&self) -> Option<&Manifest> {
        self.latest.as_ref()
    }

    /// Rescans; returns the new manifest if the tree changed (or on the very first scan).
    pub fn rescan(&mut self) -> Result<Option<&Manifest>, WatchError> {
        self.rescan_paths(None)
    }

    /// Rescans only `dirty` (relative paths reported by inotify, with their subtrees) when
    /// possible, the whole tree otherwise (`None`, first scan, or an inconsistent result).
    pub fn rescan_paths(
        &mut self,
        dirty: Option<&BTreeSet<RelPath>>,
    ) -> Result<Option<&Manifest>, WatchError> {
        let next = Generation(self.latest.as_ref().map_or(1, |m| m.generation.0 + 1));
        let partial = match (dirty, &self.latest) {
            (Some(d), Some(prev)) => {
                self.scanner
                    .scan_dirty(&self.root, prev, d, next, &self.limits)?
            }
            _ => None,
        };
        let m = match partial {
            Some(m) => m,
            None => self.scanner.scan(&self.root, next, &self.limits)?,
        };
        if self.latest.as_ref().is_some_and(|l| l.same_tree(&m)) {
            return Ok(None);
        }
        let tmp = self.state.with_extension("tmp");
        save_manifest(&m, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &self.state).map_err(FrameError::from))
            .map_err(|source| WatchError::State {
                path: self.state.clone(),
                source,
            })?;
        self.latest = Some(m);
        Ok(self.latest.as_ref())
    }
}

/// Runs the primary's watcher until `shutdown` completes: publishes the current tree, then
/// a new generation after every debounced change set or changed periodic rescan.
pub async fn run_primary(
    mut scanner: PrimaryScanner,
    source: Arc<PrimarySource>,
    cfg: WatchConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<Vec<PathBuf>>>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // The paths of an event are rescanned; an error (such as a queue overflow) or an
        // event that asks for it means a full rescan.
        let _ = tx.send(match res {
            // Reads (the primary serving files) change nothing.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => return,
            Ok(ev) if !ev.need_rescan() && !ev.paths.is_empty() => Some(ev.paths),
            _ => None,
        });
    })
    .map_err(|source| WatchError::Notify {
        root: scanner.root.clone(),
        source,
    })?;
    watcher
        .watch(&scanner.root, notify::RecursiveMode::Recursive)
        .map_err(|source| WatchError::Notify {
            root: scanner.root.clone(),
            source,
        })?;
    // The first scan runs after the watch is set up, so no change falls between the two.
    let first = scan_blocking(scanner, None).await?;
    scanner = first.0;
    if let Some(m) = scanner.latest() {
        source.publish(m.clone());
    }
    let mut debouncer = Debouncer::new(cfg.quiet, cfg.max_delay);
    // Paths changed since the last scan; `None` means "rescan everything".
    let mut dirty: Option<BTreeSet<RelPath>> = Some(BTreeSet::new());
    let mut next_rescan = Instant::now() + cfg.rescan_every;
    tokio::pin!(shutdown);
    loop {
        let deadline = debouncer.deadline().unwrap_or(next_rescan).min(next_rescan);
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            ev = rx.recv() => {
                let Some(paths) = ev else {
                    return Ok(());
                };
                debouncer.on_change(Instant::now());
                mark_dirty(&mut dirty, &scanner.root, paths);
            }
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                let due = debouncer.poll(now);
                if due || now >= next_rescan {
                    let full = now >= next_rescan;
                    if full {
                        next_rescan = now + cfg.rescan_every;
                    }
                    let paths = if full { None } else { dirty.take() };
                    dirty = Some(BTreeSet::new());
                    let (s, changed) = scan_blocking(scanner, paths).await?;
                    scanner = s;
                    if changed {
                        if let Some(m) = scanner.latest() {
                            tracing::info!(generation = m.generation.0, entries = m.entries.len(),
                                "replicator: new generation");
                            source.publish(m.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Most dirty paths collected before falling back to a full rescan.
const MAX_DIRTY: usize = 4096;

/// Adds an event's paths (absolute) to the dirty set; anything odd means a full rescan.
fn mark_dirty(dirty: &mut Option<BTreeSet<RelPath>>, root: &Path, paths: Option<Vec<PathBuf>>) {
    let Some(set) = dirty.as_mut() else { return };
    let Some(paths) = paths else {
        *dirty = None;
        return;
    };
    for p in paths {
        match p
            .strip_prefix(root)
            .ok()
            .and_then(|r| RelPath::from_fs(r).ok())
        {
            Some(r) if set.len() < MAX_DIRTY => {
                set.insert(r);
            }
            _ => {
                // The root itself, a name we do not replicate, or too many: rescan all.
                *dirty = None;
                return;
            }
        }
    }
}

async fn scan_blocking(
    mut s: PrimaryScanner,
    dirty: Option<BTreeSet<RelPath>>,
) -> Result<(PrimaryScanner, bool), WatchError> {
    let r = tokio::task::spawn_blocking(move || {
        let changed = s.rescan_paths(dirty.as_ref()).map(|m| m.is_some());
        (s, changed)
    })
    .await;
    match r {
        Ok((s, Ok(changed))) => Ok((s, changed)),
        Ok((_, Err(e))) => Err(e),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debouncer_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::new(ms(100), ms(1000));
        assert_eq!(d.deadline(), None);
        d.on_change(t0);
        assert_eq!(d.deadline(), Some(t0 + ms(100)));
        d.on_change(t0 + ms(50));
        assert!(!d.poll(t0 + ms(100)));
        assert!(d.poll(t0 + ms(150)));
        assert_eq!(d.deadline(), None);
        // Constant change: the maximum delay wins.
        for i in 0..30 {
            d.on_change(t0 + ms(1000 + i * 50));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(2000)));
    }

    #[test]
    fn generations_continue_after_a_restart_and_only_on_change() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let state = t.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a"), b"a").unwrap();
        let mut s = PrimaryScanner::open(&root, &state, Limits::default()).unwrap();
        assert_eq!(s.rescan().unwrap().unwrap().generation, Generation(1));
        assert!(s.rescan().unwrap().is_none());
        std::fs::write(root.join("b"), b"b").unwrap();
        assert_eq!(s.rescan().unwrap().unwrap().generation, Generation(2));
        drop(s);
        let mut s = PrimaryScanner::open(&root, &state, Limits::default()).unwrap();
        assert_eq!(s.latest().unwrap().generation, Generation(2));
        assert!(s.rescan().unwrap().is_none(), "same tree: same generation");
        std::fs::write(root.join("c"), b"c").unwrap();
        assert_eq!(s.rescan().unwrap().unwrap().generation, Generation(3));
    }
}
