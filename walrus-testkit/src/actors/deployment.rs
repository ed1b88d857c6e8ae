//! Support for the end-to-end tests and the failover benchmark: a whole Walrus deployment
//! on loopback made of real OS processes — `walrus-node run` per node, BIND 9 (`named`) per
//! area name server, nginx per web server (read by the Reporters through `stub_status`) —
//! and the guards that stop each of them on drop, even when a test fails.
//!
//! ```text
//!  Deployment::start(spec)
//!    ├─ certs (walrus-gcs), TSIG keys (tsig-keygen), walrus.toml
//!    ├─ Named   per area     ← zone files from `walrus-node dns bind-config` (backend bind)
//!    ├─ Nginx   per server   ← 127.60.<cluster>.<n>:<port>, `master_process off`
//!    └─ NodeProcess per node ← `walrus-node run --config walrus.toml --node NAME`
//!  Partition::cut(a, b)      ← nftables rules dropping the gcs UDP between two port sets
//! ```
//!
//! Node layout for `areas = N` (areas a1..aN, home clusters c1..cN of two servers each):
//! `ctl-1..3` run only the Controller; `dK` runs the Director of area aK and the Reporter
//! of server cK-s1; `rK` the Reporter of cK-s2.
//!
//! Used by walrus-node's `tests/e2e_failover.rs` and `examples/failover_bench.rs`, with
//! the real `walrus-node` binary.

use crate::deploy::NodeProcess;
use crate::dir::TempDir;
use crate::dns::{dig_a, Named};
use crate::net::{free_dns_port, free_tcp_port, free_udp_port};
use crate::nft::Partition;
use crate::process::need;
use crate::wait::{poll_until_with as poll_until, PATIENCE};
use crate::web::Nginx;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which name server backend the deployment's Directors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Each Director serves its area itself (walrus-node's embedded server).
    Embedded,
    /// A real BIND 9 per area, updated by RFC 2136 with TSIG.
    Bind,
}

impl Backend {
    /// Its name in messages and temp dirs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Bind => "bind",
        }
    }
}

/// What to start.
pub struct Spec {
    /// Areas a1..aN with home clusters c1..cN (two nginx servers each).
    pub areas: u8,
    /// The Directors' name servers.
    pub backend: Backend,
    /// `[timing] round_period` ("500ms").
    pub round_period: &'static str,
    /// `[timing] report_timeout`.
    pub report_timeout: &'static str,
    /// `[timing] report_interval`.
    pub report_interval: &'static str,
    /// The `walrus-node` binary.
    pub bin: PathBuf,
    /// Directors per area: 1 (`d<a>`), or 2 (`r<a>` directs too: a second writer that
    /// takes over when the first's host is lost; RFC 2136 backend only).
    pub directors_per_area: u8,
}

/// One web server of the deployment.
pub struct ServerInfo {
    /// Its cluster.
    pub cluster: String,
    /// The address in DNS answers; nginx listens on it.
    pub ip: Ipv4Addr,
}

/// A running deployment. Fields drop in order: walrus-node processes first, then nginx,
/// then BIND, the firewall rules and last the directory.
pub struct Deployment {
    /// node → its `walrus-node run` process.
    pub nodes: BTreeMap<String, NodeProcess>,
    /// server → its nginx.
    pub nginx: BTreeMap<String, Nginx>,
    /// area → its BIND (backend bind).
    pub named: BTreeMap<String, Named>,
    /// The cut in force, if any.
    pub partition: Option<Partition>,
    /// area → its name server's address.
    pub name_servers: BTreeMap<String, SocketAddr>,
    /// server → cluster and address.
    pub servers: BTreeMap<String, ServerInfo>,
    /// node → its gcs UDP port.
    pub node_ports: BTreeMap<String, u16>,
    /// Controller node → its status page (`/status`).
    pub status_addrs: BTreeMap<String, SocketAddr>,
    /// walrus.toml.
    pub config: PathBuf,
    /// The `walrus-node` binary.
    pub bin: PathBuf,
    /// Everything's directory.
    pub dir: TempDir,
}

/// The controller-only nodes.
pub const CONTROLLERS: [&str; 3] = ["ctl-1", "ctl-2", "ctl-3"];

impl Deployment {
    /// Writes everything and starts every process; returns once each area's name server
    /// answers with its home cluster.
    pub fn start(spec: Spec) -> Self {
        let dir = TempDir::new(&format!("e2e-{}", spec.backend.name()));
        let root = dir.path().to_owned();
        let certs_dir = root.join("certs");
        walrus_gcs::transport::certs::write_new_ca(&certs_dir).unwrap();

        let mut d = Deployment {
            nodes: BTreeMap::new(),
            nginx: BTreeMap::new(),
            named: BTreeMap::new(),
            partition: None,
            name_servers: BTreeMap::new(),
            servers: BTreeMap::new(),
            node_ports: BTreeMap::new(),
            status_addrs: BTreeMap::new(),
            config: root.join("walrus.toml"),
            bin: spec.bin.clone(),
            dir,
        };

        // Web servers first: their ports go into the configuration.
        let mut toml = format!(
            "site = \"example.com\"\n\
             [timing]\nround_period = \"{}\"\nreport_timeout = \"{}\"\nreport_interval = \"{}\"\ngcs_profile = \"lan\"\n\
             [controller]\nuse_cpu = false\n\
             [dns]\nbackend = \"{}\"\nmode = \"director\"\nttl = \"5s\"\nstate_dir = \"{}/dns\"\n\
             [reporter]\nbypass_file = \"{}/bypass\"\npanic_after = 2\n\
             [tls]\nca = \"{}/ca.pem\"\ndir = \"{}\"\n",
            spec.round_period,
            spec.report_timeout,
            spec.report_interval,
            match spec.backend {
                Backend::Embedded => "embedded",
                Backend::Bind => "rfc2136",
            },
            root.display(),
            root.display(),
            certs_dir.display(),
            certs_dir.display(),
        );
        for c in 1..=spec.areas {
            for s in 1..=2u8 {
                let name = format!("c{c}-s{s}");
                let ip = Ipv4Addr::new(127, 60, c, s);
                let addr = SocketAddr::from((ip, free_tcp_port(ip)));
                let n = Nginx::serve(&root.join("nginx").join(&name), addr);
                toml += &format!(
                    "[clusters.c{c}.servers.{name}]\naddresses = [\"{ip}\"]\nstatus = \"nginx\"\n\
                     status_url = \"http://{addr}/nginx_status\"\nmax_workers = 256\n"
                );
                d.nginx.insert(name.clone(), n);
                d.servers.insert(
                    name,
                    ServerInfo {
                        cluster: format!("c{c}"),
                        ip,
                    },
                );
            }
        }
        for a in 1..=spec.areas {
            let area = format!("a{a}");
            let port = free_dns_port();
            let ns: SocketAddr = ([127, 0, 0, 1], port).into();
            toml += &format!(
                "[areas.{area}]\nzone = \"area-{area}.example.com\"\nname_server = \"{ns}\"\nhome_cluster = \"c{a}\"\n"
            );
            if spec.backend == Backend::Bind {
                let key = Command::new(need("tsig-keygen", "bind9"))
                    .args(["-a", "hmac-sha256", &format!("walrus-{area}")])
                    .output()
                    .unwrap();
                assert!(key.status.success(), "tsig-keygen failed");
                let key_file = root.join(format!("{area}.key"));
                std::fs::write(&key_file, &key.stdout).unwrap();
                toml += &format!("tsig_key_file = \"{}\"\n", key_file.display());
            }
            d.name_servers.insert(area, ns);
        }
        let mut nodes: Vec<(String, String)> = CONTROLLERS
            .iter()
            .map(|c| {
                let status = SocketAddr::from(([127, 0, 0, 1], free_tcp_port(Ipv4Addr::LOCALHOST)));
                d.status_addrs.insert(c.to_string(), status);
                (
                    c.to_string(),
                    format!("roles = [\"controller\"]\nstatus_addr = \"{status}\"\n"),
                )
            })
            .collect();
        for a in 1..=spec.areas {
            nodes.push((
                format!("d{a}"),
                format!(
                    "roles = [\"director\", \"reporter\"]\narea = \"a{a}\"\nserver = \"c{a}-s1\"\n"
                ),
            ));
            let second = if spec.directors_per_area > 1 {
                format!("roles = [\"reporter\", \"director\"]\narea = \"a{a}\"\n")
            } else {
                "roles = [\"reporter\"]\n".to_owned()
            };
            nodes.push((format!("r{a}"), format!("{second}server = \"c{a}-s2\"\n")));
        }
        for (name, rest) in &nodes {
            let port = free_udp_port();
            toml += &format!("[nodes.{name}]\naddress = \"127.0.0.1:{port}\"\n{rest}");
            walrus_gcs::transport::certs::write_node_cert(&certs_dir, name).unwrap();
            d.node_ports.insert(name.clone(), port);
        }
        std::fs::write(&d.config, &toml).unwrap();

        let check = Command::new(&d.bin)
            .args(["check-config", "--config"])
            .arg(&d.config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "check-config refused the test configuration:\n{}\n{toml}",
            String::from_utf8_lossy(&check.stderr)
        );

        if spec.backend == Backend::Bind {
            let areas: Vec<String> = d.name_servers.keys().cloned().collect();
            for area in areas {
                let named = d.start_named(&area);
                d.named.insert(area, named);
            }
        }
        for (name, _) in &nodes {
            let p = NodeProcess::start(&d.bin, &d.config, name, d.dir.path());
            d.nodes.insert(name.clone(), p);
        }
        d.wait_steady();
        // Every area's name server answers with its home cluster.
        for a in 1..=spec.areas {
            let area = format!("a{a}");
            let want = d.cluster_ips(&format!("c{a}"));
            poll_until(
                &format!("{area}'s name server answers with c{a}"),
                PATIENCE,
                || d.logs(),
                || (d.answer(&area) == want).then_some(()),
            );
        }
        d
    }

    /// The `/status` document of Controller node `node`, if it answers.
    pub fn status(&self, node: &str) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let addr = self.status_addrs.get(node)?;
        let mut s = TcpStream::connect_timeout(addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /status HTTP/1.0\r\nHost: walrus\r\n\r\n")
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (_, body) = buf.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// Waits until the group has formed: a master Controller whose view holds every
    /// node and whose last round saw every web server working.
    pub fn wait_steady(&self) {
        let nodes = self.node_ports.len();
        poll_until(
            "a master whose view holds every node and sees every server working",
            PATIENCE,
            || self.logs(),
            || {
                CONTROLLERS.iter().find_map(|c| {
                    let doc = self.status(c)?;
                    let master = doc["is_master"].as_bool()?;
                    let members = doc["view"]["members"].as_array()?.len();
                    let servers = doc["servers"].as_array()?;
                    let all_working = servers.len() == self.servers.len()
                        && servers.iter().all(|s| s["state"] == "working");
                    (master && members == nodes && all_working).then_some(())
                })
            },
        );
    }

    /// Starts BIND for `area` from `walrus-node dns bind-config` (what an operator does)
    /// and waits until it answers.
    fn start_named(&self, area: &str) -> Named {
        let dir = self.dir.path().join("bind").join(area);
        let files = bind_config_cli(&self.bin, &self.config, area, &dir, &[]);
        let key = std::fs::read_to_string(self.dir.path().join(format!("{area}.key")))
            .expect("the area's key file");
        Named::start(
            &dir,
            self.name_servers[area].port(),
            &format!("{key}\n{}", files[0].1),
            &[&format!("area-{area}.example.com")],
        )
    }

    /// What area `area`'s name server answers for `www.<area zone>` (BIND answers
    /// `www.<site>` with the CNAME only; a resolver follows it to this name).
    pub fn answer(&self, area: &str) -> Vec<Ipv4Addr> {
        dig_a(
            self.name_servers[area],
            &format!("www.area-{area}.example.com"),
        )
    }

    /// The addresses of the servers of `cluster`, sorted.
    pub fn cluster_ips(&self, cluster: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .servers
            .values()
            .filter(|s| s.cluster == cluster)
            .map(|s| s.ip)
            .collect();
        v.sort();
        v
    }

    /// The address of server `server`.
    pub fn ip(&self, server: &str) -> Ipv4Addr {
        self.servers[server].ip
    }

    /// The cluster all of `ips` belong to, if they are one cluster's (and not empty).
    pub fn cluster_of(&self, ips: &[Ipv4Addr]) -> Option<String> {
        let mut clusters = ips.iter().map(|ip| {
            self.servers
                .values()
                .find(|s| s.ip == *ip)
                .map(|s| s.cluster.clone())
        });
        let first = clusters.next()??;
        clusters
            .all(|c| c.as_deref() == Some(first.as_str()))
            .then_some(first)
    }

    /// The Controllers that are master now (by their logs).
    pub fn masters(&self) -> Vec<String> {
        CONTROLLERS
            .iter()
            .filter(|c| self.nodes.get(**c).is_some_and(NodeProcess::is_master))
            .map(|c| c.to_string())
            .collect()
    }

    /// SIGKILLs node `node`'s process.
    pub fn kill_node(&mut self, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.guard.kill();
        }
    }

    /// Every node's log (the tail of each) and every named's, for failure messages.
    pub fn logs(&self) -> String {
        let mut s: String = self.nodes.values().map(|n| n.log_tail(40)).collect();
        for (area, n) in &self.named {
            let log = n.log();
            let lines: Vec<&str> = log.lines().collect();
            s += &format!(
                "---- named {area} (last 15 lines) ----\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        s
    }

    /// Polls until area `area`'s name server answers exactly `want` (sorted).
    pub fn wait_answer(&self, area: &str, want: &[Ipv4Addr], what: &str) {
        let mut want = want.to_vec();
        want.sort();
        poll_until(
            what,
            PATIENCE,
            || format!("last answer {:?}\n{}", self.answer(area), self.logs()),
            || (self.answer(area) == want).then_some(()),
        );
    }

    /// Cuts the gcs traffic between the nodes in `side` and all others (nftables).
    pub fn partition(&mut self, side: &[&str]) {
        let (a, b): (Vec<u16>, Vec<u16>) = {
            let a: Vec<u16> = side.iter().map(|n| self.node_ports[*n]).collect();
            let b: Vec<u16> = self
                .node_ports
                .iter()
                .filter(|(n, _)| !side.contains(&n.as_str()))
                .map(|(_, p)| *p)
                .collect();
            (a, b)
        };
        self.partition = Some(Partition::cut(&a, &b));
    }

    /// Removes the partition's rules.
    pub fn heal(&mut self) {
        self.partition = None;
    }
}

/// What an operator does for BIND (README step 6): runs `bin dns bind-config --area AREA
/// --config CONFIG --zone-dir DIR EXTRA…`, writes the zone files it prints into `dir` and
/// returns its sections, named.conf's statements first; panics with its stderr if it
/// fails.
pub fn bind_config_cli(
    bin: &Path,
    config: &Path,
    area: &str,
    dir: &Path,
    extra: &[&str],
) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir).expect("creating BIND's directory");
    let out = Command::new(bin)
        .args(["dns", "bind-config", "--area", area, "--config"])
        .arg(config)
        .arg("--zone-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("running walrus-node dns bind-config");
    assert!(
        out.status.success(),
        "dns bind-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Sections: "// ---- named.conf ----", then one per zone file.
    let files = walrus_actors::director::bind_config::split_rendered(&text);
    assert!(
        files.len() == 3 && files[0].0 == "named.conf",
        "bind-config output is not named.conf + two zone files: {files:?}"
    );
    for (n, b) in &files[1..] {
        std::fs::write(dir.join(n), b).expect("writing a zone file");
    }
    files
}
