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
//! Shared by `tests/e2e_failover.rs` and `examples/failover_bench.rs` (`#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("walrus-e2e-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("WALRUS_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The path of a binary, or a panic naming the Debian package that provides it.
pub fn need(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("`{binary}` is missing: install the Debian package `{package}`");
}

/// A free TCP port on `ip` (bound then released).
pub fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free for both UDP and TCP on 127.0.0.1 (a name server listens on both).
pub fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free DNS port");
}

/// A free UDP port on 127.0.0.1 (a node's gcs address).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The A records at `server` for `name` (sorted), through `dig` (empty on no answer).
pub fn dig_a(server: SocketAddr, name: &str) -> Vec<Ipv4Addr> {
    let dig = need("dig", "bind9-dnsutils");
    let out = Command::new(dig)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args([name, "A", "+short", "+time=1", "+tries=1"])
        .output()
        .unwrap();
    let mut v: Vec<Ipv4Addr> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    v.sort();
    v
}

/// Polls `f` every 50 ms until it gives `Some`, or panics after `timeout` naming `what`
/// (and with `context()`, e.g. the logs that explain it).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for: {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Generous on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// A child process SIGKILLed (and reaped) on drop.
pub struct Guard {
    pub child: Option<Child>,
    pub what: String,
}

impl Guard {
    pub fn spawn(what: impl Into<String>, cmd: &mut Command) -> Self {
        let what = what.into();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Guard {
            child: Some(child),
            what,
        }
    }

    /// SIGKILL now (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One nginx web server (`master_process off`: one process, so SIGKILL stops serving),
/// with `stub_status` at `/nginx_status`.
pub struct Nginx {
    pub guard: Guard,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Writes the configuration under `dir` and starts nginx on `addr`; waits until it
    /// answers.
    pub fn start(dir: &Path, addr: SocketAddr) -> Self {
        let nginx = need("nginx", "nginx");
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), "walrus\n").unwrap();
        let d = dir.display();
        let conf = format!(
            "master_process off;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  listen {addr};\n  location = /nginx_status {{ stub_status; }}\n\
             location / {{ root {d}/www; }}\n }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut n = Nginx {
            guard: Guard::spawn(
                format!("nginx {addr}"),
                Command::new(nginx)
                    .arg("-c")
                    .arg(dir.join("nginx.conf"))
                    .arg("-p")
                    .arg(dir)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            ),
            addr,
            dir: dir.to_owned(),
        };
        n.wait_ready();
        n
    }

    /// Starts it again after a kill (same address and configuration).
    pub fn restart(&mut self) {
        self.guard.kill();
        let addr = self.addr;
        let dir = self.dir.clone();
        *self = Nginx::start(&dir, addr);
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if !self.guard.running() || start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "nginx on {} did not start; error.log:\n{}",
                    self.addr,
                    std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}

/// BIND 9 in the foreground (`named -g`) as one area's name server.
pub struct Named {
    pub guard: Guard,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Named {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }
}

/// A `walrus-node run` process; its stderr (the log) goes to `<dir>/<node>.log`.
pub struct NodeProcess {
    pub guard: Guard,
    pub name: String,
    log: PathBuf,
}

impl NodeProcess {
    pub fn start(bin: &Path, config: &Path, node: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{node}.log"));
        let guard = Guard::spawn(
            format!("walrus-node {node}"),
            Command::new(bin)
                .args(["run", "--node", node, "--config"])
                .arg(config)
                .env(
                    "RUST_LOG",
                    std::env::var("WALRUS_E2E_LOG")
                        .unwrap_or_else(|_| "walrus_actors=info,walrus_node=info".into()),
                )
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        NodeProcess {
            guard,
            name: node.to_owned(),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Master now, going by its log: it said so and has not lost the place since.
    pub fn is_master(&self) -> bool {
        if self.guard.child.is_none() {
            return false;
        }
        let log = self.log();
        match (
            log.rfind("this controller is master"),
            log.rfind("lost mastership"),
        ) {
            (Some(m), Some(l)) => m > l,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// Which name server backend the deployment's Directors use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Each Director serves its area itself (walrus-node's embedded server).
    Embedded,
    /// A real BIND 9 per area, updated by RFC 2136 with TSIG.
    Bind,
}

impl Backend {
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
    pub cluster: String,
    /// The address in DNS answers; nginx listens on it.
    pub ip: Ipv4Addr,
}

/// A running deployment. Fields drop in order: walrus-node processes first, then nginx,
/// then BIND, the firewall rules and last the directory.
pub struct Deployment {
    pub nodes: BTreeMap<String, NodeProcess>,
    pub nginx: BTreeMap<String, Nginx>,
    pub named: BTreeMap<String, Named>,
    pub partition: Option<Partition>,
    /// area → its name server's address.
    pub name_servers: BTreeMap<String, SocketAddr>,
    /// server → cluster and address.
    pub servers: BTreeMap<String, ServerInfo>,
    /// node → its gcs UDP port.
    pub node_ports: BTreeMap<String, u16>,
    /// Controller node → its status page (`/status`).
    pub status_addrs: BTreeMap<String, SocketAddr>,
    pub config: PathBuf,
    pub bin: PathBuf,
    pub dir: TempDir,
}

/// The controller-only nodes.
pub const CONTROLLERS: [&str; 3] = ["ctl-1", "ctl-2", "ctl-3"];

impl Deployment {
    /// Writes everything and starts every process; returns once each area's name server
    /// answers with its home cluster.
    pub fn start(spec: Spec) -> Self {
        let dir = TempDir::new(spec.backend.name());
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
                let n = Nginx::start(&root.join("nginx").join(&name), addr);
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
        let named = need("named", "bind9");
        let dir = self.dir.path().join("bind").join(area);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(&self.bin)
            .args(["dns", "bind-config", "--area", area, "--config"])
            .arg(&self.config)
            .arg("--zone-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dns bind-config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // Sections: "// ---- named.conf ----", then one per zone file.
        let files = walrus_actors::director::bind_config::split_rendered(&text);
        assert!(files.len() >= 3, "bind-config output:\n{text}");
        for (n, b) in &files[1..] {
            std::fs::write(dir.join(n), b).unwrap();
        }
        let key = std::fs::read_to_string(self.dir.path().join(format!("{area}.key"))).unwrap();
        let addr = self.name_servers[area];
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                "options {{\n directory \"{d}\";\n pid-file \"{d}/named.pid\";\n session-keyfile \"{d}/session.key\";\n\
                 managed-keys-directory \"{d}\";\n listen-on port {} {{ 127.0.0.1; }};\n listen-on-v6 {{ none; }};\n\
                 recursion no;\n dnssec-validation no;\n notify no;\n}};\ncontrols {{ }};\n{key}\n{}",
                addr.port(),
                files[0].1
            ),
        )
        .unwrap();
        let mut n = Named {
            guard: Guard::spawn(
                format!("named for {area}"),
                Command::new(named)
                    .arg("-g")
                    .arg("-c")
                    .arg(dir.join("named.conf"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("named.log")).unwrap()),
            ),
            addr,
            dir: dir.clone(),
        };
        let name = format!("www.area-{area}.example.com");
        let start = Instant::now();
        while dig_a(addr, &name).is_empty() {
            if !n.guard.running() || start.elapsed() > PATIENCE {
                panic!("named for {area} does not answer; log:\n{}", n.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        n
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
        let mut s = String::new();
        for (name, n) in &self.nodes {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            s += &format!("---- {name} (last 40 lines) ----\n");
            for l in tail.into_iter().rev() {
                s += l;
                s.push('\n');
            }
        }
        for (area, n) in &self.named {
            let log = n.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            s += &format!("---- named {area} (last 15 lines) ----\n");
            for l in tail.into_iter().rev() {
                s += l;
                s.push('\n');
            }
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

/// nftables rules that drop UDP between two sets of loopback ports (the gcs QUIC
/// traffic of two groups of nodes: each node's endpoint sends from its listening port).
/// The table is deleted on drop.
pub struct Partition {
    table: String,
}

impl Partition {
    pub fn cut(a: &[u16], b: &[u16]) -> Self {
        let nft = need("nft", "nftables");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let table = format!(
            "walrus_e2e_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let set = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let (a, b) = (set(a), set(b));
        let script = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n\
               ip daddr 127.0.0.0/8 udp sport {{ {a} }} udp dport {{ {b} }} drop\n\
               ip daddr 127.0.0.0/8 udp sport {{ {b} }} udp dport {{ {a} }} drop\n }}\n}}\n"
        );
        let mut child = Command::new(nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft refused the partition rules (root needed): {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        Partition { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new(need("nft", "nftables"))
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}
