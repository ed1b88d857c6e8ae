//! The real Walrus in the lab ([`Mode::Runtime`]): one `walrus.toml` for the run, the
//! group's certificates (`walrus-node certs`), and `walrus-node run` processes in the area
//! namespaces; plus the scenario events played against them (a cluster dies, overloads,
//! the master dies, a partition) and the watcher that records, from outside, every answer
//! the area name servers give and who is master.
//!
//! Nodes of area A (group communication over QUIC on its backbone address, so every
//! packet between areas crosses the backbone bridge and can be cut by nftables):
//!
//! ```text
//!   aA-c    controller                        :7400   status :9400
//!   aA-d    director (embedded name server    :7401   status :9401
//!           on :53, source steering) + reporter of web server 1
//!   aA-sK   reporter of web server K (K ≥ 2)  :740K
//! ```
//!
//! The Controllers run in processes of their own, so killing the master kills no name
//! server and no Reporter. The Reporters read their nginx's `stub_status` on the backbone
//! (`use_cpu = false`: every server shares this machine's CPU, so the CPU figure says
//! nothing about any one of them; the load is busy connections / `max_workers`).

use super::clients::stub_query;
use super::netns::{run, ChildGuard, LabError};
use super::relay::now_ms;
use super::spec::{Area, LabSpec, Mode, AREAS_PARENT, SITE, WEB_PORT_BASE};
use hickory_proto::rr::RecordType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `max_workers` given for every lab nginx: the Reporter's load is busy connections over
/// this.
pub const MAX_WORKERS: u32 = 40;
/// The Controllers' threshold.
pub const THRESHOLD: f64 = 0.8;
/// First group-communication port of an area's nodes.
pub const GCS_PORT: u16 = 7400;
/// First status port of an area's nodes.
pub const STATUS_PORT: u16 = 9400;
/// The nftables table the partition adds in an area's namespace.
const NFT_TABLE: &str = "walruslab";

/// One `walrus-node` process of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNode {
    /// Its node name in `walrus.toml`.
    pub name: String,
    /// Its area (namespace).
    pub area: Area,
    /// Index within the area: 0 controller, 1 director + reporter of server 1, k reporter
    /// of server k.
    pub index: u8,
}

impl LabNode {
    /// Group-communication address.
    pub fn gcs(&self) -> SocketAddr {
        SocketAddr::new(
            self.area.backbone().into(),
            GCS_PORT + u16::from(self.index),
        )
    }
    /// Status address (controller and director only).
    pub fn status(&self) -> Option<SocketAddr> {
        (self.index <= 1).then(|| {
            SocketAddr::new(
                self.area.backbone().into(),
                STATUS_PORT + u16::from(self.index),
            )
        })
    }
    /// Whether it runs a Controller.
    pub fn is_controller(&self) -> bool {
        self.index == 0
    }
}

/// Every node of a run, area by area.
pub fn nodes(spec: &LabSpec) -> Vec<LabNode> {
    let mut v = Vec::new();
    for a in spec.all_areas() {
        v.push(LabNode {
            name: format!("{a}-c"),
            area: a,
            index: 0,
        });
        v.push(LabNode {
            name: format!("{a}-d"),
            area: a,
            index: 1,
        });
        for k in 2..=spec.servers_per_cluster {
            v.push(LabNode {
                name: format!("{a}-s{k}"),
                area: a,
                index: k,
            });
        }
    }
    v
}

fn server_name(a: Area, k: u8) -> String {
    format!("{a}-s{k}")
}

/// What a run of the real runtime may change beyond the lab's layout (the WAN lab,
/// [`super::wan`], issue 18). The default is the steering lab's LAN run.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// The `[timing]` table's body; `None`: 1 s rounds, 400 ms report timeout, `lan`.
    pub timing: Option<String>,
    /// More lines for the `[controller]` table (e.g. `generation_grace`).
    pub controller: String,
    /// Content replication: every Reporter node also runs a Replicator, area 1's
    /// Director node is the primary with its root at `<dir>/primary`, each replica's root
    /// is `<dir>/<node>`.
    pub replicator: Option<PathBuf>,
}

/// The Replicator primary's node when [`RuntimeOptions::replicator`] is set.
pub const REPLICATOR_PRIMARY: &str = "a1-d";

/// The run's `walrus.toml` (see [`config_toml_with`]) for the steering lab.
pub fn config_toml(spec: &LabSpec, rt_dir: &Path) -> String {
    config_toml_with(spec, rt_dir, &RuntimeOptions::default())
}

/// The run's `walrus.toml`: areas with their zones (`ns_addresses` = the relayed public
/// address resolvers use), clusters with nginx status pages, the nodes above, a 1 s round
/// (or `opts.timing`), the run's TTL; steering by the mode: none (`walrus-runtime`, the
/// paper's rule), the lab's ground truth as a table (`walrus-runtime-oracle-table`, an
/// oracle), or learned (`walrus-learned`: `[dns.learned] enabled = true`).
pub fn config_toml_with(spec: &LabSpec, rt_dir: &Path, opts: &RuntimeOptions) -> String {
    let d = rt_dir.display();
    let mut t = String::new();
    let _ = writeln!(t, "site = \"{SITE}\"\n");
    // The status pages listen on the lab's backbone, inside namespaces this run made.
    let _ = writeln!(t, "[http]\nallow_plain_public = true\n");
    let timing = opts.timing.clone().unwrap_or_else(|| {
        "round_period = \"1s\"\nreport_timeout = \"400ms\"\n\
         report_interval = \"500ms\"\ngcs_profile = \"lan\"\n"
            .into()
    });
    let _ = writeln!(t, "[timing]\n{timing}");
    let _ = writeln!(
        t,
        "[controller]\nthreshold = {THRESHOLD}\nmargin = 0.2\nmax_records = 20\nuse_cpu = false\n{}",
        opts.controller
    );
    let _ = writeln!(
        t,
        "[dns]\nbackend = \"embedded\"\nmode = \"director\"\nttl = \"{}s\"\n\
         state_dir = \"{d}/dns\"",
        spec.ttl_secs
    );
    match spec.mode {
        // The oracle: the lab's ground truth as a hand-written table.
        Mode::RuntimeOracleTable => {
            let rules: Vec<String> = spec
                .all_regions()
                .map(|r| {
                    format!(
                        "{{ source = \"{}\", area = \"{}\" }}",
                        r.resolver_prefix(),
                        spec.nearest(r)
                    )
                })
                .collect();
            let _ = writeln!(t, "steering = [{}]\n", rules.join(", "));
        }
        // No table: the servers learn (issue 21).
        Mode::Learned => {
            let _ = writeln!(t, "\n[dns.learned]\nenabled = true\n");
        }
        // No table: the paper's rule.
        _ => t.push('\n'),
    }
    let _ = writeln!(
        t,
        "[reporter]\nbypass_file = \"{d}/no-bypass\"\npanic_after = 3\n"
    );
    let _ = writeln!(t, "[notify]\ndead_after = \"5m\"\n");
    let _ = writeln!(t, "[tls]\nca = \"{d}/certs/ca.pem\"\ndir = \"{d}/certs\"\n");
    for a in spec.all_areas() {
        let _ = writeln!(
            t,
            "[areas.{a}]\nzone = \"{a}.{AREAS_PARENT}\"\nname_server = \"{}:53\"\n\
             home_cluster = \"c{}\"\nns_addresses = [\"{}\"]\n",
            a.backbone(),
            a.0,
            a.ns_public()
        );
    }
    for a in spec.all_areas() {
        for k in 1..=spec.servers_per_cluster {
            let _ = writeln!(
                t,
                "[clusters.c{}.servers.{}]\naddresses = [\"{}\"]\nstatus = \"nginx\"\n\
                 status_url = \"http://{}:{}/nginx_status\"\nmax_workers = {MAX_WORKERS}\n",
                a.0,
                server_name(a, k),
                a.web_public(k),
                a.backbone(),
                WEB_PORT_BASE + u16::from(k)
            );
        }
    }
    if let Some(content) = &opts.replicator {
        let _ = writeln!(
            t,
            "[replicator]\nprimary = \"{REPLICATOR_PRIMARY}\"\nroot = \"{}/primary\"\nkeep = 1\n",
            content.display()
        );
    }
    let repl = if opts.replicator.is_some() {
        ", \"replicator\""
    } else {
        ""
    };
    for n in nodes(spec) {
        let _ = writeln!(t, "[nodes.{}]\naddress = \"{}\"", n.name, n.gcs());
        match n.index {
            0 => {
                let _ = writeln!(t, "roles = [\"controller\"]");
            }
            1 => {
                let _ = writeln!(
                    t,
                    "roles = [\"director\", \"reporter\"{repl}]\nserver = \"{}\"\narea = \"{}\"",
                    server_name(n.area, 1),
                    n.area
                );
            }
            k => {
                let _ = writeln!(
                    t,
                    "roles = [\"reporter\"{repl}]\nserver = \"{}\"",
                    server_name(n.area, k)
                );
            }
        }
        if let (Some(content), true) = (&opts.replicator, n.index >= 1) {
            let root = if n.name == REPLICATOR_PRIMARY {
                "primary"
            } else {
                &n.name
            };
            let _ = writeln!(t, "replicator_root = \"{}/{root}\"", content.display());
        }
        if let Some(s) = n.status() {
            let _ = writeln!(t, "status_addr = \"{s}\"");
        }
        t.push('\n');
    }
    t
}

/// The `walrus-node` binary: `$WALRUS_NODE`, else next to `walrus-lab` (Cargo puts every
/// workspace binary in the same target directory).
pub fn node_binary(lab_exe: &Path) -> Result<PathBuf, LabError> {
    let p = std::env::var_os("WALRUS_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| lab_exe.with_file_name("walrus-node"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(LabError::Command {
            cmd: p.display().to_string(),
            detail: "walrus-node not found: run `cargo build -p walrus-node` (or set WALRUS_NODE)"
                .into(),
        })
    }
}

/// For the tests that run the lab: makes sure `walrus-node` is next to `walrus-lab`
/// (Cargo's target directory), building it if missing (unless `$WALRUS_NODE` names one).
pub fn ensure_walrus_node(lab: &Path) -> Result<(), LabError> {
    if std::env::var_os("WALRUS_NODE").is_some() || lab.with_file_name("walrus-node").is_file() {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(&cargo)
        .args(["build", "-p", "walrus-node", "--bin", "walrus-node"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| LabError::Command {
            cmd: format!("{cargo} build -p walrus-node"),
            detail: e.to_string(),
        })?;
    if st.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            cmd: format!("{cargo} build -p walrus-node"),
            detail: st.to_string(),
        })
    }
}

/// Writes the run's certificates and `walrus.toml` under `<run dir>/rt`; returns the
/// configuration's path.
pub fn prepare(spec: &LabSpec, node_bin: &Path) -> Result<PathBuf, LabError> {
    prepare_with(spec, node_bin, &RuntimeOptions::default())
}

/// [`prepare`] with the configuration of [`config_toml_with`].
pub fn prepare_with(
    spec: &LabSpec,
    node_bin: &Path,
    opts: &RuntimeOptions,
) -> Result<PathBuf, LabError> {
    let rt = spec.dir.join("rt");
    let certs = rt.join("certs");
    let _ = std::fs::remove_dir_all(&rt);
    std::fs::create_dir_all(rt.join("dns")).map_err(|source| LabError::Io {
        path: rt.display().to_string(),
        source,
    })?;
    let bin = node_bin.display().to_string();
    let c = certs.display().to_string();
    run(&bin, &["certs", "init", "--dir", &c])?;
    let names: Vec<String> = nodes(spec).into_iter().map(|n| n.name).collect();
    let mut args = vec!["certs", "issue", "--dir", &c];
    args.extend(names.iter().map(String::as_str));
    run(&bin, &args)?;
    let path = rt.join("walrus.toml");
    std::fs::write(&path, config_toml_with(spec, &rt, opts)).map_err(|source| LabError::Io {
        path: path.display().to_string(),
        source,
    })?;
    run(
        &bin,
        &["check-config", "--config", &path.display().to_string()],
    )?;
    Ok(path)
}

/// Guard name of a node's process.
pub fn what(node: &LabNode) -> String {
    what_of(&node.name)
}

/// Guard name of the process of the node called `name`.
pub fn what_of(name: &str) -> String {
    format!("walrus-node {name}")
}

/// Starts one node in its area's namespace.
pub fn start_node(
    spec: &LabSpec,
    node_bin: &Path,
    config: &Path,
    node: &LabNode,
) -> Result<ChildGuard, LabError> {
    let c = config.display().to_string();
    super::netns::spawn_in(
        &spec.ns_area(node.area),
        &what(node),
        &node_bin.display().to_string(),
        &["run", "--config", &c, "--node", &node.name],
        &spec.dir.join("rt").join(format!("{}.log", node.name)),
    )
}

/// Cuts (`cut = true`) or heals group-communication traffic between `area` and every
/// other area: nftables rules in `area`'s namespace drop UDP to or from the other areas'
/// backbone addresses on the group ports (both directions, either end's port).
pub fn partition(spec: &LabSpec, area: Area, cut: bool) -> Result<(), LabError> {
    let ns = spec.ns_area(area);
    if !cut {
        run(
            "ip",
            &[
                "netns", "exec", &ns, "nft", "delete", "table", "inet", NFT_TABLE,
            ],
        )?;
        return Ok(());
    }
    let others: Vec<String> = spec
        .all_areas()
        .filter(|a| *a != area)
        .map(|a| a.backbone().to_string())
        .collect();
    let set = others.join(", ");
    let ports = format!("{GCS_PORT}-{}", GCS_PORT + 99);
    let script = format!(
        "table inet {NFT_TABLE} {{\n\
         chain in {{ type filter hook input priority 0; policy accept;\n\
         ip saddr {{ {set} }} udp dport {ports} drop\n\
         ip saddr {{ {set} }} udp sport {ports} drop\n}}\n\
         chain out {{ type filter hook output priority 0; policy accept;\n\
         ip daddr {{ {set} }} udp dport {ports} drop\n\
         ip daddr {{ {set} }} udp sport {ports} drop\n}}\n}}\n"
    );
    let file = spec.dir.join("rt").join(format!("partition-{area}.nft"));
    std::fs::write(&file, script).map_err(|source| LabError::Io {
        path: file.display().to_string(),
        source,
    })?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            "nft",
            "-f",
            &file.display().to_string(),
        ],
    )?;
    Ok(())
}

// ----------------------------------------------------------------------------------------
// The watcher: what every area server answers, and who is master, over time.

/// One observation of the watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "kebab-case")]
pub enum Watch {
    /// Area `area`'s server answered `www.<area zone>` with `addrs` (logged on change).
    Answer {
        /// Unix ms.
        t: u64,
        /// The area.
        area: u8,
        /// The A records, sorted.
        addrs: Vec<Ipv4Addr>,
    },
    /// What controller `node`'s status page said (logged on change; `None`: no answer).
    Master {
        /// Unix ms.
        t: u64,
        /// The controller node.
        node: String,
        /// Whether it says it is master (`None`: the page did not answer).
        is_master: Option<bool>,
        /// The master it knows.
        master: Option<String>,
    },
}

/// The `watch` role (run in region 1's namespace, which reaches every area's backbone
/// address directly, without the relay): every 100 ms asks each area server for
/// `www.<area zone>` and every 250 ms each Controller's `/status`; appends each change to
/// `<dir>/watch.jsonl` until killed.
pub async fn watch(spec: LabSpec) -> anyhow::Result<()> {
    let path = spec.dir.join("watch.jsonl");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut last_answer: BTreeMap<u8, Vec<Ipv4Addr>> = Default::default();
    let mut last_master: std::collections::BTreeMap<String, (Option<bool>, Option<String>)> =
        Default::default();
    let controllers: Vec<LabNode> = nodes(&spec)
        .into_iter()
        .filter(LabNode::is_controller)
        .collect();
    let mut tick: u64 = 0;
    loop {
        for (area, addrs) in poll_answers(&spec, &mut last_answer).await {
            let w = Watch::Answer {
                t: now_ms(),
                area,
                addrs,
            };
            writeln!(out, "{}", serde_json::to_string(&w)?)?;
        }
        if tick.is_multiple_of(2) {
            for c in &controllers {
                let Some(addr) = c.status() else { continue };
                let seen = status_master(addr).await;
                if last_master.get(&c.name) != Some(&seen) {
                    let w = Watch::Master {
                        t: now_ms(),
                        node: c.name.clone(),
                        is_master: seen.0,
                        master: seen.1.clone(),
                    };
                    writeln!(out, "{}", serde_json::to_string(&w)?)?;
                    last_master.insert(c.name.clone(), seen);
                }
            }
        }
        out.flush()?;
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks every area's name server for `www.<area zone>` (from a namespace that reaches the
/// backbone); returns the areas whose answer changed since `last` (which it updates), with
/// the new addresses, sorted. An empty or failed answer is no change.
pub async fn poll_answers(
    spec: &LabSpec,
    last: &mut BTreeMap<u8, Vec<Ipv4Addr>>,
) -> Vec<(u8, Vec<Ipv4Addr>)> {
    let mut changed = Vec::new();
    for a in spec.all_areas() {
        let ns = SocketAddr::new(a.backbone().into(), 53);
        let name = format!("www.{}", a.zone());
        if let Ok(ans) = stub_query(ns, &name, RecordType::A, Duration::from_millis(300)).await {
            let mut addrs = ans.addrs;
            addrs.sort();
            if last.get(&a.0) != Some(&addrs) && !addrs.is_empty() {
                last.insert(a.0, addrs.clone());
                changed.push((a.0, addrs));
            }
        }
    }
    changed
}

/// A node's `/status` document (`None` when it does not answer within 500 ms).
pub async fn status_doc(addr: SocketAddr) -> Option<serde_json::Value> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(Duration::from_millis(500), get)
        .await
        .ok()
        .flatten()
}

/// `(is_master, master)` from a node's `/status` (`(None, None)` when it does not answer).
async fn status_master(addr: SocketAddr) -> (Option<bool>, Option<String>) {
    match status_doc(addr).await {
        Some(doc) => (
            doc.get("is_master").and_then(serde_json::Value::as_bool),
            doc.get("master")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        ),
        None => (None, None),
    }
}

/// The `hold` role: opens `conns` connections to `addr`, sends half a request line on
/// each and keeps them open for `secs` (slow clients: nginx counts them as `Reading`).
pub async fn hold(addr: SocketAddr, conns: u32, secs: u64) -> anyhow::Result<()> {
    let mut held = Vec::new();
    for _ in 0..conns {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\n").await?;
        held.push(s);
    }
    println!("holding {} connections to {addr}", held.len());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(held);
    Ok(())
}

/// The master as the controllers' status pages said at time `t` (the last `Master`
/// observations at or before `t` that claim mastership).
pub fn masters_at(watch: &[Watch], t: u64) -> Vec<String> {
    let mut state: std::collections::BTreeMap<&str, bool> = Default::default();
    for w in watch {
        if let Watch::Master {
            t: wt,
            node,
            is_master,
            ..
        } = w
        {
            if *wt <= t {
                state.insert(node, is_master.unwrap_or(false));
            }
        }
    }
    state
        .into_iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| n.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::base_spec;

    #[test]
    fn every_node_has_its_own_ports_and_the_config_names_them() {
        let mut spec = base_spec(Path::new("/tmp/x"), "t", 3, 3, Mode::Runtime);
        let n = nodes(&spec);
        assert_eq!(n.len(), 9);
        let mut gcs: Vec<SocketAddr> = n.iter().map(LabNode::gcs).collect();
        gcs.sort();
        gcs.dedup();
        assert_eq!(gcs.len(), 9);
        let t = config_toml(&spec, Path::new("/tmp/x/rt"));
        assert!(
            t.contains("[nodes.a2-c]\naddress = \"10.255.0.12:7400\""),
            "{t}"
        );
        assert!(!t.contains("steering"), "no table: the paper's rule\n{t}");
        assert!(t.contains("ns_addresses = [\"10.1.0.53\"]"), "{t}");
        spec.mode = Mode::RuntimeOracleTable;
        let t = config_toml(&spec, Path::new("/tmp/x/rt"));
        assert!(
            t.contains("{ source = \"10.200.3.0/24\", area = \"a3\" }"),
            "{t}"
        );
        spec.mode = Mode::Learned;
        let t = config_toml(&spec, Path::new("/tmp/x/rt"));
        assert!(t.contains("[dns.learned]\nenabled = true\n"), "{t}");
        assert!(!t.contains("steering"), "{t}");
        assert!(t.contains("ns_addresses = [\"10.1.0.53\"]"), "{t}");
        assert!(t.contains("status_url = \"http://10.255.0.12:8002/nginx_status\""));
    }

    #[test]
    fn masters_at_follows_the_last_word_of_each_controller() {
        let m = |t, node: &str, is: Option<bool>| Watch::Master {
            t,
            node: node.into(),
            is_master: is,
            master: None,
        };
        let w = vec![
            m(1, "a1-c", Some(true)),
            m(1, "a2-c", Some(false)),
            m(5, "a1-c", None),
            m(7, "a2-c", Some(true)),
        ];
        assert_eq!(masters_at(&w, 2), vec!["a1-c"]);
        assert!(masters_at(&w, 6).is_empty());
        assert_eq!(masters_at(&w, 9), vec!["a2-c"]);
    }
}
