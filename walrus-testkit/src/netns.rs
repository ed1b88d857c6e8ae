//! Network namespaces for tests and the lab: created with `ip netns`, deleted (every
//! process inside killed first) on drop, named from the creating process's id so that
//! [`clean_stale`] can remove those a SIGKILLed run left behind; and processes started
//! inside one under a [`ChildGuard`]. Needs root and iproute2. Errors are values: the lab
//! (a command, not a test) reports them.

use crate::process::ChildGuard;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Errors of namespace setup and of the commands it runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr or the spawn error.
        detail: String,
    },
    /// A program the lab needs is not installed.
    #[error("{program} not found: install the Debian package `{package}`")]
    Missing {
        /// The program.
        program: String,
        /// The Debian package that ships it.
        package: String,
    },
    /// A server did not come up in time (the lab's servers).
    #[error("{what} not ready after {secs} s (log: {log})")]
    NotReady {
        /// What was awaited.
        what: String,
        /// The wait.
        secs: u64,
        /// Where its log is.
        log: String,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Runs a command to completion; its failure is an error naming the command.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            cmd: cmd.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with the Debian package name when `program` is not on the PATH (or in /usr/sbin).
pub fn require(program: &str, package: &str) -> Result<(), Error> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(program).is_file());
    if found {
        Ok(())
    } else {
        Err(Error::Missing {
            program: program.into(),
            package: package.into(),
        })
    }
}

/// One namespace on its own, with no link to anything (e.g. the lab's resolver matrix): loopback up, so the whole of 127.0.0.0/8 is local inside it, plus the
/// given addresses on `lo` for servers that listen only on interface addresses (BIND).
/// Dropping it kills every process inside and deletes it.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` (use [`run_prefix`] so [`clean_stale`] knows it).
    pub fn create(name: &str, loopback: &[Ipv4Addr]) -> Result<Self, Error> {
        require("ip", "iproute2")?;
        run("ip", &["netns", "add", name])?;
        let me = Self {
            name: name.to_owned(),
        };
        ip(name, &["link", "set", "lo", "up"])?;
        let batch: String = loopback
            .iter()
            .map(|a| format!("addr add {a}/32 dev lo\n"))
            .collect();
        if !batch.is_empty() {
            ip_batch(name, &batch)?;
        }
        Ok(me)
    }

    /// Its name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_namespace(&self.name);
    }
}

/// The start of every namespace name of this process (`wl<pid>x`): [`clean_stale`]
/// removes those whose process is gone.
pub fn run_prefix() -> String {
    format!("wl{}x", std::process::id())
}

/// Kills every process inside `name` and deletes it (best effort: used on cleanup paths).
pub fn delete_namespace(name: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
    }
    let _ = run("ip", &["netns", "del", name]);
}

/// Removes namespaces left by runs (named from [`run_prefix`]) whose process is gone (or all of them).
pub fn clean_stale(all: bool) -> Vec<String> {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("wl") else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if all || !alive(pid) {
            delete_namespace(name);
            removed.push(name.to_owned());
        }
    }
    removed
}

/// Whether process `pid` exists and is not a zombie (a SIGKILLed run stays a zombie until
/// its parent reaps it; its namespaces are stale already).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// `ip -n NS ARGS`.
pub fn ip(ns: &str, args: &[&str]) -> Result<String, Error> {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

/// `ip -n NS -batch FILE` with `batch` as the file.
pub fn ip_batch(ns: &str, batch: &str) -> Result<(), Error> {
    let path = std::env::temp_dir().join(format!("walrus-lab-{}-{ns}.batch", std::process::id()));
    std::fs::write(&path, batch).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let p = path.display().to_string();
    let r = run("ip", &["-n", ns, "-batch", &p]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

/// Starts `program args` inside namespace `ns` (`ip netns exec`), stdin closed, stdout
/// and stderr to `log`, under a guard named `what`.
pub fn spawn_in(
    ns: &str,
    what: &str,
    program: &str,
    args: &[&str],
    log: &Path,
) -> Result<ChildGuard, Error> {
    let io = |source| Error::Io {
        path: log.display().to_string(),
        source,
    };
    let out = std::fs::File::create(log).map_err(io)?;
    let err = out.try_clone().map_err(io)?;
    ChildGuard::spawn(
        what,
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    )
    .map_err(|e| Error::Command {
        cmd: format!("ip netns exec {ns} {program}"),
        detail: e.to_string(),
    })
}
