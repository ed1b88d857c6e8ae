//! The emulated Internet's wiring: network namespaces, one bridge, veth pairs, addresses;
//! and the guards that undo it (and kill every process inside) on drop, also on failure.
//!
//! The generic part (one namespace, processes inside it, stale clean-up) is the test
//! kit's ([`walrus_testkit::netns`]); this module wires the lab's topology with it.
//!
//! Everything lives in namespaces this module creates (named `<prefix>...`); the host's
//! own network is never touched. A run killed with SIGKILL leaves its namespaces behind:
//! [`clean_stale`] (run at every start, and by `walrus-lab clean`) removes those whose
//! creating process is gone.

use super::spec::{LabSpec, ResolverKind, ROOT_ADDR};
use std::net::Ipv4Addr;

pub use walrus_testkit::netns::{
    clean_stale, delete_namespace, ip, ip_batch, require, run, run_prefix, spawn_in,
    Error as LabError, Namespace,
};
pub use walrus_testkit::ChildGuard;

/// The namespaces of one run. Dropping it kills every process in them and deletes them.
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates the whole topology of `spec`: bridge namespace, root, areas, regions, with
    /// the backbone addresses and, in every region, the public (relayed) addresses and the
    /// resolvers' addresses on `lo`.
    pub fn create(spec: &LabSpec) -> Result<Self, LabError> {
        require("ip", "iproute2")?;
        let mut me = Self { names: Vec::new() };
        let net = spec.ns_net();
        me.add(&net)?;
        ip(&net, &["link", "add", "br0", "type", "bridge"])?;
        ip(&net, &["link", "set", "br0", "up"])?;
        ip(&net, &["link", "set", "lo", "up"])?;
        let mut nodes: Vec<(String, String, Ipv4Addr)> =
            vec![(spec.ns_root(), "v-root".into(), ROOT_ADDR)];
        for a in spec.all_areas() {
            nodes.push((spec.ns_area(a), format!("v-{a}"), a.backbone()));
        }
        for r in spec.all_regions() {
            nodes.push((spec.ns_region(r), format!("v-{r}"), r.backbone()));
        }
        for (ns, veth, addr) in &nodes {
            me.add(ns)?;
            ip(
                &net,
                &[
                    "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            ip(&net, &["link", "set", veth, "master", "br0", "up"])?;
            ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(ns, &["link", "set", "eth0", "up"])?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        for r in spec.all_regions() {
            let ns = spec.ns_region(r);
            let mut addrs: Vec<Ipv4Addr> = Vec::new();
            for a in spec.all_areas() {
                addrs.push(a.ns_public());
                addrs.extend(spec.cluster(a));
            }
            addrs.extend(ResolverKind::ALL.iter().map(|k| k.addr(r)));
            let batch: String = addrs
                .iter()
                .map(|a| format!("addr add {a}/32 dev lo\n"))
                .collect();
            ip_batch(&ns, &batch)?;
            // The resolvers query the root directly from their own addresses: the root
            // must route its replies back to this region.
            ip(
                &spec.ns_root(),
                &[
                    "route",
                    "add",
                    &format!("10.200.{}.0/24", r.0),
                    "via",
                    &r.backbone().to_string(),
                ],
            )?;
        }
        Ok(me)
    }

    fn add(&mut self, name: &str) -> Result<(), LabError> {
        run("ip", &["netns", "add", name])?;
        self.names.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            delete_namespace(n);
        }
    }
}
