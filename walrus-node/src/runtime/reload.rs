//! What a reload (SIGHUP) may change and what it refuses: [`plan_reload`] compares the
//! running file with the new one and says, per change, applied or refused with the reason.

use super::*;

/// What a reload did: one line per change applied ("controller", "server s4 added to
/// cluster c1", "node n4 added", ...), in the order of [`plan_reload`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The changes applied to the running node.
    pub applied: Vec<String>,
}

/// What a reload of node `node` from `old` to `new` changes, or why it is refused (every
/// reason at once). Pure; [`NodeRuntime::reload`] applies the plan.
///
/// Applied live: `[timing]` `round_period` and `report_timeout`, `[controller]`,
/// `[notify]`, and the topology of the other nodes: web servers, clusters, areas and
/// nodes added, removed or changed (an area's home cluster, a server's addresses, a
/// node's address or roles), including this node's own area's home cluster.
///
/// Refused (needs a restart), each with the reason: the site; `[tls]` (the group's
/// certificates are loaded at start); `[dns]` (backend, mode, TTL, state directory and
/// steering are the Directors' at start); `[http]` (the HTTP side reads its token and
/// certificate at start); `[reporter]`, `report_interval` and `fast_failover` (the
/// Reporter's at start); `gcs_profile` (the group's timeouts); `[replicator]`; this
/// node's own entry (address, roles, server, area, status address, tier, attach list,
/// client port: they are its identity in the group and what it runs); on a client, its
/// members' client listeners (dialled as set at start); this node's own web server's status page,
/// when it reports; this node's own area's zone, name server or TSIG key, when it is
/// its Director; with `dns.mode = "direct"` on a Controller, areas added or removed (its
/// updaters are made at start).
pub fn plan_reload(old: &Config, new: &Config, node: &str) -> Result<Vec<String>, Vec<String>> {
    let t = (&old.timing, &new.timing);
    let fixed: [(bool, &str); 8] = [
        (
            old.site != new.site,
            "site: the zones served and the notifications name it",
        ),
        (
            old.tls != new.tls,
            "[tls]: the group's certificates are loaded at start",
        ),
        (
            old.dns != new.dns,
            "[dns]: backend, mode, TTL, state directory and steering are set up at start",
        ),
        (
            old.http != new.http,
            "[http]: the HTTP side reads its token and certificate at start",
        ),
        (
            old.reporter != new.reporter,
            "[reporter]: the Reporter's settings are read at start",
        ),
        (
            t.0.report_interval != t.1.report_interval || t.0.fast_failover != t.1.fast_failover,
            "[timing] report_interval, fast_failover: the Reporter's settings are read at start",
        ),
        (
            t.0.gcs_profile != t.1.gcs_profile,
            "[timing] gcs_profile: the group's timeouts are set at start",
        ),
        (
            old.replicator != new.replicator,
            "[replicator]: the Replicator's settings are read at start",
        ),
    ];
    let mut refused: Vec<String> = fixed
        .iter()
        .filter(|(changed, _)| *changed)
        .map(|(_, why)| (*why).to_owned())
        .collect();
    let (Some(me_old), Some(me_new)) = (old.nodes.get(node), new.nodes.get(node)) else {
        refused.push(format!("the file does not name this node ({node})"));
        return Err(refused);
    };
    if me_old != me_new {
        refused.push(format!(
            "[nodes.{node}]: this node's own address, roles, server, area and status address              are its identity in the group and what it runs"
        ));
    }
    let listeners = |c: &Config| -> Vec<Option<SocketAddr>> {
        me_old
            .attach
            .iter()
            .map(|m| c.nodes.get(m).and_then(|n| n.client_addr()))
            .collect()
    };
    if listeners(old) != listeners(new) {
        refused.push(format!(
            "[nodes.{node}] attach: this client's members' client listeners (address, \
             client_port) are dialled as set at start"
        ));
    }
    let server_of = |c: &Config, s: &ServerName| {
        c.clusters
            .iter()
            .find_map(|(cn, cl)| cl.servers.get(s).map(|x| (cn.clone(), x.status.clone())))
    };
    if let (Some(s), true) = (&me_old.server, me_old.roles.contains(&Role::Reporter)) {
        if server_of(old, s) != server_of(new, s) {
            refused.push(format!(
                "server {s}: this node reports it; its cluster and status page are the                  Reporter's at start"
            ));
        }
    }
    if let (Some(a), true) = (&me_old.area, me_old.roles.contains(&Role::Director)) {
        let fixed = |c: &Config| {
            c.areas
                .get(a)
                .map(|x| (x.zone.clone(), x.name_server, x.tsig_key_file.clone()))
        };
        if fixed(old) != fixed(new) {
            refused.push(format!(
                "area {a}: this node is its Director; its zone, name server and TSIG key are                  set up at start"
            ));
        }
    }
    let areas_added_or_removed = old.areas.keys().ne(new.areas.keys());
    if areas_added_or_removed
        && old.dns.mode == DnsMode::Direct
        && me_old.roles.contains(&Role::Controller)
    {
        refused.push(
            "areas added or removed with dns.mode = \"direct\": the master's per-area updaters              are made at start"
                .to_owned(),
        );
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let mut applied = Vec::new();
    if old.timing.round_period != new.timing.round_period
        || old.timing.report_timeout != new.timing.report_timeout
    {
        applied.push("timing".to_owned());
    }
    if old.controller != new.controller {
        applied.push("controller".to_owned());
    }
    if old.notify != new.notify {
        applied.push("notify".to_owned());
    }
    diff_keys(&mut applied, "area", &old.areas, &new.areas);
    diff_keys(&mut applied, "cluster", &old.clusters, &new.clusters);
    let servers = |c: &Config| -> BTreeMap<ServerName, (ClusterName, Vec<std::net::IpAddr>)> {
        c.clusters
            .iter()
            .flat_map(|(cn, cl)| {
                cl.servers
                    .iter()
                    .map(move |(s, x)| (s.clone(), (cn.clone(), x.addresses.clone())))
            })
            .collect()
    };
    diff_keys(&mut applied, "server", &servers(old), &servers(new));
    diff_keys(&mut applied, "node", &old.nodes, &new.nodes);
    Ok(applied)
}

/// One line per key added, removed or changed between `old` and `new`.
pub(super) fn diff_keys<K: std::fmt::Display + Ord, V: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{what} {k} added")),
            Some(o) if o != v => out.push(format!("{what} {k} changed")),
            Some(_) => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} {k} removed"));
    }
}
