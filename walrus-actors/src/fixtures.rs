//! Test fixtures (`cfg(test)` or feature `testing`): a topology of areas and home clusters,
//! and a server's statistics. Here rather than in walrus-testkit so that this crate's own
//! unit tests use the same ones (a unit test sees another copy of a dependency's types);
//! `walrus_testkit::actors::fixtures` re-exports them for every other test.

use crate::model::{
    AreaName, AreaSpec, ClusterName, ClusterSpec, ServerName, ServerStats, Topology, WebStats,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Areas a1..a`areas` with home clusters c1..c`areas`, each of `servers` servers named
/// `c<c>-s<s>` at 10.`c`.0.`s`.
pub fn topology(areas: u8, servers: u8) -> Topology {
    let mut t = Topology {
        areas: BTreeMap::new(),
        clusters: BTreeMap::new(),
    };
    for c in 1..=areas {
        t.areas.insert(
            AreaName(format!("a{c}")),
            AreaSpec {
                home_cluster: ClusterName(format!("c{c}")),
            },
        );
        let servers = (1..=servers)
            .map(|s| {
                (
                    ServerName(format!("c{c}-s{s}")),
                    vec![IpAddr::V4(Ipv4Addr::new(10, c, 0, s))],
                )
            })
            .collect();
        t.clusters
            .insert(ClusterName(format!("c{c}")), ClusterSpec { servers });
    }
    t
}

/// A topology from (area, home cluster, server, address) rows; panics on a bad address
/// (the rows are the test's own literals).
#[allow(clippy::expect_used)]
pub fn topology_of(rows: &[(&str, &str, &str, &str)]) -> Topology {
    let mut t = Topology {
        areas: BTreeMap::new(),
        clusters: BTreeMap::new(),
    };
    for (area, cluster, server, addr) in rows {
        t.areas.insert(
            AreaName::from(*area),
            AreaSpec {
                home_cluster: ClusterName::from(*cluster),
            },
        );
        t.clusters
            .entry(ClusterName::from(*cluster))
            .or_insert_with(|| ClusterSpec {
                servers: BTreeMap::new(),
            })
            .servers
            .insert(
                ServerName::from(*server),
                vec![addr.parse().expect("a fixture address")],
            );
    }
    t
}

/// A one-second period of a server with an idle CPU, plenty of memory, `busy` of
/// `max_workers` workers busy and `hits` requests.
pub fn stats(busy: u32, max_workers: u32, hits: u64) -> ServerStats {
    ServerStats {
        period: Duration::from_secs(1),
        cpu_user: Some(0.0),
        cpu_system: Some(0.0),
        cpu_idle: 1.0,
        mem_free_bytes: 1 << 30,
        swap_used_bytes: 0,
        pages_out_per_sec: Some(0.0),
        free_virtual_bytes: 1 << 30,
        total_virtual_bytes: 1 << 31,
        procs_running: Some(1),
        procs_blocked: Some(0),
        web: WebStats {
            hits,
            busy_workers: busy,
            max_workers,
        },
    }
}
