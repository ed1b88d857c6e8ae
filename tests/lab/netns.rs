//! The emulated Internet's wiring: network namespaces, one bridge, veth pairs, addresses;
//! and the guards that undo it (and kill every process inside) on drop, also on failure.
//!
//! Everything lives in namespaces this module creates (named `<prefix>...`); the host's
//! own network is never touched. A run killed with SIGKILL leaves its namespaces behind:
//! [`clean_stale`] (run at every start, and by `walrus-lab clean`) removes those whose
//! creating process is gone.

use super::spec::{LabSpec, ResolverKind, ROOT_ADDR};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Errors of the lab's setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
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
    /// A server did not come up in time.
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
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: cmd.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with the Debian package name when `program` is not on the PATH (or in /usr/sbin).
pub fn require(program: &str, package: &str) -> Result<(), LabError> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(program).is_file());
    if found {
        Ok(())
    } else {
        Err(LabError::Missing {
            program: program.into(),
            package: package.into(),
        })
    }
}

/// The namespaces of one run. Dropping it kills every process in them and deletes them.
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates the whole topology of `spec`: bridge namespace, root, areas, regions, with
    /// the backbone addresses and, in every region, the public (relayed) addresses and the
    /// resolvers' addresses on `lo`.
    pub fn create(spec: &LabSpec) -> Result<Self, LabError> {
        require("ip", "iproute2")?;
        let mut me = Self { names: Vec::new() };
        let net = spec.ns_net();
        me.add(&net)?;
        ip(&net, &["link", "add", "br0", "type", "bridge"])?;
        ip(&net, &["link", "set", "br0", "up"])?;
        ip(&net, &["link", "set", "lo", "up"])?;
        let mut nodes: Vec<(String, String, Ipv4Addr)> =
            vec![(spec.ns_root(), "v-root".into(), ROOT_ADDR)];
        for a in spec.all_areas() {
            nodes.push((spec.ns_area(a), format!("v-{a}"), a.backbone()));
        }
        for r in spec.all_regions() {
            nodes.push((spec.ns_region(r), format!("v-{r}"), r.backbone()));
        }
        for (ns, veth, addr) in &nodes {
            me.add(ns)?;
            ip(
                &net,
                &[
                    "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            ip(&net, &["link", "set", veth, "master", "br0", "up"])?;
            ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(ns, &["link", "set", "eth0", "up"])?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        for r in spec.all_regions() {
            let ns = spec.ns_region(r);
            let mut addrs: Vec<Ipv4Addr> = Vec::new();
            for a in spec.all_areas() {
                addrs.push(a.ns_public());
                addrs.extend(spec.cluster(a));
            }
            addrs.extend(ResolverKind::ALL.iter().map(|k| k.addr(r)));
            let batch: String = addrs
                .iter()
                .map(|a| format!("addr add {a}/32 dev lo\n"))
                .collect();
            ip_batch(&ns, &batch)?;
            // The resolvers query the root directly from their own addresses: the root
            // must route its replies back to this region.
            ip(
                &spec.ns_root(),
                &[
                    "route",
                    "add",
                    &format!("10.200.{}.0/24", r.0),
                    "via",
                    &r.backbone().to_string(),
                ],
            )?;
        }
        Ok(me)
    }

    fn add(&mut self, name: &str) -> Result<(), LabError> {
        run("ip", &["netns", "add", name])?;
        self.names.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            delete_namespace(n);
        }
    }
}

/// One namespace on its own, with no link to anything (the resolver matrix,
/// `super::resolve`): loopback up, so the whole of 127.0.0.0/8 is local inside it, plus the
/// given addresses on `lo` for servers that listen only on interface addresses (BIND).
/// Dropping it kills every process inside and deletes it.
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` (use [`run_prefix`] so [`clean_stale`] knows it).
    pub fn create(name: &str, loopback: &[Ipv4Addr]) -> Result<Self, LabError> {
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

/// Removes namespaces left by lab runs whose process is gone (or all of them).
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

fn ip(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut a = vec!["-n", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

fn ip_batch(ns: &str, batch: &str) -> Result<(), LabError> {
    let path = std::env::temp_dir().join(format!("walrus-lab-{}-{ns}.batch", std::process::id()));
    std::fs::write(&path, batch).map_err(|source| LabError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let p = path.display().to_string();
    let r = run("ip", &["-n", ns, "-batch", &p]);
    let _ = std::fs::remove_file(&path);
    r.map(|_| ())
}

/// A child process that is killed (SIGKILL) and reaped when the guard drops.
pub struct ChildGuard {
    /// What it is, for messages.
    pub what: String,
    child: Child,
}

impl ChildGuard {
    /// Starts `program args` inside namespace `ns`, stdout and stderr to `log`.
    pub fn spawn_in(
        ns: &str,
        what: &str,
        program: &str,
        args: &[&str],
        log: &Path,
    ) -> Result<Self, LabError> {
        let io = |source| LabError::Io {
            path: log.display().to_string(),
            source,
        };
        let out = std::fs::File::create(log).map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| LabError::Command {
                cmd: format!("ip netns exec {ns} {program}"),
                detail: e.to_string(),
            })?;
        Ok(Self {
            what: what.to_owned(),
            child,
        })
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
