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

/// UDP port of a region's delay line ([`super::relay`]): area A's VXLAN device for the
/// region sends its frames there.
pub const DELAY_LINE_PORT: u16 = 4790;
/// UDP port of the regions' own VXLAN devices (the delay line hands frames on to it).
pub const VXLAN_PORT: u16 = 4789;

/// The way back from every area to every region's resolvers, through the region's delay
/// line: in area A, `10.200.R.0/24` is routed into a VXLAN device (`dlR`, VNI 16·A+R)
/// whose frames go to region R's delay line, which holds each one for the full
/// region×area RTT and hands it to region R's VXLAN device of the same VNI (`dlA`), which
/// delivers it to the resolver's address. The other way (resolver → area) goes straight
/// over the backbone. So whatever an area's server sends to a resolver's address — a DNS
/// reply, a TCP SYN-ACK, a probe — comes back after the emulated RTT, as it would on the
/// Internet: a server timing its own exchanges with a resolver (learned steering, issue
/// 21) measures the lab's latency matrix. Reverse-path filtering is off in the areas and
/// regions (the two directions take different devices).
fn wire_delay_lines(spec: &LabSpec) -> Result<(), LabError> {
    let no_rp_filter = |ns: &str| {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
            ],
        )
    };
    for a in spec.all_areas() {
        no_rp_filter(&spec.ns_area(a))?;
    }
    for r in spec.all_regions() {
        no_rp_filter(&spec.ns_region(r))?;
    }
    for a in spec.all_areas() {
        let mut area_batch = String::new();
        for r in spec.all_regions() {
            let vni = 16 * u32::from(a.0) + u32::from(r.0);
            let mac = format!("02:1a:00:00:{:02x}:{:02x}", a.0, r.0);
            let gw = format!("10.201.{}.1", r.0);
            ip_batch(
                &spec.ns_region(r),
                &format!(
                    "link add dl{a} type vxlan id {vni} local {} dstport {VXLAN_PORT}
                     link set dl{a} address {mac} up
",
                    r.backbone()
                ),
            )?;
            area_batch.push_str(&format!(
                "link add dl{r} type vxlan id {vni} local {} remote {} dstport {DELAY_LINE_PORT}
                 link set dl{r} up
                 neigh add {gw} lladdr {mac} dev dl{r} nud permanent
                 route add {} via {gw} dev dl{r} onlink
",
                a.backbone(),
                r.backbone(),
                r.resolver_prefix(),
            ));
        }
        ip_batch(&spec.ns_area(a), &area_batch)?;
    }
    Ok(())
}

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
        wire_delay_lines(spec)?;
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
