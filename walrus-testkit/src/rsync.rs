//! An rsync daemon on loopback with one writable module, `walrus`, for the Replicator's
//! rsync method.

use crate::net::{free_tcp_port, wait_port};
use crate::process::{need, ChildGuard};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// `rsync --daemon` in the foreground, killed on drop.
pub struct RsyncDaemon {
    /// `rsync://127.0.0.1:<port>/walrus`.
    pub url: String,
    _guard: ChildGuard,
}

impl RsyncDaemon {
    /// Serves `module_path` as module `walrus` (writable, as root), configuration and pid
    /// file in `dir`; returns once it listens.
    pub fn start(dir: &Path, module_path: &Path) -> Self {
        let rsync = need("rsync", "rsync");
        let port = free_tcp_port(Ipv4Addr::LOCALHOST);
        let conf = dir.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "pid file = {d}/rsyncd.pid\nuse chroot = no\nmunge symlinks = no\n[walrus]\npath = {s}\n\
                 read only = no\nuid = root\ngid = root\n",
                d = dir.display(),
                s = module_path.display()
            ),
        )
        .expect("writing rsyncd.conf");
        let guard = ChildGuard::start(
            "rsync daemon",
            Command::new(rsync)
                .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--config={}", conf.display()))
                .stdin(Stdio::null()),
        );
        wait_port(port, "rsync daemon");
        RsyncDaemon {
            url: format!("rsync://127.0.0.1:{port}/walrus"),
            _guard: guard,
        }
    }
}
