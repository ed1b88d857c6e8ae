//! The rsync method (the modern rdist, paper §3): the primary runs `rsync -a --delete` to
//! each replica's rsync daemon, with the same generation switch as the native method.
//!
//! How the switch works: the replica's daemon module is its store directory. The primary
//! pushes into `STORE/incoming/` with `--link-dest=../gens/<current>`, so unchanged files
//! are hard-linked from the generation being served, exactly like a native build; then the
//! replica (told "generation N is in incoming", on the `Replicators` group later) calls
//! [`ReplicaStore::commit_external`](super::store::ReplicaStore::commit_external), which
//! scans `incoming` into a manifest and switches `current` with one rename. A push cut in
//! the middle leaves `incoming` half-filled; the next push simply completes it.
//!
//! The replica's daemon module needs `read only = no` and, with `use chroot = no`,
//! `munge symlinks = no` (else every symlink arrives rewritten under `/rsyncd-munged/`).
//! `--safe-links` drops symlinks that point outside the tree and `--no-D` skips device and
//! special files, matching the native method's rules. The daemon trusts the primary (rsync
//! daemon authentication); the native method checks everything it receives.

use crate::model::Generation;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Why an rsync push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RsyncError {
    /// rsync could not be started.
    #[error("start {program}: {source} (Debian package `rsync`)")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rsync exited with an error.
    #[error("rsync to {url} exited with {status}: {stderr}")]
    Failed {
        /// The destination.
        url: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
}

/// How the primary pushes with rsync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsyncMethod {
    /// The rsync program. Default `rsync` (from `PATH`).
    pub program: PathBuf,
}

impl Default for RsyncMethod {
    fn default() -> Self {
        Self {
            program: PathBuf::from("rsync"),
        }
    }
}

impl RsyncMethod {
    /// The arguments of one push of `src` to the module at `module_url`
    /// (`rsync://host:port/module`), linking unchanged files from `current`.
    pub fn args(&self, src: &Path, module_url: &str, current: Option<Generation>) -> Vec<String> {
        let mut args = vec![
            "-a".to_owned(),
            "--delete".to_owned(),
            "--no-D".to_owned(),
            "--safe-links".to_owned(),
        ];
        if let Some(g) = current.filter(|g| g.0 > 0) {
            args.push(format!("--link-dest=../gens/{}", g.0));
        }
        let mut s = src.display().to_string();
        if !s.ends_with('/') {
            s.push('/');
        }
        args.push(s);
        args.push(format!("{}/incoming/", module_url.trim_end_matches('/')));
        args
    }

    /// Pushes `src` into the replica's `incoming` (see the module doc).
    pub async fn push(
        &self,
        src: &Path,
        module_url: &str,
        current: Option<Generation>,
    ) -> Result<(), RsyncError> {
        let out = tokio::process::Command::new(&self.program)
            .args(self.args(src, module_url, current))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| RsyncError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(RsyncError::Failed {
                url: module_url.to_owned(),
                status: out.status,
                stderr: tail,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_link_from_the_current_generation() {
        let m = RsyncMethod::default();
        assert_eq!(
            m.args(
                Path::new("/srv/site"),
                "rsync://127.0.0.1:873/walrus/",
                Some(Generation(7))
            ),
            [
                "-a",
                "--delete",
                "--no-D",
                "--safe-links",
                "--link-dest=../gens/7",
                "/srv/site/",
                "rsync://127.0.0.1:873/walrus/incoming/"
            ]
        );
        assert!(!m
            .args(Path::new("/s"), "rsync://h/m", Some(Generation(0)))
            .iter()
            .any(|a| a.starts_with("--link-dest")));
    }
}
