//! Membership you can trust (issue 16), with separate `walrus-node run` processes on
//! loopback over walrus-gcs (QUIC, mutual TLS), embedded DNS and `dig`:
//!
//! * a **duplicate** of the master Controller's node — a second process with the node's
//!   own name and certificate on another address, restarted whenever it exits, for 15 s —
//!   is refused by its peers, exits non-zero naming both addresses, and changes nothing:
//!   0 DNS answer changes, exactly one master (the same one) at every sample, no view
//!   change; the cluster is whole 3 s after it stops;
//! * an **impostor** — a process presenting the master's certificate under another
//!   configured name — is refused the same way, with the same outcome;
//! * a **Controller started inside a cut** (nftables drops its gcs UDP), left there past
//!   its join grace so it joins `Controllers` alone and is its own master, then healed:
//!   the running master stays master, 0 answer changes, one view of all five nodes;
//! * a **restart** of node a1 (Controller, Reporter of s1, Director of area a1 with its
//!   embedded name server) SIGKILLed while its web server stayed up: the other Controller
//!   moves a1 away meanwhile; after the restart a1's name server changes its answer 0
//!   times (it serves its stored home answer, and applies no decision that the next round
//!   takes back).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use walrus_testkit::dns::dig_a_text as dig_a;
use walrus_testkit::prelude::*;
use walrus_testkit::wait::poll_until_async as poll_until;

/// The real binary, built by Cargo for this test.
const WALRUS_NODE: &str = env!("CARGO_BIN_EXE_walrus-node");

/// A running deployment: two Controllers, two web nodes (Reporter + Director of their
/// area, embedded DNS), and a configured node `spare` that does not run.
struct Deployment {
    dir: TempDir,
    toml: String,
    nodes: Vec<(&'static str, NodeProcess, SocketAddr)>,
    dns: [SocketAddr; 2],
    /// The status page `spare` gets when it runs.
    spare_status: SocketAddr,
    _servers: [TinyHttp; 2],
}

const REAL: [&str; 4] = ["ctl-1", "ctl-2", "w-1", "w-2"];

impl Deployment {
    async fn start(tag: &str) -> Self {
        Self::start_with(tag, |t| t).await
    }

    /// Starts the deployment with its TOML passed through `edit` first.
    async fn start_with(tag: &str, edit: impl FnOnce(String) -> String) -> Self {
        let dir = TempDir::new(tag);
        let s1 = TinyHttp::start().await;
        let s2 = TinyHttp::start().await;
        let ports = [
            walrus_node::cluster::free_dns_port().unwrap(),
            walrus_node::cluster::free_dns_port().unwrap(),
        ];
        let mut toml = two_area_toml(
            [ports[0], ports[1]],
            [s1.url(), s2.url()],
            &[
                NodeSpec::controller("ctl-1"),
                NodeSpec::controller("ctl-2"),
                NodeSpec::controller("spare"),
                NodeSpec::worker("w-1", "s1", "a1"),
                NodeSpec::worker("w-2", "s2", "a2"),
            ],
        );
        let mut names = REAL.to_vec();
        names.push("spare");
        toml = with_certs(&toml, dir.path(), &names);
        let mut status = Vec::new();
        for n in REAL {
            let addr: SocketAddr =
                format!("127.0.0.1:{}", free_tcp_port(std::net::Ipv4Addr::LOCALHOST))
                    .parse()
                    .unwrap();
            toml = add_to_node(&toml, n, &format!("status_addr = \"{addr}\""));
            status.push((n, addr));
        }
        let spare_status: SocketAddr =
            format!("127.0.0.1:{}", free_tcp_port(std::net::Ipv4Addr::LOCALHOST))
                .parse()
                .unwrap();
        toml = add_to_node(&toml, "spare", &format!("status_addr = \"{spare_status}\""));
        let toml = edit(toml);
        let conf = dir.path().join("walrus.toml");
        std::fs::write(&conf, &toml).unwrap();
        let nodes = status
            .into_iter()
            .map(|(n, addr)| {
                (
                    n,
                    NodeProcess::start(WALRUS_NODE, &conf, n, dir.path()),
                    addr,
                )
            })
            .collect();
        let dns = ports.map(|p| format!("127.0.0.1:{p}").parse().unwrap());
        Deployment {
            dir,
            toml,
            nodes,
            dns,
            spare_status,
            _servers: [s1, s2],
        }
    }

    /// Both areas' answers, as `dig` sees them at their embedded name servers.
    fn answers(&self) -> [Vec<String>; 2] {
        self.dns.map(|d| dig_a(d, "www.example.com"))
    }

    /// Every real node's status page (`None` for a page that did not answer).
    async fn statuses(&self) -> Vec<Option<walrus_node::status::StatusDoc>> {
        let mut out = Vec::new();
        for (_, _, addr) in &self.nodes {
            out.push(walrus_node::status::fetch(*addr).await.ok());
        }
        out
    }

    /// Waits until both areas answer with their home cluster, every real node is in one
    /// view of the four, and exactly one Controller is master. Returns the master.
    async fn settled(&self) -> &'static str {
        let home = [vec!["192.0.2.1".to_owned()], vec!["192.0.2.2".to_owned()]];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "no settled deployment in 60 s; logs:\n{}",
                self.logs()
            );
            let st = self.statuses().await;
            let views: Vec<Option<(String, usize)>> = st
                .iter()
                .map(|s| {
                    let v = s.as_ref()?.view.as_ref()?;
                    Some((v.id.clone(), v.members.len()))
                })
                .collect();
            let one_view = views.iter().all(|v| v.as_ref().is_some_and(|v| v.1 == 4))
                && views.windows(2).all(|w| w[0] == w[1]);
            let masters: Vec<&'static str> = self
                .nodes
                .iter()
                .zip(&st)
                .filter(|(_, s)| s.as_ref().is_some_and(|s| s.is_master))
                .map(|((n, _, _), _)| *n)
                .collect();
            if one_view && masters.len() == 1 && self.answers() == home {
                return masters[0];
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|(n, p, _)| format!("==== {n}\n{}", tail(&p.log(), 40)))
            .collect()
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// What the cluster looked like while the intruder ran.
#[derive(Debug, Default)]
struct Watch {
    samples: u64,
    answer_changes: u64,
    most_masters: usize,
    other_master: Option<String>,
    view_changes: u64,
    intruder_runs: u64,
    intruder_exits: Vec<(Option<i32>, String)>,
    /// The log of the intruder still running at the end, if any.
    last_log: String,
}

/// Samples a watch must take, at least: a watch that saw the cluster a handful of times
/// proves nothing.
const MIN_SAMPLES: u64 = 21;
/// How long a watch may go on past its time to take [`MIN_SAMPLES`] and see the intruder
/// refused once, on a slow machine (one sample is two `dig`s and four status pages).
const WATCH_LIMIT: Duration = Duration::from_secs(120);

/// Runs the intruder (restarted whenever it exits) for `for_how_long` — and longer, up to
/// [`WATCH_LIMIT`], until [`MIN_SAMPLES`] samples are taken and the intruder was refused
/// once — sampling the answers, the masters and the views every 200 ms; then stops it and
/// checks that the cluster is whole (one view of the four, the same master) soon after.
async fn watch_intruder(
    d: &Deployment,
    master: &str,
    for_how_long: Duration,
    mut start: impl FnMut(u64) -> NodeProcess,
) -> Watch {
    let before = d.answers();
    let st = d.statuses().await;
    let view = st[0].as_ref().and_then(|s| s.view.clone()).map(|v| v.id);
    let mut w = Watch::default();
    let started = Instant::now();
    let mut intruder = Some(start(0));
    w.intruder_runs = 1;
    // Time alone does not end the watch: on a loaded machine 15 s may hold only a few
    // samples and no refusal yet. The asserts after it still need both.
    while started.elapsed() < WATCH_LIMIT
        && (started.elapsed() < for_how_long
            || w.samples < MIN_SAMPLES
            || w.intruder_exits.is_empty())
    {
        if let Some(p) = intruder.as_mut() {
            if let Some(status) = p.exited() {
                w.intruder_exits.push((status.code(), p.log()));
                intruder = Some(start(w.intruder_runs));
                w.intruder_runs += 1;
            }
        }
        w.samples += 1;
        if d.answers() != before {
            w.answer_changes += 1;
        }
        let st = d.statuses().await;
        let masters: Vec<&str> = d
            .nodes
            .iter()
            .zip(&st)
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.is_master))
            .map(|((n, _, _), _)| *n)
            .collect();
        w.most_masters = w.most_masters.max(masters.len());
        if let Some(m) = masters.iter().find(|m| **m != master) {
            w.other_master = Some((*m).to_owned());
        }
        for s in st.iter().flatten() {
            if s.view.as_ref().map(|v| &v.id) != view.as_ref() {
                w.view_changes += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(p) = intruder.take() {
        w.last_log = p.log();
    }
    // Past the merge time (3 s) after it stops, every real node is in one view of the
    // four, with the same master. Looked at from then on until it holds (30 s at most): a
    // status page on a loaded machine can be late.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = Instant::now();
    let mut last = String::new();
    loop {
        let st = d.statuses().await;
        let mut whole = true;
        for (s, (n, _, _)) in st.iter().zip(&d.nodes) {
            let Some(s) = s else {
                whole = false;
                last = format!("{n} has no status");
                continue;
            };
            let members = s.view.as_ref().map_or(0, |v| v.members.len());
            if members != 4 {
                whole = false;
                last = format!("{n} after the intruder: {:?}", s.view);
            }
            if n.starts_with("ctl") && s.master.as_deref() != Some(master) {
                whole = false;
                last = format!("{n}: master {:?}, not {master}", s.master);
            }
        }
        if whole {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "not whole 30 s after the intruder stopped: {last}\n{}",
            d.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(d.answers(), before, "answers after the intruder");
    w
}

fn assert_untouched(w: &Watch, master: &str, d: &Deployment) {
    eprintln!(
        "{{\"samples\":{},\"answer_changes\":{},\"most_masters\":{},\"view_changes\":{},\"intruder_runs\":{}}}",
        w.samples, w.answer_changes, w.most_masters, w.view_changes, w.intruder_runs
    );
    assert_eq!(
        w.answer_changes,
        0,
        "DNS answers changed: {w:?}\n{}",
        d.logs()
    );
    assert_eq!(w.most_masters, 1, "masters: {w:?}\n{}", d.logs());
    assert_eq!(w.other_master, None, "another master than {master}");
    assert_eq!(w.view_changes, 0, "views changed: {w:?}\n{}", d.logs());
    assert!(w.samples >= MIN_SAMPLES, "too few samples: {w:?}");
    assert!(
        !w.intruder_exits.is_empty(),
        "the intruder was never refused; its log:\n{}\npeers:\n{}",
        tail(&w.last_log, 60),
        d.logs()
    );
}

/// Each peer that refused the intruder logged it once as an error naming both addresses.
fn assert_logged_once(d: &Deployment, name: &str, real: SocketAddr, intruder: SocketAddr) {
    let needle = format!("two live incarnations of node {name}");
    let mut peers = 0;
    for (n, p, _) in &d.nodes {
        let lines: Vec<String> = p
            .log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect();
        assert!(
            lines.len() <= 1,
            "{n} logged the duplicate {} times",
            lines.len()
        );
        if let Some(l) = lines.first() {
            assert!(l.contains("ERROR"), "{l}");
            assert!(
                l.contains(&real.to_string()) && l.contains(&intruder.to_string()),
                "{l}"
            );
            peers += 1;
        }
    }
    assert!(peers >= 1, "no peer logged the duplicate\n{}", d.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_the_master_node_is_refused_and_changes_nothing() {
    let d = Deployment::start("duplicate").await;
    let master = d.settled().await;
    let real_addr = node_address(&d.toml, master);
    // The duplicate: the master's own name and certificate, another address and status
    // port (a copied configuration on a cloned host), running only the Controller.
    let dup_port = walrus_node::cluster::free_udp_port().unwrap();
    let dup_addr: SocketAddr = format!("127.0.0.1:{dup_port}").parse().unwrap();
    let dup_toml = d.toml.replace(
        &format!("address = \"{real_addr}\""),
        &format!("address = \"{dup_addr}\""),
    );
    let own_status = d.nodes.iter().find(|n| n.0 == master).unwrap().2;
    let dup_toml = dup_toml.replace(
        &format!("status_addr = \"{own_status}\""),
        &format!(
            "status_addr = \"127.0.0.1:{}\"",
            free_tcp_port(std::net::Ipv4Addr::LOCALHOST)
        ),
    );
    let dup_conf = d.dir.path().join("duplicate.toml");
    std::fs::write(&dup_conf, &dup_toml).unwrap();
    let dir = d.dir.path().to_owned();
    let w = watch_intruder(&d, master, Duration::from_secs(15), |i| {
        NodeProcess::start_with(
            WALRUS_NODE,
            &dup_conf,
            master,
            &dir,
            &format!("duplicate-{i}"),
            &["--roles", "controller"],
        )
    })
    .await;
    assert_untouched(&w, master, &d);
    for (code, log) in &w.intruder_exits {
        assert_eq!(*code, Some(1), "the duplicate must exit 1:\n{log}");
        let line = log
            .lines()
            .find(|l| l.contains("two live incarnations"))
            .unwrap_or_else(|| panic!("the duplicate does not say why it stopped:\n{log}"));
        assert!(
            line.contains(&real_addr.to_string()) && line.contains(&dup_addr.to_string()),
            "{line}"
        );
    }
    assert_logged_once(&d, master, real_addr, dup_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_with_the_master_certificate_under_another_name_changes_nothing() {
    let d = Deployment::start("impostor").await;
    let master = d.settled().await;
    let real_addr = node_address(&d.toml, master);
    let spare_addr = node_address(&d.toml, "spare");
    // The impostor runs as `spare` but presents the master's certificate and key.
    let certs_dir = d.dir.path().join("certs");
    let stolen = d.dir.path().join("stolen");
    std::fs::create_dir_all(&stolen).unwrap();
    std::fs::copy(certs_dir.join("ca.pem"), stolen.join("ca.pem")).unwrap();
    for ext in ["pem", "key"] {
        std::fs::copy(
            certs_dir.join(format!("{master}.{ext}")),
            stolen.join(format!("spare.{ext}")),
        )
        .unwrap();
    }
    let imp_toml = d.toml.replace(
        &format!("dir = \"{}\"", certs_dir.display()),
        &format!("dir = \"{}\"", stolen.display()),
    );
    let imp_conf = d.dir.path().join("impostor.toml");
    std::fs::write(&imp_conf, &imp_toml).unwrap();
    let dir = d.dir.path().to_owned();
    let w = watch_intruder(&d, master, Duration::from_secs(15), |i| {
        NodeProcess::start_with(
            WALRUS_NODE,
            &imp_conf,
            "spare",
            &dir,
            &format!("impostor-{i}"),
            &[],
        )
    })
    .await;
    assert_untouched(&w, master, &d);
    for (code, log) in &w.intruder_exits {
        assert_eq!(*code, Some(1), "the impostor must exit 1:\n{log}");
    }
    assert_logged_once(&d, master, real_addr, spare_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_started_inside_a_cut_never_deposes_the_master() {
    let d = Deployment::start("isolated").await;
    let master = d.settled().await;
    let before = d.answers();
    let spare_port = node_address(&d.toml, "spare").port();
    let others: Vec<u16> = REAL
        .iter()
        .map(|n| node_address(&d.toml, n).port())
        .collect();
    // The cut first, then the start: `spare` never hears anyone.
    let cut = Partition::cut(&[spare_port], &others);
    let conf = d.dir.path().join("walrus.toml");
    let spare = NodeProcess::start(WALRUS_NODE, &conf, "spare", d.dir.path());
    // Past its join grace (five failure timeouts): it joins Controllers alone and is the
    // master of its own component.
    poll_until("spare is master alone", Duration::from_secs(20), || {
        spare.is_master().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(cut);
    let healed = Instant::now();
    // For 8 s after the heal, and on until the five are one view (60 s at most: a loaded
    // machine merges late): the master stays, no answer changes.
    let mut w = Watch::default();
    let mut whole = None;
    while healed.elapsed() < Duration::from_secs(8)
        || (whole.is_none() && healed.elapsed() < Duration::from_secs(60))
    {
        w.samples += 1;
        if d.answers() != before {
            w.answer_changes += 1;
        }
        let st = d.statuses().await;
        let spare_st = walrus_node::status::fetch(d.spare_status).await.ok();
        let mut masters: Vec<&str> = d
            .nodes
            .iter()
            .zip(&st)
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.is_master))
            .map(|((n, _, _), _)| *n)
            .collect();
        if spare_st.as_ref().is_some_and(|s| s.is_master)
            && spare_st
                .as_ref()
                .and_then(|s| s.view.as_ref())
                .is_some_and(|v| v.members.len() > 1)
        {
            masters.push("spare");
        }
        w.most_masters = w.most_masters.max(masters.len());
        if let Some(m) = masters.iter().find(|m| **m != master) {
            w.other_master = Some((*m).to_owned());
        }
        let views: Vec<Option<String>> = st
            .iter()
            .chain(std::iter::once(&spare_st))
            .map(|s| {
                Some(
                    s.as_ref()?
                        .view
                        .as_ref()
                        .filter(|v| v.members.len() == 5)?
                        .id
                        .clone(),
                )
            })
            .collect();
        if whole.is_none()
            && views.iter().all(|v| v.is_some())
            && views.windows(2).all(|p| p[0] == p[1])
        {
            whole = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{{\"samples\":{},\"answer_changes\":{},\"most_masters\":{},\"other_master\":{:?},\"whole_after_ms\":{:?}}}",
        w.samples,
        w.answer_changes,
        w.most_masters,
        w.other_master,
        whole.map(|t| t.as_millis())
    );
    let logs = format!("{}\n==== spare\n{}", d.logs(), tail(&spare.log(), 40));
    assert_eq!(w.other_master, None, "the master changed: {w:?}\n{logs}");
    assert_eq!(w.most_masters, 1, "{w:?}\n{logs}");
    assert_eq!(w.answer_changes, 0, "{w:?}\n{logs}");
    // How soon the five merge is printed above (`whole_after_ms`), not asserted: on a
    // loaded 2-core machine it is the scheduler's figure as much as ours.
    whole.unwrap_or_else(|| panic!("never one view of five after the heal\n{logs}"));
    // The isolated Controller saw the merge and is a backup now.
    let log = spare.log();
    assert!(log.contains("lost mastership"), "{}", tail(&log, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_a_node_whose_web_server_stayed_up_changes_no_answer() {
    // The layout: node a1 runs the Controller, the Reporter of s1 and the Director
    // of area a1 (embedded name server); b1 the same for a2. a1's name sorts first, so on
    // its restart it dials b1 at once and rejoins within a round.
    let dir = TempDir::new("restart");
    let s1 = TinyHttp::start().await;
    let s2 = TinyHttp::start().await;
    let ports = [
        walrus_node::cluster::free_dns_port().unwrap(),
        walrus_node::cluster::free_dns_port().unwrap(),
    ];
    let mut toml = two_area_toml(
        [ports[0], ports[1]],
        [s1.url(), s2.url()],
        &[
            NodeSpec {
                name: "a1",
                roles: &["controller", "reporter", "director"],
                server: Some("s1"),
                area: Some("a1"),
            },
            NodeSpec {
                name: "b1",
                roles: &["controller", "reporter", "director"],
                server: Some("s2"),
                area: Some("a2"),
            },
        ],
    );
    toml = with_certs(&toml, dir.path(), &["a1", "b1"]);
    // Reports are gathered for 450 ms of each 500 ms round, so the restarted node most
    // likely rejoins between a round's request and its decision.
    toml = toml.replace("report_timeout = \"250ms\"", "report_timeout = \"450ms\"");
    let b1_status: SocketAddr =
        format!("127.0.0.1:{}", free_tcp_port(std::net::Ipv4Addr::LOCALHOST))
            .parse()
            .unwrap();
    toml = add_to_node(&toml, "b1", &format!("status_addr = \"{b1_status}\""));
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, &toml).unwrap();
    let a1_dns: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let mut a1 = NodeProcess::start(WALRUS_NODE, &conf, "a1", dir.path());
    let b1 = NodeProcess::start(WALRUS_NODE, &conf, "b1", dir.path());
    poll_until("a1 answers with c1", Duration::from_secs(30), || {
        (dig_a(a1_dns, "www.example.com") == ["192.0.2.1"]).then_some(())
    })
    .await;
    let a1_cluster = || async {
        let s = walrus_node::status::fetch(b1_status).await.ok()?;
        s.areas.iter().find(|a| a.name == "a1")?.cluster.clone()
    };
    // Past the start-up rounds (ten), so a silent server is taken for dead.
    poll_until_async("b1 is past the start-up rounds", || async {
        let s = walrus_node::status::fetch(b1_status).await.ok()?;
        (s.round? >= 14).then_some(())
    })
    .await;
    // SIGKILL a1; its web server s1 stays up. b1 becomes master and moves a1 away.
    a1.guard.kill();
    poll_until_async("the master moves a1 away from c1", || async {
        (a1_cluster().await? == "c2").then_some(())
    })
    .await;
    a1 = NodeProcess::start_with(WALRUS_NODE, &conf, "a1", dir.path(), "a1-restarted", &[]);
    // Its answers for 6 s from the first one it gives (a loaded machine can take seconds
    // to start the process; 60 s at most for that).
    let restarted = Instant::now();
    let mut first_answer = None;
    let mut seen: Vec<Vec<String>> = Vec::new();
    while first_answer.map_or(
        restarted.elapsed() < Duration::from_secs(60),
        |t: Instant| t.elapsed() < Duration::from_secs(6),
    ) {
        let a = dig_a(a1_dns, "www.example.com");
        if !a.is_empty() && seen.last() != Some(&a) {
            first_answer.get_or_insert_with(Instant::now);
            seen.push(a);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changes = seen.len().saturating_sub(1);
    eprintln!("{{\"answers_after_restart\":{seen:?},\"answer_changes\":{changes}}}");
    let log = format!(
        "==== a1\n{}\n==== b1\n{}",
        tail(&a1.log(), 40),
        tail(&b1.log(), 30)
    );
    assert_eq!(
        changes, 0,
        "a1's answers after the restart: {seen:?}\n{log}"
    );
    assert_eq!(
        seen,
        vec![vec!["192.0.2.1".to_owned()]],
        "a1 must stay home\n{log}"
    );
    poll_until_async("the master moves a1 home", || async {
        (a1_cluster().await? == "c1").then_some(())
    })
    .await;
}

/// Polls the async `f` every 100 ms until it gives `Some`, or panics after 30 s.
async fn poll_until_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
