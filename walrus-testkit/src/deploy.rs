//! A Walrus deployment on loopback as the tests write it: `walrus.toml` text for areas,
//! servers and nodes (fast timings), the `walrus-node run` process with its log, and a
//! tiny HTTP server for the Reporter's health probe.

use crate::net::free_udp_port;
use crate::process::ChildGuard;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// One web server of a test deployment.
pub struct ServerSpec {
    /// Its name.
    pub name: &'static str,
    /// Its cluster.
    pub cluster: &'static str,
    /// The address handed out in DNS (TEST-NET: never contacted).
    pub address: &'static str,
    /// The probe URL (a [`TinyHttp`]).
    pub url: String,
}

/// One area of a test deployment.
pub struct AreaSpec {
    /// Its name.
    pub name: &'static str,
    /// Its home cluster.
    pub home: &'static str,
    /// Its name server's port on 127.0.0.1.
    pub dns_port: u16,
}

/// One node of a test deployment.
pub struct NodeSpec {
    /// Its name.
    pub name: &'static str,
    /// Its roles.
    pub roles: &'static [&'static str],
    /// The server it reports for.
    pub server: Option<&'static str>,
    /// The area it directs.
    pub area: Option<&'static str>,
}

impl NodeSpec {
    /// A Controller-only node.
    pub fn controller(name: &'static str) -> Self {
        NodeSpec {
            name,
            roles: &["controller"],
            server: None,
            area: None,
        }
    }

    /// A node on web server `server` that reports for it and directs `area`.
    pub fn worker(name: &'static str, server: &'static str, area: &'static str) -> Self {
        NodeSpec {
            name,
            roles: &["reporter", "director"],
            server: Some(server),
            area: Some(area),
        }
    }

    /// A Reporter-only node on web server `server`.
    pub fn reporter(name: &'static str, server: &'static str) -> Self {
        NodeSpec {
            name,
            roles: &["reporter"],
            server: Some(server),
            area: None,
        }
    }
}

/// The certificate fixture of a deployment run as processes: writes a CA and a
/// certificate for each of `nodes` under `dir/certs` (walrus-gcs' own writers), and points
/// `toml` (from [`deployment_toml`]) at them, its bypass file and DNS state into `dir`.
#[cfg(feature = "actors")]
pub fn with_certs(toml: &str, dir: &Path, nodes: &[&str]) -> String {
    use walrus_gcs::transport::certs;
    let certs_dir = dir.join("certs");
    certs::write_new_ca(&certs_dir).expect("writing the test CA");
    for n in nodes {
        certs::write_node_cert(&certs_dir, n).expect("writing a node certificate");
    }
    toml.replacen(
        "[reporter]\n",
        &format!(
            "[tls]\nca = \"{0}/ca.pem\"\ndir = \"{0}\"\n[reporter]\nbypass_file = \"{1}/bypass\"\n",
            certs_dir.display(),
            dir.display()
        ),
        1,
    )
    .replacen(
        "[dns]\n",
        &format!("[dns]\nstate_dir = \"{}/dns\"\n", dir.display()),
        1,
    )
}

/// [`deployment_toml`]'s text with reports gathered for 450 ms of each 500 ms round
/// instead of 250 ms, for scenarios that assert no answer changes over many rounds: a
/// report that misses the gathering makes its server dead for that round (paper §6),
/// which moves its area, and on a loaded machine reports were seen later than 250 ms.
pub fn patient_reports(toml: &str) -> String {
    toml.replace("report_timeout = \"250ms\"", "report_timeout = \"450ms\"")
}

/// A loopback deployment as TOML text (fast timings: rounds of 500 ms); each node on a
/// free UDP port.
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
        let port = free_udp_port();
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

/// The usual five nodes of [`two_area_toml`]: Controllers ctl-1, ctl-2, ctl-3, and web
/// hosts w-1 (s1, directs a1) and w-2 (s2, directs a2).
pub fn three_controllers_two_workers() -> [NodeSpec; 5] {
    [
        NodeSpec::controller("ctl-1"),
        NodeSpec::controller("ctl-2"),
        NodeSpec::controller("ctl-3"),
        NodeSpec::worker("w-1", "s1", "a1"),
        NodeSpec::worker("w-2", "s2", "a2"),
    ]
}

/// [`deployment_toml`] for the usual two areas: a1 (home c1 = s1 at 192.0.2.1) and a2 (home
/// c2 = s2 at 192.0.2.2), with their name servers on `dns_ports` and the probe URLs `urls`.
pub fn two_area_toml(dns_ports: [u16; 2], urls: [String; 2], nodes: &[NodeSpec]) -> String {
    let [p1, p2] = dns_ports;
    let [u1, u2] = urls;
    let area = |name, home, dns_port| AreaSpec {
        name,
        home,
        dns_port,
    };
    let server = |name, cluster, address, url| ServerSpec {
        name,
        cluster,
        address,
        url,
    };
    deployment_toml(
        &[area("a1", "c1", p1), area("a2", "c2", p2)],
        &[
            server("s1", "c1", "192.0.2.1", u1),
            server("s2", "c2", "192.0.2.2", u2),
        ],
        nodes,
    )
}

/// Adds `line` to node `node`'s table of a TOML written by [`deployment_toml`].
pub fn add_to_node(toml: &str, node: &str, line: &str) -> String {
    let head = format!("[nodes.{node}]\n");
    let at = toml.find(&head).expect("the node's table") + head.len();
    format!("{}{line}\n{}", &toml[..at], &toml[at..])
}

/// The `address = "..."` of node `node` in such a TOML.
pub fn node_address(toml: &str, node: &str) -> SocketAddr {
    let head = format!("[nodes.{node}]\n");
    let at = toml.find(&head).expect("the node's table") + head.len();
    let line = toml[at..]
        .lines()
        .find(|l| l.starts_with("address = "))
        .expect("the node's address");
    line.trim_start_matches("address = ")
        .trim_matches('"')
        .parse()
        .expect("an address written by deployment_toml")
}

/// A `walrus-node run` process, SIGKILLed and reaped on drop; its stderr (the log) goes
/// to a file.
pub struct NodeProcess {
    /// The process.
    pub guard: ChildGuard,
    /// The node's name.
    pub name: String,
    /// Its log file.
    pub log: PathBuf,
}

impl NodeProcess {
    /// `bin run --node NODE --config CONFIG`, logging to `DIR/<node>.log`.
    pub fn start(bin: impl AsRef<Path>, config: &Path, node: &str, dir: &Path) -> Self {
        Self::start_with(bin, config, node, dir, node, &[])
    }

    /// `bin run --node NODE --config CONFIG EXTRA…`, logging to `DIR/<log_name>.log` at
    /// `WALRUS_TEST_LOG` (default: info for walrus' crates).
    pub fn start_with(
        bin: impl AsRef<Path>,
        config: &Path,
        node: &str,
        dir: &Path,
        log_name: &str,
        extra: &[&str],
    ) -> Self {
        let log = dir.join(format!("{log_name}.log"));
        let guard = ChildGuard::start(
            format!("walrus-node {node}"),
            Command::new(bin.as_ref())
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
                .stderr(std::fs::File::create(&log).expect("creating the node's log")),
        );
        NodeProcess {
            guard,
            name: node.to_owned(),
            log,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log, under a header naming it.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        format!(
            "---- {} (last {n} lines) ----\n{}\n",
            self.name,
            tail.join("\n")
        )
    }

    /// Master now, going by its log: it said so and has not lost the place since.
    pub fn is_master(&self) -> bool {
        if self.guard.id().is_none() {
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

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.guard.exited()
    }
}

/// A tiny HTTP server answering 200 "ok" to everything: what the Reporter's health probe
/// reads. Stopping it closes the port (the probe then sees connection refused: PANIC).
pub struct TinyHttp {
    /// Where it listens.
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TinyHttp {
    /// On a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// On `addr` (to start again where a stopped one was).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        let addr = listener.local_addr().expect("a bound listener's address");
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

    /// The probe URL.
    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    /// Closes the port.
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
