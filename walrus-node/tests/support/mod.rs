//! Test support for walrus-node: temp dirs, a tiny HTTP server to probe, `dig`, polling,
//! and a loopback deployment written as TOML.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("walrus-node-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny HTTP server answering 200 "ok" to everything: what the Reporter's health probe
/// reads. Stopping it closes the port (the probe then sees connection refused: PANIC).
pub struct TinyHttp {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TinyHttp {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        TinyHttp {
            addr,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path of a binary, or a panic naming the Debian package that provides it.
pub fn need(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("`{binary}` is missing: install the Debian package `{package}`");
}

/// The A records `dig` sees for `name` at `server` (sorted). Like a resolver, follows a
/// CNAME that comes without addresses (an area server answers `www.<site>` with the CNAME
/// to its area zone alone, as BIND does) by asking the same server for its target.
pub fn dig_a(server: SocketAddr, name: &str) -> Vec<String> {
    let dig = need("dig", "bind9-dnsutils");
    let mut name = name.to_owned();
    for _ in 0..4 {
        let out = Command::new(&dig)
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string()])
            .args([&name, "A", "+short", "+time=1", "+tries=2"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let mut v: Vec<String> = lines
            .iter()
            .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
            .map(|l| (*l).to_owned())
            .collect();
        match lines.last() {
            Some(target) if v.is_empty() && target.ends_with('.') => name = (*target).to_owned(),
            _ => {
                v.sort();
                return v;
            }
        }
    }
    Vec::new()
}

/// Polls `f` every 50 ms until it gives `Some`, or panics after `timeout` naming `what`.
pub async fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Generous on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One web server of the test deployment.
pub struct ServerSpec {
    pub name: &'static str,
    pub cluster: &'static str,
    /// The address handed out in DNS (TEST-NET: never contacted).
    pub address: &'static str,
    /// The probe URL (a TinyHttp).
    pub url: String,
}

/// One area of the test deployment.
pub struct AreaSpec {
    pub name: &'static str,
    pub home: &'static str,
    pub dns_port: u16,
}

/// One node of the test deployment.
pub struct NodeSpec {
    pub name: &'static str,
    pub roles: &'static [&'static str],
    pub server: Option<&'static str>,
    pub area: Option<&'static str>,
}

/// A loopback deployment as TOML text (fast timings: rounds of 500 ms).
pub fn deployment_toml(areas: &[AreaSpec], servers: &[ServerSpec], nodes: &[NodeSpec]) -> String {
    let mut t = String::from(
        "site = \"example.com\"\n\
         [timing]\nround_period = \"500ms\"\nreport_timeout = \"250ms\"\nreport_interval = \"200ms\"\n\
         [dns]\nttl = \"5s\"\n\
         [reporter]\npanic_after = 2\n\
         [controller]\nuse_cpu = false\n",
    );
    for a in areas {
        t += &format!(
            "[areas.{0}]\nzone = \"area-{0}.example.com\"\nname_server = \"127.0.0.1:{1}\"\nhome_cluster = \"{2}\"\n",
            a.name, a.dns_port, a.home
        );
    }
    for s in servers {
        t += &format!(
            "[clusters.{}.servers.{}]\naddresses = [\"{}\"]\nstatus = \"probe\"\nstatus_url = \"{}\"\nmax_workers = 100\n",
            s.cluster, s.name, s.address, s.url
        );
    }
    for n in nodes {
        let port = walrus_node::cluster::free_udp_port().unwrap();
        let roles: Vec<String> = n.roles.iter().map(|r| format!("\"{r}\"")).collect();
        t += &format!(
            "[nodes.{}]\naddress = \"127.0.0.1:{port}\"\nroles = [{}]\n",
            n.name,
            roles.join(", ")
        );
        if let Some(s) = n.server {
            t += &format!("server = \"{s}\"\n");
        }
        if let Some(a) = n.area {
            t += &format!("area = \"{a}\"\n");
        }
    }
    t
}

/// [`deployment_toml`] for the usual two areas: a1 (home c1 = s1 at 192.0.2.1) and a2 (home
/// c2 = s2 at 192.0.2.2), with their name servers on `dns_ports` and the probe URLs `urls`.
pub fn two_area_toml(dns_ports: [u16; 2], urls: [String; 2], nodes: &[NodeSpec]) -> String {
    let [p1, p2] = dns_ports;
    let [u1, u2] = urls;
    deployment_toml(
        &[
            AreaSpec {
                name: "a1",
                home: "c1",
                dns_port: p1,
            },
            AreaSpec {
                name: "a2",
                home: "c2",
                dns_port: p2,
            },
        ],
        &[
            ServerSpec {
                name: "s1",
                cluster: "c1",
                address: "192.0.2.1",
                url: u1,
            },
            ServerSpec {
                name: "s2",
                cluster: "c2",
                address: "192.0.2.2",
                url: u2,
            },
        ],
        nodes,
    )
}

/// Logs to the test's output when RUST_LOG is set (e.g. RUST_LOG=walrus_actors=info).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A `walrus-node run` process, SIGKILLed and reaped on drop; its stderr goes to a log file.
pub struct NodeProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl NodeProcess {
    pub fn start(config: &Path, node: &str, dir: &Path) -> Self {
        Self::start_with(config, node, dir, node, &[])
    }

    /// Starts `node` with extra arguments (e.g. `--roles controller`), logging to
    /// `DIR/<log_name>.log`.
    pub fn start_with(
        config: &Path,
        node: &str,
        dir: &Path,
        log_name: &str,
        extra: &[&str],
    ) -> Self {
        let log = dir.join(format!("{log_name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_walrus-node"))
            .args(["run", "--node", node, "--config"])
            .arg(config)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("WALRUS_TEST_LOG").unwrap_or_else(|_| {
                    "walrus_actors=info,walrus_node=info,walrus_gcs=info".to_owned()
                }),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        NodeProcess { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Master now: it said so and has not lost the place since.
    pub fn is_master(&self) -> bool {
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

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (for a status page).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Adds `line` to node `node`'s table of a TOML written by [`deployment_toml`].
pub fn add_to_node(toml: &str, node: &str, line: &str) -> String {
    let head = format!("[nodes.{node}]\n");
    let at = toml.find(&head).unwrap() + head.len();
    format!("{}{line}\n{}", &toml[..at], &toml[at..])
}

/// The `address = "..."` of node `node` in such a TOML.
pub fn node_address(toml: &str, node: &str) -> SocketAddr {
    let head = format!("[nodes.{node}]\n");
    let at = toml.find(&head).unwrap() + head.len();
    let rest = &toml[at..];
    let line = rest.lines().find(|l| l.starts_with("address = ")).unwrap();
    line.trim_start_matches("address = ")
        .trim_matches('"')
        .parse()
        .unwrap()
}

/// nftables rules that drop UDP between two sets of loopback ports (the gcs QUIC traffic
/// of two groups of nodes: each node's endpoint sends from its listening port). The table
/// is deleted on drop. (The same helper as the end-to-end tests' kit, for this crate's
/// process tests.)
pub struct Partition {
    table: String,
}

impl Partition {
    pub fn cut(a: &[u16], b: &[u16]) -> Self {
        let nft = need("nft", "nftables");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let table = format!(
            "walrus_node_{}_{}",
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
