//! `/metrics`: the Prometheus text exposition of a [`StatusDoc`].
//!
//! A client node (`tier = "client"`) runs no walrus-gcs node: it has no view and sends no
//! protocol frames, so the `walrus_gcs_*` series are left out on it (they would read 0,
//! which looks like a node that stopped working); its link to the group is the
//! `walrus_client_*` series instead.

use super::*;

/// The Prometheus text exposition of a status document.
pub fn render_metrics(doc: &StatusDoc) -> String {
    let c = &doc.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: u64| vec![(String::new(), v as f64)];
    metric(
        "walrus_rounds_total",
        "counter",
        "Rounds this node closed as master.",
        one(c.rounds),
    );
    metric(
        "walrus_round_duration_seconds",
        "summary",
        "Duration of the rounds this node closed as master (report request to decision).",
        vec![
            ("_sum".to_owned(), c.round_seconds_sum),
            ("_count".to_owned(), c.rounds as f64),
        ],
    );
    metric(
        "walrus_last_round_duration_seconds",
        "gauge",
        "Duration of the last round this node closed as master.",
        vec![(String::new(), c.last_round_seconds)],
    );
    metric(
        "walrus_reports_received_total",
        "counter",
        "Reports used in the rounds this node closed.",
        one(c.reports),
    );
    metric(
        "walrus_decisions_total",
        "counter",
        "Decisions made or adopted.",
        one(c.decisions),
    );
    metric(
        "walrus_area_moves_total",
        "counter",
        "Areas moved to another cluster.",
        one(c.area_moves),
    );
    metric(
        "walrus_answer_changes_total",
        "counter",
        "Answers changed within the same cluster.",
        one(c.answer_changes),
    );
    metric(
        "walrus_dns_updates_total",
        "counter",
        "Name-server applications that changed the zone.",
        one(c.dns_updates),
    );
    metric(
        "walrus_dns_update_failures_total",
        "counter",
        "Name-server applications that failed.",
        one(c.dns_failures),
    );
    // A client node has no gcs node: no `walrus_gcs_*` series (see the module doc).
    let member = doc.client.is_none();
    if member {
        metric(
            "walrus_gcs_view_changes_total",
            "counter",
            "Group-communication views installed.",
            one(c.view_changes),
        );
    }
    metric(
        "walrus_master_terms_total",
        "counter",
        "Times this node's Controller became master.",
        one(c.master_terms),
    );
    for (name, help, v) in [
        (
            "walrus_gcs_multicasts_total",
            "Multicasts the group node accepted from local sessions.",
            c.gcs.multicasts,
        ),
        (
            "walrus_gcs_messages_delivered_total",
            "Messages the group node delivered to local sessions.",
            c.gcs.delivered,
        ),
        (
            "walrus_gcs_frames_sent_total",
            "Protocol frames the group node sent to peers.",
            c.gcs.frames_sent,
        ),
        (
            "walrus_gcs_frames_received_total",
            "Protocol frames the group node received from peers.",
            c.gcs.frames_received,
        ),
        (
            "walrus_gcs_handshakes_refused_total",
            "Connection handshakes the group node refused (certificates not from this cluster's CA, unknown names, garbage, timeouts).",
            c.gcs.handshakes_refused,
        ),
    ] {
        if member {
            metric(name, "counter", help, one(v));
        }
    }
    if member {
        metric(
            "walrus_gcs_view_members",
            "gauge",
            "Nodes in the current view.",
            one(doc.view.as_ref().map_or(0, |v| v.members.len() as u64)),
        );
    }
    metric(
        "walrus_is_master",
        "gauge",
        "1 while this node's Controller is master.",
        one(u64::from(doc.is_master)),
    );
    metric(
        "walrus_round",
        "gauge",
        "The last round decided.",
        one(doc.round.unwrap_or(0)),
    );
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &doc.servers {
        let state = s.state.split(' ').next().unwrap_or("unknown");
        *by_state.entry(state).or_default() += 1;
    }
    metric(
        "walrus_servers",
        "gauge",
        "Web servers by state in the last round this node closed.",
        ["working", "dead", "unknown"]
            .iter()
            .map(|st| {
                (
                    format!("{{state=\"{st}\"}}"),
                    by_state.get(st).copied().unwrap_or(0) as f64,
                )
            })
            .collect(),
    );
    metric(
        "walrus_server_load",
        "gauge",
        "Each working server's load (1.0 = at capacity).",
        doc.servers
            .iter()
            .filter_map(|s| {
                s.load.map(|l| {
                    (
                        format!("{{server=\"{}\",cluster=\"{}\"}}", s.name, s.cluster),
                        l,
                    )
                })
            })
            .collect(),
    );
    metric(
        "walrus_server_generation",
        "gauge",
        "The content generation each server's host last reported.",
        doc.servers
            .iter()
            .filter_map(|s| {
                s.generation
                    .map(|g| (format!("{{server=\"{}\"}}", s.name), g as f64))
            })
            .collect(),
    );
    metric(
        "walrus_server_generation_lag",
        "gauge",
        "Generations each server's content is behind the newest one.",
        doc.servers
            .iter()
            .filter_map(|s| {
                s.generation_lag
                    .map(|l| (format!("{{server=\"{}\"}}", s.name), l as f64))
            })
            .collect(),
    );
    let repl = doc.replication.as_ref();
    metric(
        "walrus_replica_generation",
        "gauge",
        "The content generation this node's Replicator serves (primary: publishes).",
        repl.and_then(|r| r.generation)
            .map(|g| vec![(String::new(), g as f64)])
            .unwrap_or_default(),
    );
    metric(
        "walrus_replica_lag",
        "gauge",
        "Generations this node's Replicator is behind the newest announced one.",
        repl.and_then(|r| r.lag)
            .map(|l| vec![(String::new(), l as f64)])
            .unwrap_or_default(),
    );
    metric(
        "walrus_replica_pull_failures_total",
        "counter",
        "Failed pull attempts of this node's Replicator.",
        repl.map(|r| vec![(String::new(), r.failures as f64)])
            .unwrap_or_default(),
    );
    metric(
        "walrus_area_cluster",
        "gauge",
        "1 for the cluster each area is assigned to in the last decision this node knows.",
        doc.areas
            .iter()
            .filter_map(|a| {
                a.cluster
                    .as_ref()
                    .map(|c| (format!("{{area=\"{}\",cluster=\"{c}\"}}", a.name), 1.0))
            })
            .collect(),
    );
    let mut cluster_states: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for c in &doc.clusters {
        for st in ["working", "dead", "unknown"] {
            cluster_states.insert((c.name.as_str(), st), 0);
        }
    }
    for s in &doc.servers {
        let state = s.state.split(' ').next().unwrap_or("unknown");
        *cluster_states
            .entry((s.cluster.as_str(), state))
            .or_default() += 1;
    }
    metric(
        "walrus_cluster_servers",
        "gauge",
        "Each cluster's web servers by state in the last round this node closed.",
        cluster_states
            .into_iter()
            .map(|((c, st), n)| (format!("{{cluster=\"{c}\",state=\"{st}\"}}"), n as f64))
            .collect(),
    );
    if let Some(c) = &doc.client {
        metric(
            "walrus_client_attached",
            "gauge",
            "On a client node (tier = \"client\"): 1 with the member it is attached to, 0 \
             (member=\"\") while it connects to the next.",
            vec![(
                format!(
                    "{{member=\"{}\"}}",
                    c.attached_to.as_deref().unwrap_or_default()
                ),
                f64::from(u8::from(c.attached_to.is_some())),
            )],
        );
        for (name, help, v) in [
            (
                "walrus_client_attachments_total",
                "On a client node: links to a member established (the first attachment and every fail-over).",
                c.attachments,
            ),
            (
                "walrus_client_links_lost_total",
                "On a client node: established links to a member that ended (each followed by a fail-over to the next member of its attach list).",
                c.links_lost,
            ),
            (
                "walrus_client_multicasts_total",
                "On a client node: multicasts its link accepted from its roles.",
                c.multicasts,
            ),
            (
                "walrus_client_messages_delivered_total",
                "On a client node: messages its link delivered to its roles.",
                c.delivered,
            ),
        ] {
            metric(name, "counter", help, one(v));
        }
        metric(
            "walrus_client_unconfirmed",
            "gauge",
            "On a client node: multicasts not yet confirmed by a member (its send queue; resent on fail-over).",
            one(c.unconfirmed),
        );
    } else if !doc.clients.is_empty() {
        metric(
            "walrus_clients_attached",
            "gauge",
            "Client nodes attached (on a member: to it), one series per client.",
            doc.clients
                .iter()
                .map(|c| {
                    (
                        format!(
                            "{{client=\"{}\",member=\"{}\"}}",
                            c.node,
                            c.attached_to.as_deref().unwrap_or_default()
                        ),
                        f64::from(u8::from(c.attached_to.is_some())),
                    )
                })
                .collect(),
        );
    }
    let mut digests = doc.config_digests.clone();
    digests
        .entry(doc.node.clone())
        .or_insert_with(|| doc.config_digest.clone());
    metric(
        "walrus_config_info",
        "gauge",
        "Always 1, one series per node this node knows: the digest of the configuration file \
         that node runs (its own, and the others' as announced over the group).",
        digests
            .iter()
            .map(|(node, d)| (format!("{{node=\"{node}\",digest=\"{d}\"}}"), 1.0))
            .collect(),
    );
    metric(
        "walrus_area_home",
        "gauge",
        "1 while an area is assigned to its home cluster.",
        doc.areas
            .iter()
            .map(|a| {
                (
                    format!("{{area=\"{}\"}}", a.name),
                    f64::from(u8::from(a.cluster.as_deref() == Some(&a.home_cluster))),
                )
            })
            .collect(),
    );
    let per_role = |f: &dyn Fn(&ActorDoc) -> f64| -> Vec<(String, f64)> {
        doc.actors
            .iter()
            .map(|a| (format!("{{role=\"{}\"}}", a.role), f(a)))
            .collect()
    };
    metric(
        "walrus_actor_restarts_total",
        "counter",
        "Restarts of each role actor by its supervisor (a panic or a failed session).",
        per_role(&|a| a.restarts as f64),
    );
    metric(
        "walrus_actor_mailbox_depth",
        "gauge",
        "Events waiting in each role actor's bounded queue.",
        per_role(&|a| a.mailbox_depth as f64),
    );
    metric(
        "walrus_actor_mailbox_capacity",
        "gauge",
        "Capacity of each role actor's bounded queue.",
        per_role(&|a| a.mailbox_capacity as f64),
    );
    metric(
        "walrus_actor_mailbox_full_total",
        "counter",
        "Times an event found a role actor's queue full (the sender waited).",
        per_role(&|a| a.mailbox_full as f64),
    );
    if let Some(st) = &doc.steering {
        metric(
            "walrus_steering_table_prefixes",
            "gauge",
            "Prefixes (/24, /48) in the learned proximity tables of this node's name servers.",
            one(st.table_prefixes),
        );
        metric(
            "walrus_steering_answers_total",
            "counter",
            "Answers to www.<site> by who decided them: the learned table, a [[dns.steering]] rule, or the paper's rule.",
            [
                ("learned", st.answers_learned),
                ("override", st.answers_override),
                ("paper", st.answers_paper),
            ]
            .iter()
            .map(|(by, n)| (format!("{{by=\"{by}\"}}"), *n as f64))
            .collect(),
        );
        metric(
            "walrus_steering_probes_total",
            "counter",
            "Truncated answers sent to time a resolver's TCP retry (learned steering's measurement).",
            one(st.probes_sent),
        );
        metric(
            "walrus_steering_answers_avoided_down_total",
            "counter",
            "Answers to www.<site> that named another area (or the paper's rule) because the area a rule or the learned table chose had no Director in the Steering group's view.",
            one(st.answers_avoided_down),
        );
        metric(
            "walrus_steering_areas_alive",
            "gauge",
            "Areas with a Director in the Steering group's view, as this node's name server sees it (0: no view yet, all count as alive).",
            one(st.areas_alive),
        );
    }
    out
}
