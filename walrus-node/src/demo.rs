//! `walrus-node demo`: a whole Walrus deployment on loopback in one process, with
//! synthetic load that moves and a script of failures, narrated as it happens.
//!
//! ```text
//!  6 built-in web servers (actix-web, 127.0.10-12.x)     3 areas: eu, us, asia
//!    /           the replicated site + "served by eu-1"    each an embedded name server
//!    /nginx_status  stub_status with the busy workers      on 127.0.0.1:<free port>
//!                   the script sets (the load)             (Director on the area's first
//!          ▲ HTTP (real reads)                              web host)
//!  6 Reporters ──┐                                         ▲ decisions
//!  3 Controllers ┴── walrus-gcs over QUIC on loopback ─────┘
//!  (cluster::Cluster with TieredLayers: members are the Controllers, `origin` and each
//!   area's Director host (eu-1, us-1, asia-1, which serve clients); the other web hosts
//!   (eu-2, us-2, asia-2) are clients attached to their area's Director host, failing
//!   over to the next area's)
//!
//!  Replicator primary `origin` (content root DIR/site) ──TLS/TCP──▶ a Replicator replica
//!  on every web host (DIR/replicas/<host>/current is what its web server serves)
//!
//!  script: a server dies → the last server of c-eu dies → c-us overloads → the master
//!          Controller is killed → the site's content changes on the primary (printed
//!          when every web server serves the new generation) → c-eu comes back → c-us
//!          calms down → the old master rejoins as a backup → a partition, healed
//! ```
//!
//! Nothing outside the process is needed: no BIND, no nginx. The dashboard (see
//! [`crate::status`]) shows the whole deployment from the current master's point of view.
//! The web servers serve the replicated content (each from its own replica's `current`),
//! with a line saying which server answered.

use crate::cluster::{free_dns_port, free_udp_port, Cluster, TieredLayers};
use crate::config::Config;
use crate::runtime::RunError;
use crate::status::{self, Observer, Sample, SharedObserver, StatusServer};
use actix_web::{web, App, HttpResponse, HttpServer};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A local resource (port, directory, output) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The deployment did not start.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The generated configuration was refused (a bug: it is built here).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The dashboard could not start.
    #[error(transparent)]
    Status(#[from] status::StatusError),
    /// The scenario is unknown.
    #[error("unknown scenario `{0}`; known: tour, failover, quiet")]
    Scenario(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// Which script the demo plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every event: a server dies, its cluster dies, a cluster overloads, the master is
    /// killed, everything recovers.
    Tour,
    /// Only failures (no overload): a server dies, its cluster dies, the master is killed,
    /// the cluster comes back.
    Failover,
    /// No events: only the load moving.
    Quiet,
}

impl std::str::FromStr for Scenario {
    type Err = DemoError;
    fn from_str(s: &str) -> Result<Self, DemoError> {
        match s {
            "tour" => Ok(Scenario::Tour),
            "failover" => Ok(Scenario::Failover),
            "quiet" => Ok(Scenario::Quiet),
            other => Err(DemoError::Scenario(other.to_owned())),
        }
    }
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long (None: after Ctrl-C).
    pub duration: Option<Duration>,
    /// The script.
    pub scenario: Scenario,
    /// Where the dashboard listens (port 0: any free port).
    pub dashboard: SocketAddr,
}

/// One scripted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A web server's process stops (its port closes: the Reporter says PANIC).
    KillWeb(&'static str),
    /// A web server starts again.
    StartWeb(&'static str),
    /// Every server of a cluster gets this many busy workers of 100.
    Load(&'static str, u32),
    /// Every server of a cluster goes back to its background load.
    Calm(&'static str),
    /// The master Controller's host is killed (no goodbye).
    KillMaster,
    /// The killed Controller's host starts again (it joins as a backup).
    RestartController,
    /// Area asia's hosts and one backup Controller are cut off from the rest.
    Partition,
    /// Every link works again.
    Heal,
    /// The site's content changes on the Replicator primary (`index.html` becomes this
    /// version).
    Publish(u32),
}

/// The script: (seconds after it starts — rounds run and every web server has the content —,
/// step, what to print).
pub fn script(s: Scenario) -> Vec<(u64, Step, &'static str)> {
    use Step::*;
    let failures = vec![
        (
            3,
            KillWeb("eu-1"),
            "web server eu-1 dies: area eu's answer drops it",
        ),
        (
            6,
            KillWeb("eu-2"),
            "web server eu-2 dies too: cluster c-eu has no working server, area eu must move",
        ),
    ];
    match s {
        Scenario::Quiet => vec![],
        Scenario::Failover => {
            let mut v = failures;
            v.extend([
                (
                    10,
                    KillMaster,
                    "the master Controller's host is killed (SIGKILL-like: no goodbye)",
                ),
                (
                    14,
                    StartWeb("eu-1"),
                    "web server eu-1 is back: area eu returns home",
                ),
                (
                    15,
                    Publish(2),
                    "the site's content changes on the primary: index.html becomes version 2",
                ),
                (17, StartWeb("eu-2"), "web server eu-2 is back"),
                (
                    20,
                    RestartController,
                    "the killed Controller's host restarts: it joins as a backup",
                ),
            ]);
            v
        }
        Scenario::Tour => {
            vec![
                (2, KillWeb("eu-1"), "web server eu-1 dies: area eu's answer drops it"),
                (
                    4,
                    KillWeb("eu-2"),
                    "web server eu-2 dies too: cluster c-eu has no working server, area eu must move",
                ),
                (6, Load("c-us", 95), "cluster c-us overloads (95 of 100 workers busy on each server)"),
                (9, KillMaster, "the master Controller's host is killed (SIGKILL-like: no goodbye)"),
                (12, StartWeb("eu-1"), "web servers eu-1 and eu-2 are back: area eu returns home"),
                (12, StartWeb("eu-2"), ""),
                (13, Publish(2), "the site's content changes on the primary: index.html becomes version 2"),
                (14, Calm("c-us"), "cluster c-us calms down"),
                (16, RestartController, "the killed Controller's host restarts: it joins as a backup"),
                (
                    18,
                    Partition,
                    "partition: area asia's hosts and one backup Controller are cut off; each side gets a master, each area's name server follows its own side",
                ),
                (23, Heal, "the partition heals: one master remains and the answers converge"),
            ]
        }
    }
}

// ----------------------------------------------------------------------------------------
// The built-in web servers.

/// One built-in web server: the site's page and an nginx-style `stub_status` page whose
/// busy workers the script sets (the load its Reporter reads).
pub struct DemoWeb {
    /// The server's name.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// Where it listens (the address is what DNS hands out).
    pub addr: SocketAddr,
    busy: Arc<AtomicU32>,
    hits: Arc<AtomicU64>,
    /// The directory it serves (its replica's `current`), if any.
    content: Option<PathBuf>,
    running: Option<(actix_web::dev::ServerHandle, tokio::task::JoinHandle<()>)>,
}

impl DemoWeb {
    /// Starts a server on `ip`, any free port.
    pub fn start(name: &str, cluster: &str, ip: IpAddr) -> Result<Self, DemoError> {
        Self::start_serving(name, cluster, ip, None)
    }

    /// Starts a server on `ip`, any free port, serving the files under `content` (a
    /// replica's `current`) with a line naming the server appended to `index.html`.
    pub fn start_serving(
        name: &str,
        cluster: &str,
        ip: IpAddr,
        content: Option<PathBuf>,
    ) -> Result<Self, DemoError> {
        let mut w = DemoWeb {
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            addr: SocketAddr::new(ip, 0),
            busy: Arc::new(AtomicU32::new(0)),
            hits: Arc::new(AtomicU64::new(0)),
            content,
            running: None,
        };
        w.up()?;
        Ok(w)
    }

    /// Starts it (again) on its address.
    pub fn up(&mut self) -> Result<(), DemoError> {
        if self.running.is_some() {
            return Ok(());
        }
        let (busy, hits) = (self.busy.clone(), self.hits.clone());
        let page = format!(
            "Walrus demo site: served by {} (cluster {})\n",
            self.name, self.cluster
        );
        let content = self.content.clone();
        let server = HttpServer::new(move || {
            let (busy, hits, page) = (busy.clone(), hits.clone(), page.clone());
            let content = content.clone();
            App::new()
                .route(
                    "/nginx_status",
                    web::get().to({
                        let (busy, hits) = (busy.clone(), hits.clone());
                        move || {
                            let b = busy.load(Ordering::Relaxed);
                            let h = hits.fetch_add(1, Ordering::Relaxed) + 1;
                            let body = format!(
                                "Active connections: {} \nserver accepts handled requests\n {h} {h} {h} \nReading: 0 Writing: {} Waiting: 0 \n",
                                b + 1,
                                b + 1
                            );
                            async move { HttpResponse::Ok().content_type("text/plain").body(body) }
                        }
                    }),
                )
                .default_service(web::to(move |req: actix_web::HttpRequest| {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let reply = match &content {
                        None => HttpResponse::Ok().content_type("text/plain").body(page.clone()),
                        Some(dir) => serve_file(dir, req.path(), &page),
                    };
                    async move { reply }
                }))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(self.addr)
        .map_err(io(format!("web server {} on {}", self.name, self.addr)))?;
        if let Some(a) = server.addrs().first() {
            self.addr = *a;
        }
        let server = server.run();
        let handle = server.handle();
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        self.running = Some((handle, task));
        Ok(())
    }

    /// Stops it: its port closes.
    pub async fn down(&mut self) {
        if let Some((handle, task)) = self.running.take() {
            handle.stop(false).await;
            let _ = task.await;
        }
    }

    /// Sets its busy workers (of 100).
    pub fn set_busy(&self, n: u32) {
        self.busy.store(n.min(100), Ordering::Relaxed);
    }

    /// The status page the Reporter reads.
    pub fn status_url(&self) -> String {
        format!("http://{}/nginx_status", self.addr)
    }
}

/// A file of the replicated site under `dir` (`/` is `index.html`, which gets `footer`
/// appended); 404 for anything else, including paths with `..`.
fn serve_file(dir: &Path, path: &str, footer: &str) -> HttpResponse {
    let rel = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return HttpResponse::NotFound().finish();
    }
    match std::fs::read(dir.join(rel)) {
        Ok(mut body) => {
            if rel == "index.html" {
                body.extend_from_slice(footer.as_bytes());
            }
            HttpResponse::Ok().content_type("text/plain").body(body)
        }
        Err(_) if rel == "index.html" => HttpResponse::Ok().content_type("text/plain").body(
            format!("(the site's content has not arrived yet)\n{footer}"),
        ),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

/// The demo's servers: (name, cluster, address handed out in DNS, background load).
pub const SERVERS: [(&str, &str, [u8; 4], u32); 6] = [
    ("eu-1", "c-eu", [127, 0, 10, 1], 30),
    ("eu-2", "c-eu", [127, 0, 10, 2], 30),
    ("us-1", "c-us", [127, 0, 11, 1], 40),
    ("us-2", "c-us", [127, 0, 11, 2], 40),
    ("asia-1", "c-asia", [127, 0, 12, 1], 20),
    ("asia-2", "c-asia", [127, 0, 12, 2], 20),
];

/// The demo's areas: (name, home cluster, the host whose node runs its Director).
pub const AREAS: [(&str, &str, &str); 3] = [
    ("eu", "c-eu", "eu-1"),
    ("us", "c-us", "us-1"),
    ("asia", "c-asia", "asia-1"),
];

/// The demo's Controllers (hosts of their own).
pub const CONTROLLERS: [&str; 3] = ["ctl-1", "ctl-2", "ctl-3"];

/// The Replicator primary's host in the demo.
pub const ORIGIN: &str = "origin";

/// The deployment file of the demo: its areas with name servers on `dns_ports`, its
/// clusters with the web servers `webs`, and its nodes on free loopback ports. With
/// `replication` (a directory), the host [`ORIGIN`] is the Replicator primary of
/// `<dir>/site` and every web host a replica in `<dir>/replicas/<host>`.
pub fn demo_toml(
    webs: &[&DemoWeb],
    dns_ports: &[u16],
    replication: Option<&Path>,
) -> Result<String, DemoError> {
    let mut t = String::from(
        "site = \"example.com\"\n\
         [timing]\nround_period = \"1s\"\nreport_timeout = \"400ms\"\nreport_interval = \"500ms\"\n\
         [dns]\nttl = \"5s\"\n\
         [reporter]\npanic_after = 2\n\
         [controller]\nthreshold = 0.8\nmargin = 0.2\nuse_cpu = false\n",
    );
    for ((area, home, _), port) in AREAS.iter().zip(dns_ports) {
        t += &format!(
            "[areas.{area}]\nzone = \"area-{area}.example.com\"\nname_server = \"127.0.0.1:{port}\"\nhome_cluster = \"{home}\"\n"
        );
    }
    for w in webs {
        t += &format!(
            "[clusters.{}.servers.{}]\naddresses = [\"{}\"]\nstatus = \"nginx\"\nstatus_url = \"{}\"\nmax_workers = 100\n",
            w.cluster,
            w.name,
            w.addr.ip(),
            w.status_url()
        );
    }
    // Free for UDP and TCP: a node's QUIC port is also its TLS/TCP transfer port.
    let port = || free_dns_port().map_err(io("finding a free UDP and TCP port"));
    let client_port = || free_udp_port().map_err(io("finding a free UDP port"));
    for c in CONTROLLERS {
        t += &format!(
            "[nodes.{c}]\naddress = \"127.0.0.1:{}\"\nroles = [\"controller\"]\n",
            port()?
        );
    }
    for w in webs {
        let area = AREAS.iter().find(|(_, _, host)| *host == w.name);
        let mut roles = vec!["\"reporter\""];
        if area.is_some() {
            roles.push("\"director\"");
        }
        if replication.is_some() {
            roles.push("\"replicator\"");
        }
        t += &format!(
            "[nodes.{0}]\naddress = \"127.0.0.1:{1}\"\nroles = [{2}]\nserver = \"{0}\"\n",
            w.name,
            port()?,
            roles.join(", ")
        );
        match (area, client_attach(&w.name)) {
            // An area's Director host is a member and serves its area's clients.
            (Some((a, _, _)), _) => {
                t += &format!("area = \"{a}\"\nclient_port = {}\n", client_port()?);
            }
            (None, Some(attach)) => {
                let list: Vec<String> = attach.iter().map(|m| format!("\"{m}\"")).collect();
                t += &format!("tier = \"client\"\nattach = [{}]\n", list.join(", "));
            }
            (None, None) => {}
        }
        if let Some(dir) = replication {
            t += &format!(
                "replicator_root = \"{}\"\n",
                dir.join("replicas").join(&w.name).display()
            );
        }
    }
    if let Some(dir) = replication {
        // A client replica pulls over TLS/TCP (it has no QUIC streams to the primary).
        t += &format!(
            "[nodes.{ORIGIN}]\naddress = \"127.0.0.1:{}\"\nroles = [\"replicator\"]\n\
             [replicator]\nprimary = \"{ORIGIN}\"\nroot = \"{}\"\nkeep = 2\ntransport = \"tls-tcp\"\n",
            port()?,
            dir.join("site").display()
        );
    }
    Ok(t)
}

/// A client web host's attach list: its own area's Director host first, then the next
/// area's (fail-over); `None` for a host that is a member (an area's Director host).
pub fn client_attach(host: &str) -> Option<[&'static str; 2]> {
    let cluster = SERVERS.iter().find(|(n, ..)| *n == host)?.1;
    let i = AREAS.iter().position(|(_, home, _)| *home == cluster)?;
    if AREAS[i].2 == host {
        return None;
    }
    Some([AREAS[i].2, AREAS[(i + 1) % AREAS.len()].2])
}

// ----------------------------------------------------------------------------------------
// The run.

/// What the demo did.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    /// Every decision change printed (moves and answer changes), in order.
    pub changes: Vec<String>,
    /// How many of them moved an area to another cluster.
    pub moves: u64,
}

struct Narrator<W: Write> {
    out: W,
    start: Instant,
}

impl<W: Write> Narrator<W> {
    fn say(&mut self, line: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let _ = writeln!(self.out, "[{t:6.1}s] {line}");
        let _ = self.out.flush();
    }
    fn raw(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

/// The running Controllers that say they are master.
fn masters(cluster: &Cluster<TieredLayers>) -> Vec<String> {
    CONTROLLERS
        .iter()
        .filter(|c| {
            cluster
                .node(c)
                .and_then(|n| n.controller())
                .is_some_and(|h| h.status().is_master)
        })
        .map(|c| (*c).to_owned())
        .collect()
}

/// The master to show: the only one, or during a partition the one whose view is the
/// largest (the side with most hosts), with its status.
fn master(
    cluster: &Cluster<TieredLayers>,
) -> Option<(String, walrus_actors::controller::actor::ControllerStatus)> {
    masters(cluster)
        .into_iter()
        .filter_map(|m| {
            let rt = cluster.node(&m)?;
            let size = rt
                .layer()
                .member()
                .and_then(|g| g.view())
                .map_or(0, |v| v.members.len());
            Some((size, m.clone(), rt.controller()?.status()))
        })
        .max_by_key(|(size, _, _)| *size)
        .map(|(_, m, st)| (m, st))
}

fn sample(cluster: &Cluster<TieredLayers>) -> Sample {
    let mut s = Sample::default();
    if let Some((name, st)) = master(cluster) {
        let gcs = cluster.node(&name).and_then(|n| n.layer().member());
        s.view = gcs.and_then(|g| g.view());
        s.gcs = gcs.map(|g| g.stats());
        s.master = Some(name);
        s.controller = Some(st);
    }
    for name in cluster.running() {
        let Some(rt) = cluster.node(&name) else {
            continue;
        };
        if let Some(r) = rt.reporter() {
            s.reporters.insert(name.clone(), r.snapshot());
        }
        for (area, d) in rt.directors() {
            s.directors.insert(area.clone(), d.status.borrow().clone());
        }
        if let Some(c) = rt.layer().client() {
            let member = c.watch_member().borrow().as_ref().map(|m| m.to_string());
            s.clients.insert(name.clone(), member);
        }
        if s.view.is_none() {
            s.view = rt.layer().member().and_then(|g| g.view());
        }
    }
    s.replicator = cluster
        .node(ORIGIN)
        .and_then(|rt| rt.replicator().map(|r| r.borrow().clone()));
    s
}

/// Runs the demo, narrating to `out`, until the duration ends or `interrupt` completes.
pub async fn run<W: Write>(
    opts: DemoOptions,
    out: W,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<DemoSummary, DemoError> {
    let dir = std::env::temp_dir().join(format!("walrus-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let result = run_in(&dir, opts, out, interrupt).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in<W: Write>(
    dir: &Path,
    opts: DemoOptions,
    out: W,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<DemoSummary, DemoError> {
    let mut say = Narrator {
        out,
        start: Instant::now(),
    };
    let mut webs: BTreeMap<String, DemoWeb> = BTreeMap::new();
    let mut base: BTreeMap<String, u32> = BTreeMap::new();
    let site = dir.join("site");
    std::fs::create_dir_all(&site).map_err(io(format!("creating {}", site.display())))?;
    publish(&site, 1)?;
    for (name, cluster, ip, load) in SERVERS {
        let current = dir.join("replicas").join(name).join("current");
        let w =
            DemoWeb::start_serving(name, cluster, IpAddr::V4(Ipv4Addr::from(ip)), Some(current))?;
        w.set_busy(load);
        base.insert(name.to_owned(), load);
        webs.insert(name.to_owned(), w);
    }
    let mut dns_ports = Vec::new();
    for _ in AREAS {
        dns_ports.push(free_dns_port().map_err(io("finding a free DNS port"))?);
    }
    let list: Vec<&DemoWeb> = SERVERS.iter().filter_map(|s| webs.get(s.0)).collect();
    let toml = demo_toml(&list, &dns_ports, Some(dir))?;
    let config = Config::from_toml(&PathBuf::from("demo.toml"), &toml)?;
    say.raw("Walrus demo: three areas (eu, us, asia), three clusters of two web servers, three Controllers, on loopback.");
    let clients: Vec<String> = config
        .nodes
        .iter()
        .filter(|(_, n)| !n.is_member())
        .map(|(name, n)| format!("{name} → {}", n.attach.join(", then ")))
        .collect();
    say.raw(&format!(
        "Starting {} nodes (walrus-gcs over QUIC with mutual TLS), one of them the Replicator primary of the site's content: {} members, and {} web hosts as clients attached to their area's member ({}) ...",
        config.nodes.len(),
        config.nodes.len() - clients.len(),
        clients.len(),
        clients.join("; ")
    ));
    let observer: SharedObserver = Arc::new(Mutex::new(Observer::new("demo", &config)));
    let dashboard = StatusServer::start(opts.dashboard, observer.clone()).or_else(|_| {
        StatusServer::start(SocketAddr::new(opts.dashboard.ip(), 0), observer.clone())
    })?;
    let mut cluster = match Cluster::start(config.clone(), dir, TieredLayers).await {
        Ok(c) => c,
        Err(e) => {
            dashboard.stop().await;
            for w in webs.values_mut() {
                w.down().await;
            }
            return Err(e.into());
        }
    };
    say.raw(&format!("dashboard: http://{}/", dashboard.local_addr()));
    say.raw(&format!(
        "status:    walrus-node status --addr {}",
        dashboard.local_addr()
    ));
    say.raw("try:");
    for ((area, _, _), port) in AREAS.iter().zip(&dns_ports) {
        say.raw(&format!(
            "  dig @127.0.0.1 -p {port} www.area-{area}.example.com +short   # area {area}'s answer (www.example.com is a CNAME to it)"
        ));
    }
    if let Some(w) = webs.get("eu-1") {
        say.raw(&format!(
            "  curl http://{}/                      # web server eu-1",
            w.addr
        ));
    }
    say.raw("");

    let summary = drive(
        &mut say,
        &mut cluster,
        &mut webs,
        &base,
        &observer,
        &opts,
        &site,
        interrupt,
    )
    .await;

    say.raw("");
    say.raw(&format!(
        "demo over: {} area moves, {} answer changes in all:",
        summary.moves,
        summary.changes.len()
    ));
    for c in &summary.changes {
        say.raw(&format!("  {c}"));
    }
    dashboard.stop().await;
    cluster.stop_all().await;
    for w in webs.values_mut() {
        w.down().await;
    }
    Ok(summary)
}

/// Writes version `v` of the demo site into the primary's content root.
fn publish(site: &Path, v: u32) -> Result<(), DemoError> {
    let index = site.join("index.html");
    std::fs::write(
        &index,
        format!("Walrus demo site, version {v} (replicated from the primary `{ORIGIN}`)\n"),
    )
    .map_err(io(format!("writing {}", index.display())))
}

/// Replication as the demo narrates it: the primary's generation and, once every web
/// host's replica serves it, a line saying so (once per generation).
/// How long the script waits for the initial content to reach every web server.
const INITIAL_CONTENT_PATIENCE: Duration = Duration::from_secs(15);

struct ReplicationWatch {
    printed: Option<u64>,
    changed_at: Option<Instant>,
}

impl ReplicationWatch {
    fn check(&mut self, cluster: &Cluster<TieredLayers>) -> Option<String> {
        let gen_of = |n: &str| {
            cluster
                .node(n)
                .and_then(|rt| rt.replicator().map(|r| r.borrow().generation))
                .flatten()
                .map(|g| g.0)
        };
        let primary = gen_of(ORIGIN)?;
        if self.printed == Some(primary) {
            return None;
        }
        let hosts: Vec<Option<u64>> = SERVERS.iter().map(|(n, ..)| gen_of(n)).collect();
        if !hosts.iter().all(|g| *g == Some(primary)) {
            return None;
        }
        self.printed = Some(primary);
        let after = self
            .changed_at
            .take()
            .map(|t| format!(", {:.1} s after the change", t.elapsed().as_secs_f64()))
            .unwrap_or_default();
        Some(format!(
            "replication: all {} web servers serve content generation {primary}{after}",
            hosts.len()
        ))
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<W: Write>(
    say: &mut Narrator<W>,
    cluster: &mut Cluster<TieredLayers>,
    webs: &mut BTreeMap<String, DemoWeb>,
    base: &BTreeMap<String, u32>,
    observer: &SharedObserver,
    opts: &DemoOptions,
    site: &Path,
    interrupt: impl std::future::Future<Output = ()>,
) -> DemoSummary {
    let mut replication = ReplicationWatch {
        printed: None,
        changed_at: None,
    };
    tokio::pin!(interrupt);
    let mut summary = DemoSummary::default();
    let mut steps = script(opts.scenario).into_iter().peekable();
    let mut steady: Option<Instant> = None;
    let mut last_masters: Vec<String> = Vec::new();
    let mut killed: Option<String> = None;
    // The web server killed last and when: a move by an early round (fast failover) is
    // narrated with the time since the failure.
    let mut web_killed: Option<(String, Instant)> = None;
    let mut overloaded: BTreeMap<String, u32> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut interrupt => { say.say("interrupted"); break; }
            _ = tick.tick() => {}
        }
        n += 1;
        if opts.duration.is_some_and(|d| say.start.elapsed() >= d) {
            break;
        }
        // Synthetic load that moves: a slow wave around each server's background load.
        if n.is_multiple_of(10) {
            let t = say.start.elapsed().as_secs_f64();
            for (i, (name, w)) in webs.iter().enumerate() {
                let cluster_load = overloaded.get(&w.cluster).copied();
                let b = f64::from(base.get(name).copied().unwrap_or(30));
                let wave = 6.0 * (t / 7.0 + i as f64).sin();
                let v = cluster_load.map_or(b + wave, f64::from);
                w.set_busy(v.round().clamp(0.0, 100.0) as u32);
            }
        }
        let s = sample(cluster);
        let added = status::lock(observer).observe(s);
        if let Some(line) = replication.check(cluster) {
            say.say(&line);
            status::lock(observer).note(line);
        }
        let masters_now = masters(cluster);
        if !masters_now.is_empty() && masters_now != last_masters {
            match masters_now.as_slice() {
                [one] => say.say(&format!("master Controller: {one}")),
                many => say.say(&format!(
                    "master Controllers: {} (one per side of the partition)",
                    many.join(", ")
                )),
            }
            last_masters = masters_now;
        }
        summary.moves = status::lock(observer).counters().area_moves;
        for line in added {
            say.say(&line);
            if let Some((name, at)) = &web_killed {
                if line.contains(&format!("early round (urgent report from {name})")) {
                    // "round 9: area eu → c-asia (from c-eu), ..." → "area eu → c-asia".
                    let what = line
                        .split_once(": ")
                        .and_then(|(_, rest)| rest.split(" (from").next())
                        .filter(|w| w.contains('→'))
                        .map_or("its area's answer changed".to_owned(), str::to_owned);
                    say.say(&format!(
                        "fast failover: {name} refused connections: {what}, {:.1} s after the \
                         failure (its Reporter told the master at once; no wait for the next round)",
                        at.elapsed().as_secs_f64()
                    ));
                }
            }
            summary.changes.push(line);
        }
        // The script starts once rounds run and every web server serves the initial content:
        // until a replica has it, the Controller rightly gives its server no clients
        // (`stale_content`), and that start-up move must not pass for a scripted one.
        if steady.is_none() && status::lock(observer).doc().round.is_some() {
            let waited = say.start.elapsed();
            if replication.printed.is_some() {
                steady = Some(Instant::now());
                say.say(
                    "rounds are running and every web server has the content; the script starts",
                );
            } else if waited >= INITIAL_CONTENT_PATIENCE {
                steady = Some(Instant::now());
                say.say(&format!(
                    "not every web server has the initial content after {} s; the script starts anyway",
                    waited.as_secs()
                ));
            }
        }
        let Some(t0) = steady else { continue };
        while let Some((at, _, _)) = steps.peek() {
            if t0.elapsed() < Duration::from_secs(*at) {
                break;
            }
            let Some((_, step, text)) = steps.next() else {
                break;
            };
            if !text.is_empty() {
                say.say(&format!("EVENT: {text}"));
                status::lock(observer).note(format!("event: {text}"));
            }
            match step {
                Step::KillWeb(name) => {
                    if let Some(w) = webs.get_mut(name) {
                        w.down().await;
                        web_killed = Some((name.to_string(), Instant::now()));
                    }
                }
                Step::StartWeb(name) => {
                    if let Some(w) = webs.get_mut(name) {
                        if let Err(e) = w.up() {
                            say.say(&format!("could not restart {name}: {e}"));
                        }
                    }
                }
                Step::Load(c, busy) => {
                    overloaded.insert(c.to_owned(), busy);
                }
                Step::Calm(c) => {
                    overloaded.remove(c);
                }
                Step::KillMaster => match master(cluster) {
                    Some((m, _)) => {
                        say.say(&format!("killing {m}"));
                        cluster.kill_node(&m).await;
                        killed = Some(m);
                    }
                    None => say.say("no single master right now; nothing killed"),
                },
                Step::RestartController => {
                    if let Some(k) = killed.take() {
                        if let Err(e) = cluster.start_node(&k).await {
                            say.say(&format!("could not restart {k}: {e}"));
                        }
                    }
                }
                Step::Publish(v) => match publish(site, v) {
                    Ok(()) => replication.changed_at = Some(Instant::now()),
                    Err(e) => say.say(&format!("could not change the content: {e}")),
                },
                Step::Partition => partition(say, cluster),
                Step::Heal => heal(say, cluster),
            }
        }
    }
    summary
}

/// Cuts area asia's hosts and one backup Controller off from the rest.
fn partition<W: Write>(say: &mut Narrator<W>, cluster: &Cluster<TieredLayers>) {
    let masters = masters(cluster);
    let running = cluster.running();
    let Some(backup) = CONTROLLERS
        .iter()
        .rev()
        .find(|c| running.iter().any(|r| r == *c) && !masters.iter().any(|m| m == *c))
    else {
        say.say("no backup Controller running; partition skipped");
        return;
    };
    let side_b: Vec<&str> = vec!["asia-1", "asia-2", backup];
    let side_a: Vec<&str> = running
        .iter()
        .map(String::as_str)
        .filter(|n| !side_b.contains(n))
        .collect();
    say.say(&format!(
        "sides: {{{}}} | {{{}}}",
        side_a.join(", "),
        side_b.join(", ")
    ));
    cluster.partition(&[&side_a, &side_b]);
}

fn heal<W: Write>(_say: &mut Narrator<W>, cluster: &Cluster<TieredLayers>) {
    cluster.heal();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's web servers as values (not started), for its file.
    fn idle_webs() -> Vec<DemoWeb> {
        SERVERS
            .iter()
            .map(|(n, c, ip, _)| DemoWeb {
                name: (*n).to_owned(),
                cluster: (*c).to_owned(),
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(*ip)), 8080),
                busy: Arc::default(),
                hits: Arc::default(),
                content: None,
                running: None,
            })
            .collect()
    }

    #[test]
    fn scenarios_parse_and_unknown_ones_are_named() {
        assert_eq!("tour".parse::<Scenario>().unwrap(), Scenario::Tour);
        assert_eq!("quiet".parse::<Scenario>().unwrap(), Scenario::Quiet);
        let e = "storm".parse::<Scenario>().unwrap_err();
        assert!(e.to_string().contains("known: tour"), "{e}");
    }

    #[test]
    fn the_demo_file_makes_origin_the_primary_and_every_web_host_a_replica() {
        let webs = idle_webs();
        let list: Vec<&DemoWeb> = webs.iter().collect();
        let dir = Path::new("/tmp/demo-x");
        let text = demo_toml(&list, &[5301, 5302, 5303], Some(dir)).unwrap();
        let c = Config::from_toml(Path::new("demo.toml"), &text).unwrap();
        let r = c.replicator.as_ref().unwrap();
        assert_eq!(r.primary.as_str(), ORIGIN);
        assert_eq!(
            r.root_of(c.nodes[ORIGIN].replicator_root.as_deref()),
            dir.join("site")
        );
        for (n, ..) in SERVERS {
            let node = &c.nodes[n];
            assert!(node.roles.contains(&crate::config::Role::Replicator), "{n}");
            assert_eq!(
                r.root_of(node.replicator_root.as_deref()),
                dir.join("replicas").join(n)
            );
        }
        let plain = demo_toml(&list, &[5301, 5302, 5303], None).unwrap();
        assert!(Config::from_toml(Path::new("demo.toml"), &plain)
            .unwrap()
            .replicator
            .is_none());
    }

    #[test]
    fn the_demo_file_makes_each_areas_second_web_host_a_client_of_its_director_host() {
        let webs = idle_webs();
        let list: Vec<&DemoWeb> = webs.iter().collect();
        let text = demo_toml(&list, &[5301, 5302, 5303], Some(Path::new("/tmp/demo-x"))).unwrap();
        let c = Config::from_toml(Path::new("demo.toml"), &text).unwrap();
        let clients: Vec<(&str, Vec<&str>)> = c
            .nodes
            .iter()
            .filter(|(_, n)| !n.is_member())
            .map(|(name, n)| (name.as_str(), n.attach.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            clients,
            vec![
                ("asia-2", vec!["asia-1", "eu-1"]),
                ("eu-2", vec!["eu-1", "us-1"]),
                ("us-2", vec!["us-1", "asia-1"]),
            ]
        );
        for (_, _, host) in AREAS {
            assert!(c.nodes[host].is_member(), "{host}");
            assert!(c.nodes[host].client_port.is_some(), "{host}");
        }
        // The file is valid as it stands, with no warning (a client attaches to a member
        // of its own area first).
        assert_eq!(
            c.warnings()
                .iter()
                .filter(|w| !w.contains("name_server port"))
                .count(),
            0,
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn served_files_stay_under_the_content_dir() {
        let dir = std::env::temp_dir().join(format!("walrus-demo-serve-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("index.html"), "v1\n").unwrap();
        std::fs::write(dir.join("sub/a.txt"), "a").unwrap();
        assert_eq!(serve_file(&dir, "/", "by x\n").status(), 200);
        assert_eq!(serve_file(&dir, "/sub/a.txt", "").status(), 200);
        for bad in ["/../etc/passwd", "/sub/../../x", "/sub//a.txt", "/missing"] {
            assert_eq!(serve_file(&dir, bad, "").status(), 404, "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn scripts_are_in_time_order() {
        for s in [Scenario::Tour, Scenario::Failover, Scenario::Quiet] {
            let v = script(s);
            assert!(v.windows(2).all(|w| w[0].0 <= w[1].0), "{s:?}");
        }
    }
}
