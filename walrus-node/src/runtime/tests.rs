use super::*;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../../config/walrus.toml");

fn example() -> Config {
    Config::from_toml(Path::new("walrus.toml"), EXAMPLE).unwrap()
}

#[test]
fn round_config_takes_timings_parameters_and_dead_after() {
    let text = EXAMPLE
        .replace("round_period = \"1s\"", "round_period = \"2s\"")
        .replace("report_timeout = \"400ms\"", "report_timeout = \"700ms\"")
        .replace("threshold = 0.8", "threshold = 0.7")
        .replace("margin = 0.2", "margin = 0.3")
        .replace("max_records = 20", "max_records = 5")
        .replace("dead_after = \"5m\"", "dead_after = \"90s\"");
    let c = Config::from_toml(Path::new("w.toml"), &text).unwrap();
    let r = round_config(&c);
    assert_eq!(r.round_period, Duration::from_secs(2));
    assert_eq!(r.report_timeout, Duration::from_millis(700));
    assert_eq!(r.params.threshold, 0.7);
    assert_eq!(r.params.margin, 0.3);
    assert_eq!(r.params.max_records, 5);
    assert_eq!(r.params.dead_after, Duration::from_secs(90));
    assert_eq!(
        r.params.return_margin,
        walrus_actors::controller::assign::Params::default().return_margin
    );
    assert!(r.fast_failover);
    r.validate().unwrap();
    // fast_failover = false: no early rounds, no probe in the Reporter.
    let off = EXAMPLE.replace("fast_failover = true", "fast_failover = false");
    let c = Config::from_toml(Path::new("w.toml"), &off).unwrap();
    assert!(!round_config(&c).fast_failover);
    assert_eq!(reporter_config(&c, "eu-a").unwrap().fast_failover, None);
    assert!(reporter_config(&example(), "eu-a")
        .unwrap()
        .fast_failover
        .is_some());
}

#[test]
fn reporter_config_follows_the_nodes_server() {
    let c = example();
    let r = reporter_config(&c, "eu-a").unwrap();
    assert_eq!(r.server.0, "eu-1");
    assert_eq!(
        r.web,
        WebSource::Nginx {
            url: "http://127.0.1.1:8080/nginx_status".into(),
            max_workers: 1024
        }
    );
    assert_eq!(r.interval, Duration::from_secs(1));
    assert_eq!(r.bypass_file, PathBuf::from("/var/lib/walrus/bypass"));
    let r = reporter_config(&c, "eu-b").unwrap();
    assert!(matches!(r.web, WebSource::Apache { .. }));
    let r = reporter_config(&c, "us-b").unwrap();
    assert!(matches!(
        r.web,
        WebSource::Probe {
            max_workers: 512,
            ..
        }
    ));
    assert!(reporter_config(&c, "nobody").is_err());
}

#[test]
fn zone_layout_and_initial_answer_of_an_area() {
    let c = example();
    let eu = AreaName::from("eu");
    let l = zone_layout(&c, &eu).unwrap();
    assert_eq!(l.site.to_ascii(), "example.com.");
    assert_eq!(l.area_zone.to_ascii(), "area-eu.example.com.");
    assert_eq!(l.ns_name.to_ascii(), "ns.area-eu.example.com.");
    assert_eq!(
        l.ns_addrs,
        vec!["127.0.0.11".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(l.ttl.secs(), 30);
    // NS records live long; every area's server is listed for the site zone.
    assert_eq!(l.ns_ttl.secs(), 3600);
    let mut others: Vec<String> = l
        .other_areas
        .iter()
        .map(|a| format!("{} {} {:?}", a.zone, a.ns_name, a.ns_addrs))
        .collect();
    others.sort();
    assert_eq!(
        others,
        vec![
            "area-asia.example.com. ns.area-asia.example.com. [127.0.0.13]",
            "area-us.example.com. ns.area-us.example.com. [127.0.0.12]"
        ]
    );
    let w = initial_answer(&c, &eu);
    assert_eq!(w.v4.len(), 2, "{w:?}");
    assert_eq!(
        state_file(&c, &eu),
        PathBuf::from("/var/lib/walrus/dns/eu.state")
    );
    assert!(zone_layout(&c, &AreaName::from("mars")).is_err());
}

#[test]
fn steering_and_published_ns_addresses_reach_the_embedded_server() {
    assert!(steering(&example()).unwrap().is_empty());
    let text = EXAMPLE
        .replace(
            "state_dir = \"/var/lib/walrus/dns\"",
            "state_dir = \"/var/lib/walrus/dns\"\nsteering = [{ source = \"10.1.0.0/16\", area = \"us\" }]",
        )
        .replace(
            "home_cluster = \"c-eu\"",
            "home_cluster = \"c-eu\"\nns_addresses = [\"192.0.2.53\"]",
        );
    let c = Config::from_toml(Path::new("w.toml"), &text).unwrap();
    let s = steering(&c).unwrap();
    assert_eq!(
        s.target_for("10.1.2.3".parse().unwrap())
            .map(|n| n.to_ascii()),
        Some("area-us.example.com.".to_owned())
    );
    assert_eq!(s.target_for("10.2.0.1".parse().unwrap()), None);
    let l = zone_layout(&c, &AreaName::from("eu")).unwrap();
    assert_eq!(
        l.ns_addrs,
        vec!["192.0.2.53".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn controller_settings_carry_topology_and_notify() {
    let text = EXAMPLE
        .replace(
            "# webhook = \"https://hooks.slack.com/services/T000/B000/XXXX\"",
            "webhook = \"http://127.0.0.1:9099/walrus\"",
        )
        .replace("# webhook_body = '{\"text\"", "webhook_body = '{\"text\"");
    let c = Config::from_toml(Path::new("w.toml"), &text).unwrap();
    let s = controller_settings(&c);
    assert_eq!(s.topology.areas.len(), 3);
    assert_eq!(s.notify.site, "example.com");
    assert_eq!(
        s.notify.webhook.as_deref(),
        Some("http://127.0.0.1:9099/walrus")
    );
    assert_eq!(
        s.notify.webhook_body.as_deref(),
        Some("{\"text\": \"Walrus: {summary}\"}")
    );
}

#[test]
fn a_reload_applies_topology_and_refuses_this_nodes_own_identity_whole() {
    let old = example();
    let added = EXAMPLE.to_owned()
        + "\n[clusters.c-eu.servers.eu-3]\naddresses = [\"127.0.1.3\"]\nstatus = \"probe\"\n\
           status_url = \"http://127.0.1.3:8080/\"\n\
           [areas.sa]\nzone = \"area-sa.example.com\"\nname_server = \"127.0.0.14:53\"\n\
           home_cluster = \"c-sa\"\n\
           [clusters.c-sa.servers.sa-1]\naddresses = [\"127.0.4.1\"]\nstatus = \"probe\"\n\
           status_url = \"http://127.0.4.1:8080/\"\n\
           [nodes.eu-c]\naddress = \"127.0.1.3:7400\"\nroles = [\"reporter\"]\nserver = \"eu-3\"\n";
    let new = Config::from_toml(Path::new("w.toml"), &added).unwrap();
    let applied = plan_reload(&old, &new, "eu-a").unwrap();
    assert_eq!(
        applied,
        vec![
            "area sa added",
            "cluster c-eu changed",
            "cluster c-sa added",
            "server eu-3 added",
            "server sa-1 added",
            "node eu-c added"
        ]
    );
    // And back: everything removed again.
    let back = plan_reload(&new, &old, "eu-a").unwrap();
    assert!(back.contains(&"node eu-c removed".to_owned()), "{back:?}");
    // This node's own address, its area's name server, the site, [tls]: all refused at
    // once, with the reasons.
    let text = added
        .replace(
            "address = \"127.0.1.1:7400\"",
            "address = \"127.0.1.1:7401\"",
        )
        .replace(
            "name_server = \"127.0.0.11:53\"",
            "name_server = \"127.0.0.11:5353\"",
        )
        .replace("site = \"example.com\"", "site = \"example.org\"")
        .replace(
            "ca = \"/etc/walrus/certs/ca.pem\"",
            "ca = \"/etc/walrus/ca.pem\"",
        );
    let bad = Config::from_toml(Path::new("w.toml"), &text).unwrap();
    let reasons = plan_reload(&old, &bad, "eu-a").unwrap_err();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].starts_with("site"), "{reasons:?}");
    assert!(reasons[1].starts_with("[tls]"), "{reasons:?}");
    assert!(reasons[2].starts_with("[nodes.eu-a]"), "{reasons:?}");
    assert!(
        reasons[3].starts_with("area eu: this node is its Director"),
        "{reasons:?}"
    );
    // Another node's address and another area's name server are live changes.
    let other = EXAMPLE
        .replace(
            "address = \"127.0.2.2:7400\"",
            "address = \"127.0.2.2:7401\"",
        )
        .replace(
            "name_server = \"127.0.0.12:53\"",
            "name_server = \"127.0.0.12:5353\"",
        );
    let other = Config::from_toml(Path::new("w.toml"), &other).unwrap();
    assert_eq!(
        plan_reload(&old, &other, "eu-a").unwrap(),
        vec!["area us changed", "node us-b changed"]
    );
    // With dns.mode = "direct" a Controller cannot add areas live (its updaters are
    // made at start); a node without a Controller can.
    let (mut a, mut b) = (old.clone(), new.clone());
    a.dns.mode = DnsMode::Direct;
    b.dns.mode = DnsMode::Direct;
    let r = plan_reload(&a, &b, "eu-a").unwrap_err();
    assert!(r[0].contains("direct"), "{r:?}");
    assert!(plan_reload(&a, &b, "eu-b").is_ok());
}

#[test]
fn gcs_config_names_missing_certificates() {
    let c = example();
    let Err(e) = gcs_config(&c, "eu-a") else {
        panic!("no certificates exist at /etc/walrus/certs here")
    };
    assert!(e.to_string().contains("node eu-a: TLS"), "{e}");
}

/// The example with its certificates in a fresh directory (a CA and `names`' own).
fn example_with_certs(tag: &str, names: &[&str]) -> (std::path::PathBuf, Config) {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    certs::write_new_ca(&dir).unwrap();
    for n in names {
        certs::write_node_cert(&dir, n).unwrap();
    }
    let mut c = example();
    c.tls.ca = dir.join("ca.pem");
    c.tls.dir = dir.clone();
    (dir, c)
}

#[test]
fn gcs_config_lists_every_other_node_as_peer() {
    let (dir, mut c) = example_with_certs("walrus-rt", &["eu-a"]);
    let g = gcs_config(&c, "eu-a").unwrap();
    assert_eq!(g.transport.me, NodeId::new("eu-a"));
    assert_eq!(g.transport.peers.len(), 5);
    assert!(g.transport.peers.iter().all(|(n, _)| n.as_str() != "eu-a"));
    assert_eq!(g.core, CoreConfig::lan());
    assert_eq!(g.transport.limits, Limits::lan());
    // The WAN profile lengthens the transport's timeouts too, not only the core's.
    c.timing.gcs_profile = GcsProfile::Wan;
    let g = gcs_config(&c, "eu-a").unwrap();
    assert_eq!(g.core, CoreConfig::wan());
    assert_eq!(g.transport.limits, Limits::wan());
    let _ = std::fs::remove_dir_all(&dir);
}

/// eu-b as a client of eu-a then us-a (both serving clients on 7500).
fn with_client_eu_b(c: &mut Config) {
    for m in ["eu-a", "us-a"] {
        c.nodes.get_mut(m).unwrap().client_port = Some(7500);
    }
    let b = c.nodes.get_mut("eu-b").unwrap();
    b.tier = crate::config::Tier::Client;
    b.attach = vec!["eu-a".into(), "us-a".into()];
}

#[test]
fn a_client_attaches_in_order_with_its_client_certificate_and_members_never_dial_it() {
    let (dir, mut c) = example_with_certs("walrus-rt-client", &["eu-a"]);
    with_client_eu_b(&mut c);
    // Its certificate is client.eu-b: a member's file name is not taken.
    certs::write_node_cert(&dir, "eu-b").unwrap();
    let Err(e) = client_link_config(&c, "eu-b") else {
        panic!("loaded eu-b.pem for a client")
    };
    assert!(e.to_string().contains("client.eu-b.pem"), "{e}");
    certs::write_node_cert(&dir, "client.eu-b").unwrap();
    let link = client_link_config(&c, "eu-b").unwrap();
    assert_eq!(link.name, NodeId::new("client.eu-b"));
    // It sends from its own declared address (eu-b is 127.0.1.2:7400).
    assert_eq!(link.local, Some("127.0.1.2".parse().unwrap()));
    let order: Vec<(String, SocketAddr)> = link
        .members
        .iter()
        .map(|(n, a)| (n.as_str().to_owned(), *a))
        .collect();
    assert_eq!(
        order,
        vec![
            ("eu-a".to_owned(), "127.0.1.1:7500".parse().unwrap()),
            ("us-a".to_owned(), "127.0.2.1:7500".parse().unwrap()),
        ]
    );
    // Members do not list the client as a peer; a client runs no member.
    let g = gcs_config(&c, "eu-a").unwrap();
    assert_eq!(g.transport.peers.len(), 4);
    assert!(g.transport.peers.iter().all(|(n, _)| n.as_str() != "eu-b"));
    let Err(e) = gcs_config(&c, "eu-b") else {
        panic!("a client got a member's configuration")
    };
    assert!(e.to_string().contains("client"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_that_moves_a_clients_member_listener_is_refused_on_that_client_only() {
    let mut a = example();
    with_client_eu_b(&mut a);
    let mut b = a.clone();
    b.nodes.get_mut("us-a").unwrap().client_port = Some(7600);
    let r = plan_reload(&a, &b, "eu-b").unwrap_err();
    assert!(r[0].contains("client listeners"), "{r:?}");
    // us-a's own entry changed: refused there too; eu-a does not care.
    assert!(plan_reload(&a, &b, "us-a").is_err());
    assert!(plan_reload(&a, &b, "eu-a").is_ok());
}

// ----------------------------------------------------------------------------------------
// Peer admission ([`admission`], [`admit_peers`]).

/// A view of `nodes` (incarnation 1), numbered `counter`.
fn view_of(counter: u64, nodes: &[&str]) -> walrus_gcs::ViewChange {
    walrus_gcs::ViewChange {
        view: walrus_gcs::ViewId {
            counter,
            coordinator: NodeId::new(nodes[0]),
            incarnation: walrus_gcs::Incarnation(1),
        },
        members: nodes
            .iter()
            .map(|n| walrus_gcs::NodeRef {
                id: NodeId::new(*n),
                incarnation: walrus_gcs::Incarnation(1),
            })
            .collect(),
        previous: None,
        delivered: 0,
        digest: 0,
    }
}

/// What `Nodes` says when `agree` announced `digest` and `other` another file.
fn digests_of(digest: &str, agree: &[&str], other: &[&str]) -> Digests {
    let mut d = Digests {
        mine: digest.to_owned(),
        ..Digests::default()
    };
    for n in agree {
        d.nodes.insert((*n).to_owned(), digest.to_owned());
        d.members.insert((*n).to_owned());
    }
    for n in other {
        d.nodes.insert((*n).to_owned(), "0000".to_owned());
        d.members.insert((*n).to_owned());
    }
    d
}

/// The example without node us-b (a reload that removes a peer).
fn without_us_b() -> Config {
    let text = EXAMPLE.replace(
        "[nodes.us-b]\naddress = \"127.0.2.2:7400\"\nroles = [\"reporter\", \"replicator\"]\nserver = \"us-2\"\n",
        "",
    );
    assert_ne!(text, EXAMPLE);
    Config::from_toml(Path::new("walrus.toml"), &text).unwrap()
}

const ALL: [&str; 5] = ["asia-a", "asia-b", "eu-a", "eu-b", "us-a"];

#[test]
fn admission_judges_against_the_view_and_waits_without_one() {
    let old = example();
    let new = without_us_b();
    let listed: Vec<String> = new.nodes.keys().cloned().collect();
    let applied = peer_addresses(&old, "eu-a");
    let d = &new.digest;
    let agreeing = digests_of(d, &ALL, &[]);
    let full = view_of(2, &ALL);
    let judge = |view: Option<&walrus_gcs::ViewChange>, digests: &Digests| {
        admission("eu-a", &listed, view, digests, d, &applied)
    };
    assert_eq!(judge(Some(&full), &agreeing), Admission::Apply);
    // Starting: no view yet, even though every node heard so far agrees.
    assert_eq!(
        judge(None, &digests_of(d, &["eu-a"], &[])),
        Admission::NoView
    );
    // Cut off: alone in its view (it heard only itself on `Nodes`).
    assert_eq!(
        judge(Some(&view_of(3, &["eu-a"])), &digests_of(d, &["eu-a"], &[])),
        Admission::Alone
    );
    // Early in its start: the view holds nodes it has not heard from on `Nodes` yet.
    // Judged by `Nodes` alone, eu-a would apply the change against itself and asia-a.
    assert_eq!(
        judge(Some(&full), &digests_of(d, &["eu-a", "asia-a"], &[])),
        Admission::Late(vec!["asia-b".into(), "eu-b".into(), "us-a".into()])
    );
    // A node of the view on another file holds the change back; us-b, removed by the
    // file, is not asked.
    let with_us_b = view_of(4, &["asia-a", "asia-b", "eu-a", "eu-b", "us-a", "us-b"]);
    assert_eq!(
        judge(Some(&with_us_b), &digests_of(d, &ALL, &["us-b"])),
        Admission::Apply
    );
    assert_eq!(
        judge(
            Some(&full),
            &digests_of(d, &["asia-a", "asia-b", "eu-a", "eu-b"], &["us-a"])
        ),
        Admission::Late(vec!["us-a".into()])
    );
    // This node's own announcement of the new file has not come back yet.
    let mut mine_old = agreeing.clone();
    mine_old.mine = old.digest.clone();
    assert_eq!(judge(Some(&full), &mine_old), Admission::OwnDigestPending);
}

/// A group layer whose view the test sets, recording `set_peers` (sessions: the
/// in-process bus).
struct ViewLayer {
    bus: walrus_actors::group::local::LocalNode,
    view: watch::Sender<Option<walrus_gcs::ViewChange>>,
    peers: std::sync::Mutex<Vec<Vec<String>>>,
}

impl GroupLayer for ViewLayer {
    type Session = walrus_actors::group::local::LocalSession;

    async fn open_session(&self) -> Result<Self::Session, walrus_gcs::DriverError> {
        self.bus.open_session().await
    }

    async fn shutdown(&self) {
        self.bus.shutdown().await
    }

    async fn settled(
        &self,
        _grace: Duration,
        _expected: &[walrus_gcs::NodeId],
    ) -> Vec<walrus_gcs::NodeId> {
        Vec::new()
    }

    fn watch_view(&self) -> watch::Receiver<Option<walrus_gcs::ViewChange>> {
        self.view.subscribe()
    }

    async fn set_peers(
        &self,
        peers: &[(NodeId, SocketAddr)],
    ) -> Result<(), walrus_gcs::DriverError> {
        let names = peers.iter().map(|(n, _)| n.as_str().to_owned()).collect();
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(names);
        Ok(())
    }
}

#[tokio::test]
async fn admit_peers_keeps_the_old_peers_until_it_is_in_a_view() {
    let layer = Arc::new(ViewLayer {
        bus: walrus_actors::group::local::LocalBus::new().node("eu-a", 1),
        view: watch::Sender::new(None),
        peers: std::sync::Mutex::default(),
    });
    let (config_tx, config_rx) = watch::channel(example());
    let (digests_tx, digests_rx) = watch::channel(digests_of(&example().digest, &ALL, &[]));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(admit_peers(
        layer.clone(),
        "eu-a".to_owned(),
        config_rx,
        digests_rx,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    let applied = || {
        layer
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    };
    // Let it take the running file's peers as the ones in force.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The reload, and every node it heard on `Nodes` agreeing: no view, no change.
    let new = without_us_b();
    config_tx.send_replace(new.clone());
    digests_tx.send_replace(digests_of(&new.digest, &ALL, &[]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(applied().is_empty(), "{:?}", applied());
    // Alone in a view of its own: still no change.
    layer.view.send_replace(Some(view_of(1, &["eu-a"])));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(applied().is_empty(), "{:?}", applied());
    // In the group's view, every node of it on the new file: the peers change, once.
    layer.view.send_replace(Some(view_of(2, &ALL)));
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while applied().is_empty() && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        applied(),
        vec![vec!["asia-a", "asia-b", "eu-b", "us-a"]],
        "eu-a's peers without us-b"
    );
    stop_tx.send_replace(true);
    task.await.unwrap().unwrap();
}
