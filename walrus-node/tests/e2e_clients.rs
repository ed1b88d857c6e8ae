//! Web hosts as clients, with real processes on loopback (issue 24): three members
//! (`m1`–`m3`: Controllers, `m1`/`m2` also the Directors of areas a1/a2 with embedded name
//! servers, each serving clients on its `client_port`) and two web hosts `w1`, `w2` that
//! attach as clients (`tier = "client"`) and run the Reporters of real nginx servers
//! (`stub_status`), one per cluster, and replicas of `m1`'s content (pulled over TLS/TCP
//! with their client certificates). Certificates come from `walrus-node certs issue
//! --config` (members by name, clients as `client.NAME`).
//!
//! 1. The master's rounds hold both client hosts' reports, with the content generation
//!    their replicas pulled; the members' view holds the three members only.
//! 2. `w1` SIGKILLed: the Controller treats its cluster c1 as down (its server is dead,
//!    area a1 moves to c2) and no member's view changes (same view id, no view installed).
//! 3. `m3`, the member `w2` is attached to, SIGKILLed: `w2` attaches to the next member of
//!    its list (`m1`) and its reports go on feeding the rounds.
//!
//! Every wait is a poll with a generous deadline; nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use walrus_testkit::prelude::*;

const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

/// The deployment; fields drop in order: node processes, then nginx, then the directory.
struct Hosts {
    nodes: BTreeMap<String, NodeProcess>,
    _nginx: Vec<Nginx>,
    status: BTreeMap<String, SocketAddr>,
    config: PathBuf,
    dir: TempDir,
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_walrus-node")
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "walrus-node {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Hosts {
    fn start() -> Self {
        let dir = TempDir::new("e2e-clients");
        let root = dir.path().to_owned();
        let certs = root.join("certs");
        let mut toml = format!(
            "site = \"example.com\"\n\
             [timing]\nround_period = \"500ms\"\nreport_timeout = \"250ms\"\nreport_interval = \"200ms\"\n\
             [controller]\nuse_cpu = false\n\
             [dns]\nttl = \"5s\"\nstate_dir = \"{0}/dns\"\n\
             [reporter]\nbypass_file = \"{0}/bypass\"\npanic_after = 2\n\
             [tls]\nca = \"{1}/ca.pem\"\ndir = \"{1}\"\n\
             [replicator]\nprimary = \"m1\"\nroot = \"{0}/site\"\ntransport = \"tls-tcp\"\n",
            root.display(),
            certs.display()
        );
        std::fs::create_dir_all(root.join("site")).unwrap();
        std::fs::write(root.join("site/index.html"), "version 1\n").unwrap();
        let mut nginx = Vec::new();
        for c in 1..=2u8 {
            let ip = Ipv4Addr::new(127, 61, c, 1);
            let addr = SocketAddr::from((ip, free_tcp_port(ip)));
            nginx.push(Nginx::serve(&root.join(format!("nginx-c{c}")), addr));
            toml += &format!(
                "[clusters.c{c}.servers.c{c}-s1]\naddresses = [\"{ip}\"]\nstatus = \"nginx\"\n\
                 status_url = \"http://{addr}/nginx_status\"\nmax_workers = 256\n\
                 [areas.a{c}]\nzone = \"area-a{c}.example.com\"\nname_server = \"127.0.0.1:{}\"\nhome_cluster = \"c{c}\"\n",
                free_dns_port()
            );
        }
        let mut status = BTreeMap::new();
        let nodes = [
            (
                "m1",
                "roles = [\"controller\", \"director\", \"replicator\"]\narea = \"a1\"\n",
            ),
            ("m2", "roles = [\"controller\", \"director\"]\narea = \"a2\"\n"),
            ("m3", "roles = [\"controller\"]\n"),
            (
                "w1",
                "roles = [\"reporter\", \"replicator\"]\nserver = \"c1-s1\"\ntier = \"client\"\nattach = [\"m1\", \"m2\"]\n",
            ),
            (
                "w2",
                "roles = [\"reporter\", \"replicator\"]\nserver = \"c2-s1\"\ntier = \"client\"\nattach = [\"m3\", \"m1\"]\n",
            ),
        ];
        for (name, rest) in nodes {
            let s = SocketAddr::from(([127, 0, 0, 1], free_tcp_port(Ipv4Addr::LOCALHOST)));
            status.insert(name.to_owned(), s);
            toml += &format!(
                "[nodes.{name}]\naddress = \"127.0.0.1:{}\"\nstatus_addr = \"{s}\"\n{rest}",
                free_udp_port()
            );
            if MEMBERS.contains(&name) {
                toml += &format!("client_port = {}\n", free_udp_port());
            } else {
                toml += &format!("replicator_root = \"{}/{name}-site\"\n", root.display());
            }
        }
        let config = root.join("walrus.toml");
        std::fs::write(&config, &toml).unwrap();
        let config_arg = config.display().to_string();
        cli(&["check-config", "--config", &config_arg]);
        // What an operator does: a CA, then every node's certificate from the file.
        let certs_arg = certs.display().to_string();
        cli(&["certs", "init", "--dir", &certs_arg]);
        cli(&[
            "certs",
            "issue",
            "--dir",
            &certs_arg,
            "--config",
            &config_arg,
        ]);
        for f in ["m1.pem", "client.w1.pem", "client.w2.key"] {
            assert!(certs.join(f).exists(), "certs issue --config wrote no {f}");
        }
        assert!(
            !certs.join("w1.pem").exists(),
            "a client got a member's certificate"
        );

        let mut h = Hosts {
            nodes: BTreeMap::new(),
            _nginx: nginx,
            status,
            config,
            dir,
        };
        // Members first, so that each client finds the first member of its list.
        for m in MEMBERS {
            h.start_node(m);
        }
        h.wait_members_view();
        for w in ["w1", "w2"] {
            h.start_node(w);
        }
        h
    }

    fn start_node(&mut self, name: &str) {
        let p = NodeProcess::start(bin(), &self.config, name, self.dir.path());
        self.nodes.insert(name.to_owned(), p);
    }

    fn kill(&mut self, name: &str) {
        self.nodes.get_mut(name).unwrap().guard.kill();
    }

    fn logs(&self) -> String {
        self.nodes.values().map(|n| n.log_tail(30)).collect()
    }

    fn status(&self, node: &str) -> Option<Value> {
        let (code, body) = http_get(self.status[node], "/status").ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The view id each live member is in, once all of them are in one view of exactly
    /// the live members.
    fn members_view(&self, live: &[&str]) -> Option<String> {
        let mut id = None;
        for m in live {
            let doc = self.status(m)?;
            let mut names: Vec<&str> = doc["view"]["members"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            names.sort_unstable();
            if names != live {
                return None;
            }
            let this = doc["view"]["id"].as_str()?.to_owned();
            if id.get_or_insert_with(|| this.clone()) != &this {
                return None;
            }
        }
        id
    }

    fn wait_members_view(&self) -> String {
        poll_until_with(
            "the three members in one view",
            PATIENCE,
            || self.logs(),
            || self.members_view(&MEMBERS),
        )
    }

    /// The master's `/status`, among `live`.
    fn master(&self, live: &[&str]) -> Option<(String, Value)> {
        live.iter().find_map(|m| {
            let doc = self.status(m)?;
            doc["is_master"].as_bool()?.then(|| (m.to_string(), doc))
        })
    }
}

/// Field `field` of the entry named `name` in list `list` of a `/status` document.
fn entry(doc: &Value, list: &str, name: &str, field: &str) -> Option<String> {
    doc[list].as_array()?.iter().find(|e| e["name"] == name)?[field]
        .as_str()
        .map(str::to_owned)
}

fn server_state(doc: &Value, server: &str) -> Option<String> {
    entry(doc, "servers", server, "state")
}

fn area_cluster(doc: &Value, area: &str) -> Option<String> {
    entry(doc, "areas", area, "cluster")
}

fn view_changes(doc: &Value) -> Option<u64> {
    doc["counters"]["view_changes"].as_u64()
}

/// The member a client's log says it attached to last.
/// Whether a `/status` document lists client node `client` attached to `member`.
fn lists_client(doc: &Value, client: &str, member: &str) -> bool {
    doc["clients"].as_array().is_some_and(|l| {
        l.iter()
            .any(|c| c["node"] == client && c["attached_to"] == member)
    })
}

fn attached_to(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(" attached"))?;
    let at = line.find("member=")? + "member=".len();
    Some(line[at..].split_whitespace().next()?.to_owned())
}

#[test]
fn web_hosts_as_clients_report_fail_over_and_never_change_the_view() {
    let mut h = Hosts::start();

    // 1. Both client hosts' reports are in the master's rounds.
    poll_until_with(
        "a master whose rounds see both web servers working",
        PATIENCE,
        || h.logs(),
        || {
            let (_, doc) = h.master(&MEMBERS)?;
            (server_state(&doc, "c1-s1")? == "working"
                && server_state(&doc, "c2-s1")? == "working"
                && doc["counters"]["reports"].as_u64()? >= 4
                // Past the start-up rounds (10), in which a silent server is spared.
                && doc["round"].as_u64()? > 12)
                .then_some(())
        },
    );
    // Their replicas pulled the primary's generation over TLS/TCP with their client
    // certificates, and their reports carry it.
    poll_until_with(
        "both client web hosts serve the primary's generation 1",
        PATIENCE,
        || h.logs(),
        || {
            let (_, doc) = h.master(&MEMBERS)?;
            ["c1-s1", "c2-s1"]
                .iter()
                .all(|s| {
                    doc["servers"]
                        .as_array()
                        .and_then(|l| l.iter().find(|e| e["name"] == *s))
                        .and_then(|e| e["generation"].as_u64())
                        == Some(1)
                })
                .then_some(())
        },
    );
    for (w, member) in [("w1", "m1"), ("w2", "m3")] {
        let log = h.nodes[w].log();
        assert_eq!(attached_to(&log).as_deref(), Some(member), "{w}:\n{log}");
        // A client's own status side has no view (it is in none) and names its member.
        let doc = h.status(w).expect("the client's /status");
        assert!(doc["view"].is_null(), "{w} shows a view: {doc}");
        assert_eq!(doc["client"]["attached_to"], member, "{w}: {doc}");
        // The member lists the client it hosts on its own /status.
        let doc = h.status(member).expect("the member's /status");
        assert!(
            lists_client(&doc, w, member),
            "{member} does not list {w}: {doc}"
        );
    }
    let view = h.members_view(&MEMBERS).unwrap_or_else(|| {
        panic!(
            "the members' view changed while clients attached\n{}",
            h.logs()
        )
    });
    let installed: Vec<u64> = MEMBERS
        .iter()
        .map(|m| view_changes(&h.status(m).unwrap()).unwrap())
        .collect();

    // 2. SIGKILL web host w1: its cluster is down for the Controller (its only server is
    // silent, area a1 moves to c2), and no member installs a view.
    h.kill("w1");
    let killed = std::time::Instant::now();
    poll_until_with(
        "the master treats c1 as down and moves a1 to c2",
        PATIENCE,
        || h.logs(),
        || {
            let (_, doc) = h.master(&MEMBERS)?;
            (server_state(&doc, "c1-s1")?.starts_with("dead") && area_cluster(&doc, "a1")? == "c2")
                .then_some(())
        },
    );
    let client_dead_ms = killed.elapsed().as_millis();
    assert_eq!(
        h.members_view(&MEMBERS).as_deref(),
        Some(view.as_str()),
        "a client's crash changed the members' view\n{}",
        h.logs()
    );
    for (m, before) in MEMBERS.iter().zip(&installed) {
        let now = view_changes(&h.status(m).unwrap()).unwrap();
        assert_eq!(now, *before, "{m} installed a view for a client's crash");
    }

    // 3. SIGKILL m3, the member w2 is attached to: w2 attaches to m1 and its reports go on.
    h.kill("m3");
    let killed = std::time::Instant::now();
    poll_until_with(
        "w2 attaches to m1, the next member of its list",
        PATIENCE,
        || h.nodes["w2"].log_tail(40),
        || {
            (attached_to(&h.nodes["w2"].log())? == "m1"
                && h.status("w2")?["client"]["attached_to"] == "m1")
                .then_some(())
        },
    );
    let failover_ms = killed.elapsed().as_millis();
    poll_until_with(
        "m1's /status lists w2 among its clients",
        PATIENCE,
        || h.logs(),
        || lists_client(&h.status("m1")?, "w2", "m1").then_some(()),
    );
    let (_, metrics) = http_get(h.status["w2"], "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "walrus_client_attached{member=\"m1\"} 1"),
        "w2's /metrics:\n{metrics}"
    );
    // Its link's counters: attached twice (m3, then m1), one link lost, its reports sent
    // and the group's messages received.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in w2's /metrics:\n{metrics}"))
    };
    assert_eq!(value("walrus_client_attachments_total"), 2.0, "{metrics}");
    assert_eq!(value("walrus_client_links_lost_total"), 1.0, "{metrics}");
    assert!(value("walrus_client_multicasts_total") >= 2.0, "{metrics}");
    assert!(
        value("walrus_client_messages_delivered_total") >= 2.0,
        "{metrics}"
    );
    assert!(value("walrus_client_unconfirmed") >= 0.0, "{metrics}");
    let live = ["m1", "m2"];
    let (master, reports) = poll_until_with(
        "a master among m1 and m2",
        PATIENCE,
        || h.logs(),
        || {
            let (m, doc) = h.master(&live)?;
            Some((m, doc["counters"]["reports"].as_u64()?))
        },
    );
    poll_until_with(
        "w2's reports keep feeding the master's rounds after its fail-over",
        PATIENCE,
        || h.logs(),
        || {
            let doc = h.status(&master)?;
            // Only w2 reports now (w1 is dead): every new report is its.
            (doc["is_master"].as_bool()?
                && doc["counters"]["reports"].as_u64()? >= reports + 4
                && server_state(&doc, "c2-s1")? == "working")
                .then_some(())
        },
    );
    // Figures, not checks (with --nocapture; each includes the 50 ms polling and a
    // /status request per poll).
    println!(
        "{{\"client_killed_to_cluster_down_ms\":{client_dead_ms},\"member_killed_to_client_attached_ms\":{failover_ms},\"member_killed_to_four_more_reports_ms\":{}}}",
        killed.elapsed().as_millis()
    );
}
