//! Temporary directories: `tempfile`'s, named after the test, removed on drop unless
//! `WALRUS_KEEP_TMP` is set (then their path is printed, to read the logs left inside).

use std::path::{Path, PathBuf};

/// A temporary directory `walrus-<tag>-XXXXXX` under the system's temp dir, removed on drop.
pub struct TempDir {
    inner: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TempDir {
    /// Creates it; `tag` names it after the test (e.g. `"e2e-bind"`).
    pub fn new(tag: &str) -> Self {
        let inner = tempfile::Builder::new()
            .prefix(&format!("walrus-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temp dir for {tag}: {e}"));
        let path = inner.path().to_owned();
        TempDir {
            inner: Some(inner),
            path,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path().join(p)`.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("WALRUS_KEEP_TMP").is_some() {
            if let Some(d) = self.inner.take() {
                eprintln!("WALRUS_KEEP_TMP: kept {}", d.keep().display());
            }
        }
    }
}
