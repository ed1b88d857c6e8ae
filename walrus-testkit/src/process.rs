//! Child processes that cannot outlive their test: [`ChildGuard`] SIGKILLs and reaps its
//! process (or its whole process group) on drop, so a failing assertion leaves nothing
//! running; and [`need`], which finds a Debian tool or says which package to install.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The path of `binary` in the usual system directories, or a panic naming the Debian
/// `package` that provides it.
pub fn need(binary: &str, package: &str) -> PathBuf {
    find(binary)
        .unwrap_or_else(|| panic!("`{binary}` is missing: install the Debian package `{package}`"))
}

/// The path of `binary` in /usr/sbin, /usr/bin, /sbin, /bin or /usr/local, if there.
pub fn find(binary: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(binary))
    .find(|p| p.exists())
}

/// A child process SIGKILLed and reaped on drop (or at [`ChildGuard::kill`]).
pub struct ChildGuard {
    what: String,
    child: Option<Child>,
    /// Started as the leader of its own process group: the kill reaches its workers too.
    group: bool,
}

impl ChildGuard {
    /// Guards a child that is already running.
    pub fn new(what: impl Into<String>, child: Child) -> Self {
        ChildGuard {
            what: what.into(),
            child: Some(child),
            group: false,
        }
    }

    /// Starts `cmd`; the error names `what`.
    pub fn spawn(what: impl Into<String>, cmd: &mut Command) -> std::io::Result<Self> {
        let what = what.into();
        let child = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting {what}: {e}")))?;
        Ok(Self::new(what, child))
    }

    /// Starts `cmd`, or panics naming `what` (for tests).
    pub fn start(what: impl Into<String>, cmd: &mut Command) -> Self {
        Self::spawn(what, cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `cmd` as the leader of a new process group (a server with worker
    /// processes): the kill goes to the whole group. Panics naming `what` on failure.
    pub fn start_group(what: impl Into<String>, cmd: &mut Command) -> Self {
        let mut g = Self::start(what, cmd.process_group(0));
        g.group = true;
        g
    }

    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn start_logged(what: impl Into<String>, cmd: &mut Command, log: &Path) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        Self::start(what, cmd.stdin(Stdio::null()).stdout(out).stderr(err))
    }

    /// What it is, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// SIGKILL (the group too, if it leads one) and reap; idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.group {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its process id, while it has not been killed.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How it exited, if it has (`None` while it runs or after [`kill`](Self::kill)).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` (e.g. `"TERM"`, `"HUP"`) with kill(1); false if it could not.
    pub fn signal(&self, signal: &str) -> bool {
        self.id().is_some_and(|pid| {
            Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// The child itself (to take its pipes or wait for it), while not killed.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
