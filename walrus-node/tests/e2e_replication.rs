//! End to end (issue 8, e2e (4); issue 7): content replication between separate
//! `walrus-node run` processes on loopback over real walrus-gcs (QUIC, mutual TLS).
//!
//! One primary (Controller + Replicator) and two replicas (Replicator + Reporter), each
//! replica's `current` served by its own real nginx, which its Reporter reads.
//! - Create, modify, delete, nested directories, rename, an empty file, a symlink inside
//!   the tree and a permission change on the primary become visible through every
//!   replica's nginx (the mode and the symlink are checked on the replicas' disks).
//! - Each replica's `/status` shows its generation (the primary's, lag 0), and the
//!   Controller's `/status` the generation each server reported.
//! - A replica SIGKILLed while changes continue keeps serving its old generation whole
//!   through nginx and catches up after its restart.
//! - SIGKILLed again in the middle of a transfer of 3,000 files (the kill lands once 20
//!   have arrived), it keeps serving its old generation and finishes the interrupted build
//!   after its restart.
//!
//! Every process is killed on drop, even on failure.
//!
//! Needs nginx (Debian package `nginx`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use walrus_gcs::transport::certs;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_ok as poll_until;

const PATIENCE: Duration = Duration::from_secs(60);

/// A `walrus-node run` process (SIGKILLed on drop), logging to `DIR/<name>.log`.
struct Node {
    name: &'static str,
    proc: ChildGuard,
    status: SocketAddr,
}

impl Node {
    fn start(
        exe: &Path,
        config: &Path,
        name: &'static str,
        dir: &Path,
        status: SocketAddr,
    ) -> Node {
        let log = dir.join(format!("{name}.log"));
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(exe)
            .args(["run", "--node", name, "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                "walrus_actors=info,walrus_node=info,walrus_gcs=warn",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Node {
            name,
            proc: ChildGuard::new(name, child),
            status,
        }
    }

    /// This node's `/status` document.
    fn status(&self) -> Result<serde_json::Value, String> {
        let r = http_get(self.status, "/status").map_err(|e| format!("{}: {e}", self.name))?;
        serde_json::from_str(&r.1).map_err(|e| format!("{}: {e}: {}", self.name, r.1))
    }

    /// The generation its Replicator serves, from `/status`.
    fn generation(&self) -> Result<u64, String> {
        let s = self.status()?;
        s["replication"]["generation"]
            .as_u64()
            .ok_or_else(|| format!("{}: no generation in {}", self.name, s["replication"]))
    }
}

/// Prints every node's log when the test fails.
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for l in &self.0 {
                let text = fs::read_to_string(l).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("==== {} (last 60 lines)", l.display());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// `path` as served by the nginx on `port`: Ok(body) on 200, Err on anything else.
fn served(port: u16, path: &str) -> Result<String, String> {
    let r = http_get(([127, 0, 0, 1], port).into(), path).map_err(|e| e.to_string())?;
    if r.0 == 200 {
        Ok(r.1)
    } else {
        Err(format!("{path}: HTTP {}", r.0))
    }
}

/// Waits until every nginx serves `path` as `want` (Some(body)) or answers 404 (None).
fn wait_served(ports: &[u16], path: &str, want: Option<&str>) {
    for &port in ports {
        poll_until(
            &format!("nginx :{port} to serve {path} as {want:?}"),
            PATIENCE,
            || {
                let r = http_get(([127, 0, 0, 1], port).into(), path).map_err(|e| e.to_string())?;
                match want {
                    Some(w) if r.0 == 200 && r.1 == w => Ok(()),
                    None if r.0 == 404 => Ok(()),
                    _ => Err(format!("HTTP {} {:?}", r.0, r.1)),
                }
            },
        );
    }
}

#[allow(clippy::too_many_lines)]
#[test]
fn content_changes_on_the_primary_reach_every_replicas_nginx_and_a_killed_replica_catches_up() {
    replicate_end_to_end("quic");
}

/// The same over `[replicator] transport = "tls-tcp"` (TLS over TCP on each node's
/// address, the same certificates).
#[test]
fn the_same_over_tls_tcp() {
    replicate_end_to_end("tls-tcp");
}

fn replicate_end_to_end(transport: &str) {
    need("nginx", "nginx");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_walrus-node"));
    let tmp = TempDir::new(&format!("e2e-repl-{transport}"));
    let dir = tmp.path();
    let site = dir.join("site");
    fs::create_dir_all(site.join("docs")).unwrap();
    fs::write(site.join("index.html"), "v1").unwrap();
    fs::write(site.join("docs/old.txt"), "old").unwrap();

    let certs_dir = dir.join("certs");
    certs::write_new_ca(&certs_dir).unwrap();
    for n in ["p", "r1", "r2"] {
        certs::write_node_cert(&certs_dir, n).unwrap();
    }
    let web = [
        free_tcp_port(std::net::Ipv4Addr::LOCALHOST),
        free_tcp_port(std::net::Ipv4Addr::LOCALHOST),
    ];
    let status: Vec<SocketAddr> = (0..3)
        .map(|_| ([127, 0, 0, 1], free_tcp_port(std::net::Ipv4Addr::LOCALHOST)).into())
        .collect();
    let config = format!(
        r#"site = "example.com"
[timing]
round_period = "500ms"
report_timeout = "250ms"
report_interval = "200ms"
[tls]
ca = "{d}/certs/ca.pem"
dir = "{d}/certs"
[reporter]
bypass_file = "{d}/bypass"
[controller]
use_cpu = false
max_generation_lag = 1
[areas.a1]
zone = "area-a1.example.com"
name_server = "127.0.0.1:{dns}"
home_cluster = "c1"
[clusters.c1.servers.s1]
addresses = ["192.0.2.1"]
status = "nginx"
status_url = "http://127.0.0.1:{w1}/nginx_status"
max_workers = 100
[clusters.c1.servers.s2]
addresses = ["192.0.2.2"]
status = "nginx"
status_url = "http://127.0.0.1:{w2}/nginx_status"
max_workers = 100
[nodes.p]
address = "127.0.0.1:{q0}"
roles = ["controller", "replicator"]
status_addr = "{s0}"
[nodes.r1]
address = "127.0.0.1:{q1}"
roles = ["replicator", "reporter"]
server = "s1"
status_addr = "{s1}"
replicator_root = "{d}/r1"
[nodes.r2]
address = "127.0.0.1:{q2}"
roles = ["replicator", "reporter"]
server = "s2"
status_addr = "{s2}"
replicator_root = "{d}/r2"
[replicator]
primary = "p"
root = "{d}/site"
keep = 2
transport = "{transport}"
"#,
        d = dir.display(),
        dns = free_udp_port(),
        w1 = web[0],
        w2 = web[1],
        // Free for UDP (QUIC) and TCP (the tls-tcp transport uses the same port number).
        q0 = free_dns_port(),
        q1 = free_dns_port(),
        q2 = free_dns_port(),
        s0 = status[0],
        s1 = status[1],
        s2 = status[2],
    );
    let config_path = dir.join("walrus.toml");
    fs::write(&config_path, config).unwrap();
    let check = Command::new(&exe)
        .args(["check-config", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check-config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The replicas' stores exist before nginx starts (their `current` appears later).
    for r in ["r1", "r2"] {
        fs::create_dir_all(dir.join(r)).unwrap();
    }
    let _nginx1 = Nginx::start(
        &dir.join("nginx1"),
        vec![Site::new(
            ([127, 0, 0, 1], web[0]).into(),
            &dir.join("r1/current"),
        )],
    );
    let _nginx2 = Nginx::start(
        &dir.join("nginx2"),
        vec![Site::new(
            ([127, 0, 0, 1], web[1]).into(),
            &dir.join("r2/current"),
        )],
    );
    let _logs = LogsOnFailure(
        ["p", "r1", "r2"]
            .iter()
            .map(|n| dir.join(format!("{n}.log")))
            .collect(),
    );
    let primary = Node::start(&exe, &config_path, "p", dir, status[0]);
    let r1 = Node::start(&exe, &config_path, "r1", dir, status[1]);
    let mut r2 = Node::start(&exe, &config_path, "r2", dir, status[2]);

    // First sync: the tree as it was, through both nginx.
    wait_served(&web, "/index.html", Some("v1"));
    wait_served(&web, "/docs/old.txt", Some("old"));
    // The transfers ran on the configured transport.
    for n in ["p", "r1", "r2"] {
        let log = fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
        assert_eq!(
            log.contains("transfers over TLS/TCP"),
            transport == "tls-tcp",
            "{n}: transport {transport}"
        );
    }

    // Create, modify, delete (and a nested directory).
    let changed = std::time::Instant::now();
    fs::write(site.join("index.html"), "v2").unwrap();
    fs::create_dir_all(site.join("new/deep")).unwrap();
    fs::write(site.join("new/deep/page.txt"), "created").unwrap();
    fs::remove_file(site.join("docs/old.txt")).unwrap();
    wait_served(&web, "/index.html", Some("v2"));
    wait_served(&web, "/new/deep/page.txt", Some("created"));
    wait_served(&web, "/docs/old.txt", None);
    // A figure, not an assertion: change on the primary to visible through both nginx
    // (debounce 100 ms included; polled every 100 ms).
    println!(
        "{{\"case\":\"e2e_change_to_visible\",\"replicas\":2,\"ms\":{}}}",
        changed.elapsed().as_millis()
    );

    // Rename, an empty file, a symlink that stays inside the tree, a permission change.
    fs::rename(site.join("new/deep/page.txt"), site.join("new/moved.txt")).unwrap();
    fs::write(site.join("empty.txt"), "").unwrap();
    std::os::unix::fs::symlink("index.html", site.join("link.html")).unwrap();
    fs::write(site.join("private.txt"), "p").unwrap();
    fs::set_permissions(site.join("private.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    wait_served(&web, "/new/moved.txt", Some("created"));
    wait_served(&web, "/new/deep/page.txt", None);
    wait_served(&web, "/empty.txt", Some(""));
    wait_served(&web, "/link.html", Some("v2"));
    for r in ["r1", "r2"] {
        let current = dir.join(r).join("current");
        poll_until(&format!("{r}: private.txt with mode 640"), PATIENCE, || {
            let mode = fs::metadata(current.join("private.txt"))
                .map_err(|e| e.to_string())?
                .permissions()
                .mode();
            if mode & 0o7777 == 0o640 {
                Ok(())
            } else {
                Err(format!("mode {mode:o}"))
            }
        });
        let link = fs::read_link(current.join("link.html")).unwrap();
        assert_eq!(
            link,
            Path::new("index.html"),
            "{r}: replicated as a symlink"
        );
    }

    // Every replica's /status shows the primary's generation, lag 0 (once the tree is quiet).
    // The tree is quiet now: the primary, both replicas' /status, the Controller's newest
    // generation and the generation each server's Reporter reported all agree (each of
    // these is refreshed on its own clock, so they are read together until they do).
    let g = poll_until(
        "the primary, the replicas and the Controller at one generation",
        PATIENCE,
        || {
            let p = primary.generation()?;
            let (a, b) = (r1.generation()?, r2.generation()?);
            let s = primary.status()?;
            let servers = s["servers"].as_array().cloned().unwrap_or_default();
            let at_p = servers
                .iter()
                .filter(|x| x["generation"].as_u64() == Some(p))
                .count();
            if a == p && b == p && p >= 3 && at_p == 2 && s["newest_generation"].as_u64() == Some(p)
            {
                Ok(p)
            } else {
                Err(format!(
                    "primary {p}, r1 {a}, r2 {b}, Controller's newest {}, servers {}",
                    s["newest_generation"], s["servers"]
                ))
            }
        },
    );
    for r in [&r1, &r2] {
        let s = r.status().unwrap();
        assert_eq!(s["replication"]["role"], "replica", "{s}");
        assert_eq!(s["replication"]["lag"], 0, "{s}");
    }
    // `walrus-node status` prints them in its table.
    let table = Command::new(&exe)
        .args(["status", "--addr"])
        .arg(status[1].to_string())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!(
            "replicator replica: generation {g} newest {g} lag 0"
        )),
        "expected generation {g}:\n{table}"
    );
    // Its Replicator is a supervised actor beside the others.
    assert!(
        table.contains("actor replicator       restarts 0"),
        "expected the replicator's actor:\n{table}"
    );

    // r2 is SIGKILLed; changes continue; r1 follows, r2's nginx keeps the old tree whole.
    r2.proc.kill();
    fs::write(site.join("index.html"), "v3").unwrap();
    fs::write(site.join("while-down.txt"), "missed").unwrap();
    wait_served(&web[..1], "/index.html", Some("v3"));
    wait_served(&web[..1], "/while-down.txt", Some("missed"));
    fs::write(site.join("index.html"), "v4").unwrap();
    wait_served(&web[..1], "/index.html", Some("v4"));
    assert_eq!(served(web[1], "/index.html").unwrap(), "v2");
    assert_eq!(served(web[1], "/new/moved.txt").unwrap(), "created");
    assert!(served(web[1], "/while-down.txt").is_err());

    // Restarted, r2 catches up with everything it missed.
    r2 = Node::start(&exe, &config_path, "r2", dir, status[2]);
    wait_served(&web[1..], "/index.html", Some("v4"));
    wait_served(&web[1..], "/while-down.txt", Some("missed"));
    poll_until("r2 at the primary's generation again", PATIENCE, || {
        let (p, b) = (primary.generation()?, r2.generation()?);
        if b == p && b > g {
            Ok(())
        } else {
            Err(format!("primary {p}, r2 {b}"))
        }
    });

    // r2 SIGKILLed in the middle of a transfer over QUIC: 3,000 new files of 16 KiB, each
    // with its own contents (identical contents would be copied locally, not transferred),
    // moved into the tree in one rename so they make one generation.
    const BULK: usize = 3000;
    let staging = dir.join("bulk-staging");
    fs::create_dir_all(&staging).unwrap();
    for i in 0..BULK {
        fs::write(staging.join(format!("f{i:04}")), unique_body(i as u64)).unwrap();
    }
    fs::rename(&staging, site.join("bulk")).unwrap();
    let incoming_bulk = dir.join("r2/incoming/bulk");
    let arrived = || fs::read_dir(&incoming_bulk).map_or(0, |d| d.count());
    let deadline = std::time::Instant::now() + PATIENCE;
    while arrived() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "r2's transfer of the bulk files never got going"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    r2.proc.kill();
    let at_kill = arrived();
    println!("{{\"case\":\"e2e_killed_mid_transfer\",\"files_arrived\":{at_kill},\"of\":{BULK}}}");
    assert!(
        at_kill < BULK,
        "the SIGKILL landed after the transfer ended ({at_kill} of {BULK} files)"
    );
    // Its nginx still serves the old generation, whole.
    assert_eq!(served(web[1], "/index.html").unwrap(), "v4");
    assert!(served(web[1], "/bulk/f0000").is_err());
    // Restarted, it finishes the interrupted build.
    r2 = Node::start(&exe, &config_path, "r2", dir, status[2]);
    let last = format!("/bulk/f{:04}", BULK - 1);
    let want = String::from_utf8(unique_body(BULK as u64 - 1)).unwrap();
    wait_served(&web, &last, Some(&want));
    wait_served(&web[1..], "/index.html", Some("v4"));

    drop(r2);
    drop(r1);
    drop(primary);
}

/// 16 KiB of printable bytes that no other `i` gives.
fn unique_body(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut body = format!("{i:08}\n").into_bytes();
    while body.len() < 16 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(b'a' + (x % 26) as u8);
    }
    body
}
