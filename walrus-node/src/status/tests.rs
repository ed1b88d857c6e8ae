use super::*;
use std::path::Path;
use walrus_actors::controller::round::RoundStatus;
use walrus_actors::model::{AreaAnswer, Change, ClusterName, Generation, Round, ServerName};

const EXAMPLE: &str = include_str!("../../../config/walrus.toml");

fn config() -> Config {
    Config::from_toml(Path::new("walrus.toml"), EXAMPLE).unwrap()
}

fn decision(round: u64, eu: &str, changes: Vec<Change>) -> Decision {
    Decision {
        round: Round(round),
        epoch: round,
        answers: [(
            AreaName::from("eu"),
            AreaAnswer {
                cluster: ClusterName::from(eu),
                records: vec!["127.0.2.1".parse().unwrap()],
            },
        )]
        .into(),
        changes,
    }
}

fn master_status(round: u64, d: Decision) -> ControllerStatus {
    ControllerStatus {
        is_master: true,
        last_decision: Some(d),
        last_round: Some(RoundStatus {
            round: Round(round),
            reports: 5,
            states: [
                (
                    ServerName::from("eu-1"),
                    ServerState::Dead(DeadCause::Panic),
                ),
                (
                    ServerName::from("us-1"),
                    ServerState::Working {
                        load: 0.25,
                        basis: LoadBasis::Fresh,
                    },
                ),
            ]
            .into(),
            cluster_loads: [(ClusterName::from("c-us"), Some(0.25))].into(),
            duration: Duration::from_millis(400),
            early: false,
            generations: [(ServerName::from("us-1"), Generation(4))].into(),
            newest_generation: Some(Generation(5)),
        }),
        ..ControllerStatus::default()
    }
}

#[test]
fn a_move_is_logged_with_its_round_phase_and_reason_and_counted() {
    let mut o = Observer::new("eu-a", &config());
    let first = decision(1, "c-eu", vec![]);
    assert!(o
        .observe(Sample {
            controller: Some(master_status(1, first)),
            ..Sample::default()
        })
        .is_empty());
    let moved = decision(
        2,
        "c-us",
        vec![Change {
            area: AreaName::from("eu"),
            from: Some(ClusterName::from("c-eu")),
            to: ClusterName::from("c-us"),
            phase: 3,
            reason: "c-eu has no working server".into(),
        }],
    );
    let added = o.observe(Sample {
        controller: Some(master_status(2, moved.clone())),
        ..Sample::default()
    });
    assert_eq!(
        added,
        ["round 2: area eu → c-us (from c-eu), phase 3, c-eu has no working server"]
    );
    // The same decision sampled again adds nothing.
    assert!(o
        .observe(Sample {
            controller: Some(master_status(2, moved)),
            ..Sample::default()
        })
        .is_empty());
    let c = o.counters();
    assert_eq!((c.rounds, c.reports, c.decisions), (2, 10, 2));
    assert_eq!((c.area_moves, c.answer_changes, c.master_terms), (1, 0, 1));
    let doc = o.doc();
    let eu = doc.areas.iter().find(|a| a.name == "eu").unwrap();
    assert_eq!(eu.cluster.as_deref(), Some("c-us"));
    assert_eq!(eu.answer, ["127.0.2.1"]);
    let s = doc.servers.iter().find(|s| s.name == "eu-1").unwrap();
    assert_eq!(s.state, "dead (PANIC)");
    assert_eq!(doc.events.len(), 1);
    assert_eq!(doc.round, Some(2));
}

#[test]
fn metrics_are_prometheus_text_with_every_family() {
    let mut o = Observer::new("eu-a", &config());
    o.observe(Sample {
        controller: Some(master_status(7, decision(7, "c-eu", vec![]))),
        replicator: Some(ReplicatorStatus {
            generation: Some(Generation(3)),
            newest: Some(Generation(5)),
            failures: 2,
            ..ReplicatorStatus::default()
        }),
        ..Sample::default()
    });
    let m = render_metrics(&o.doc());
    for family in [
        "walrus_rounds_total 1",
        "walrus_reports_received_total 5",
        "walrus_round_duration_seconds_sum 0.4",
        "walrus_round_duration_seconds_count 1",
        "walrus_area_moves_total 0",
        "walrus_dns_updates_total 0",
        "walrus_dns_update_failures_total 0",
        "walrus_gcs_view_changes_total 0",
        "walrus_servers{state=\"working\"} 1",
        "walrus_servers{state=\"dead\"} 1",
        "walrus_server_load{server=\"us-1\",cluster=\"c-us\"} 0.25",
        "walrus_area_home{area=\"eu\"} 1",
        "walrus_is_master 1",
        "walrus_round 7",
        "walrus_server_generation{server=\"us-1\"} 4",
        "walrus_server_generation_lag{server=\"us-1\"} 1",
        "walrus_replica_generation 3",
        "walrus_replica_lag 2",
        "walrus_replica_pull_failures_total 2",
        "walrus_area_cluster{area=\"eu\",cluster=\"c-eu\"} 1",
        "walrus_cluster_servers{cluster=\"c-us\",state=\"working\"} 1",
        "walrus_cluster_servers{cluster=\"c-eu\",state=\"dead\"} 1",
        "walrus_cluster_servers{cluster=\"c-eu\",state=\"working\"} 0",
    ] {
        assert!(m.contains(family), "missing {family} in\n{m}");
    }
    // Every sample line belongs to a declared family.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            m.contains(&format!("# TYPE {name} ")) || m.contains(&format!("# TYPE {base} summary")),
            "{line}"
        );
    }
}

#[test]
fn the_table_shows_master_areas_and_servers() {
    let mut o = Observer::new("eu-a", &config());
    o.observe(Sample {
        controller: Some(master_status(3, decision(3, "c-us", vec![]))),
        ..Sample::default()
    });
    let t = render_table(&o.doc());
    assert!(t.contains("(this node)"), "{t}");
    // Each server's content generation and lag behind the newest (5).
    assert!(t.contains("0.25   4 (lag 1)"), "{t}");
    assert!(
        t.contains("eu         c-eu       c-us       127.0.2.1"),
        "{t}"
    );
    assert!(t.contains("dead (PANIC)"), "{t}");
    let back: StatusDoc = serde_json::from_str(&serde_json::to_string(&o.doc()).unwrap()).unwrap();
    assert_eq!(back, o.doc());
}

#[test]
fn learned_steering_counters_reach_status_and_metrics_under_their_names() {
    let mut o = Observer::new("n1", &config());
    o.observe(Sample::default());
    assert_eq!(o.doc().steering, None);
    assert!(!render_metrics(&o.doc()).contains("walrus_steering"));
    o.observe(Sample {
        steering: Some(SteeringCounters {
            table_prefixes: 7,
            answers_learned: 40,
            answers_override: 2,
            answers_paper: 9,
            probes_sent: 12,
            answers_avoided_down: 5,
            areas_alive: 2,
            ..SteeringCounters::default()
        }),
        ..Sample::default()
    });
    let json = serde_json::to_value(o.doc()).unwrap();
    let st = &json["steering"];
    for (k, v) in [
        ("table_prefixes", 7),
        ("answers_learned", 40),
        ("answers_override", 2),
        ("answers_paper", 9),
        ("probes_sent", 12),
        ("answers_avoided_down", 5),
        ("areas_alive", 2),
    ] {
        assert_eq!(st[k], v, "{k}");
    }
    let m = render_metrics(&o.doc());
    for line in [
        "walrus_steering_table_prefixes 7",
        "walrus_steering_answers_total{by=\"learned\"} 40",
        "walrus_steering_answers_total{by=\"override\"} 2",
        "walrus_steering_answers_total{by=\"paper\"} 9",
        "walrus_steering_probes_total 12",
        "walrus_steering_answers_avoided_down_total 5",
        "walrus_steering_areas_alive 2",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing from\n{m}");
    }
}

#[test]
fn a_client_nodes_member_reaches_status_and_metrics() {
    let mut o = Observer::new("w1", &config());
    o.observe(Sample::default());
    assert_eq!(o.doc().client, None);
    assert!(!render_metrics(&o.doc()).contains("walrus_client_attached"));
    o.observe(Sample {
        attached_to: Some(Some("m1".to_owned())),
        client_link: Some(walrus_gcs::tier::ClientStats {
            attachments: 2,
            links_lost: 1,
            multicasts: 40,
            delivered: 75,
            unconfirmed: 3,
        }),
        ..Sample::default()
    });
    let json = serde_json::to_value(o.doc()).unwrap();
    assert_eq!(json["client"]["attached_to"], "m1");
    assert_eq!(json["client"]["links_lost"], 1);
    assert!(json["view"].is_null());
    let m = render_metrics(&o.doc());
    for line in [
        "walrus_client_attached{member=\"m1\"} 1",
        "walrus_client_attachments_total 2",
        "walrus_client_links_lost_total 1",
        "walrus_client_multicasts_total 40",
        "walrus_client_messages_delivered_total 75",
        "walrus_client_unconfirmed 3",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing from\n{m}");
    }
    assert!(!m.contains("walrus_clients_attached"), "{m}");
    // No gcs node on a client: no walrus_gcs_* series reading 0.
    assert!(!m.contains("walrus_gcs_"), "{m}");
    o.observe(Sample {
        attached_to: Some(None),
        ..Sample::default()
    });
    let m = render_metrics(&o.doc());
    assert!(
        m.lines()
            .any(|l| l == "walrus_client_attached{member=\"\"} 0"),
        "{m}"
    );
}

#[test]
fn client_nodes_and_their_members_reach_status_and_the_table() {
    let mut o = Observer::new("m1", &config());
    o.observe(Sample::default());
    assert!(o.doc().clients.is_empty());
    assert!(!render_table(&o.doc()).contains("clients "));
    o.observe(Sample {
        clients: [
            ("w1".to_owned(), Some("m1".to_owned())),
            ("w2".to_owned(), None),
        ]
        .into(),
        ..Sample::default()
    });
    let json = serde_json::to_value(o.doc()).unwrap();
    assert_eq!(json["clients"][0]["node"], "w1");
    assert_eq!(json["clients"][0]["attached_to"], "m1");
    assert!(json["clients"][1]["attached_to"].is_null());
    let t = render_table(&o.doc());
    assert!(t.contains("clients w1 → m1, w2 → (connecting)"), "{t}");
    let m = render_metrics(&o.doc());
    for line in [
        "walrus_clients_attached{client=\"w1\",member=\"m1\"} 1",
        "walrus_clients_attached{client=\"w2\",member=\"\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing from\n{m}");
    }
    // An older document without the field still parses.
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("clients");
    let back: StatusDoc = serde_json::from_value(old).unwrap();
    assert!(back.clients.is_empty());
}
