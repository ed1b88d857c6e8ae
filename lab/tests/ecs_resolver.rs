//! EDNS Client Subnet through a real resolver (issue 21): Unbound with its `subnetcache`
//! module, and PowerDNS Recursor with `ecs-add-for`, send each client's /24 to the
//! embedded name servers, and the site's answer follows the client, not the resolver.
//!
//! Three areas' embedded servers (`EmbeddedServer`, in this process) on loopback ports;
//! the resolver reaches them through stub (Unbound) or forward (PowerDNS) zones and sends
//! ECS to 127.0.0.1. The steering table maps 127.0.1.0/24 to area 2 and 127.0.2.0/24 to
//! area 3; every query reaches the servers from 127.0.0.1, so without ECS every client
//! would get the same answer. Stub clients bound to 127.0.3.1, 127.0.1.1, 127.0.2.1, ...
//! ask for `www.example.com` one after the other *without flushing the cache*: each must
//! get its own area's address, which holds only if the scope of the answer before kept
//! the resolver from reusing it (planting a scope of 0 in `Steering::pick` makes 127.0.1.1
//! get area 1, the answer each resolver cached for 127.0.3.1: both fail there). Then
//! `dig +subnet` asks area 1's server directly and reads the scope: /24 for a mapped /24,
//! 0 for a name steering does not change. No root, no network namespace; about a second
//! per resolver.
//!
//! Needs the Debian packages unbound, pdns-recursor and bind9-dnsutils (dig); a missing
//! one fails the test, naming the package.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use walrus_actors::director::embedded::EmbeddedServer;
use walrus_actors::director::steering::Steering;
use walrus_actors::director::zone::{AreaServer, RecordTtl, WwwRecords, ZoneLayout};
use walrus_actors::model::AreaName;
use walrus_testkit::{free_udp_port, need, ChildGuard, TempDir};

const AREAS: u8 = 3;

fn zone(n: u8) -> String {
    format!("area-{n}.example.com")
}

/// The address area `n`'s cluster serves: 10.0.0.n.
fn area_addr(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

/// `www.example.com` A through the resolver at `resolver`, asked from `client`: the A
/// records at the end of the chain (None when no reply came).
fn resolve_from(client: IpAddr, resolver: SocketAddr) -> Option<Vec<Ipv4Addr>> {
    let sock = UdpSocket::bind(SocketAddr::new(client, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut q = Message::new();
    q.set_id(0x2121).set_recursion_desired(true);
    q.add_query(Query::query(
        Name::from_ascii("www.example.com.").unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..4 {
        sock.send_to(&bytes, resolver).unwrap();
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let r = Message::from_vec(&buf[..n]).ok()?;
        let addrs = r
            .answers()
            .iter()
            .filter_map(|rec| match rec.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        return Some(addrs);
    }
    None
}

/// The `CLIENT-SUBNET:` line of `dig +subnet` against `server`, e.g. `127.0.1.0/24/24`.
fn dig_subnet(server: SocketAddr, name: &str, subnet: &str) -> String {
    let out = Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            name,
            "A",
            "+norec",
            &format!("+subnet={subnet}"),
            "+tries=2",
            "+time=1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.split_once("CLIENT-SUBNET:")
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| format!("no CLIENT-SUBNET in: {text}"))
}

/// The resolvers that send ECS here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Unbound 1.17: `subnetcache` module, `send-client-subnet`.
    Unbound,
    /// PowerDNS Recursor 4.8: `ecs-add-for`, `edns-subnet-allow-list`.
    Pdns,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_sends_client_subnets_and_each_client_gets_its_own_area() {
    each_client_gets_its_own_area(Kind::Unbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdns_recursor_sends_client_subnets_and_each_client_gets_its_own_area() {
    each_client_gets_its_own_area(Kind::Pdns).await;
}

async fn each_client_gets_its_own_area(kind: Kind) {
    let program = match kind {
        Kind::Unbound => need("unbound", "unbound"),
        Kind::Pdns => need("pdns_recursor", "pdns-recursor"),
    };
    need("dig", "bind9-dnsutils");
    let work = TempDir::new(&format!("ecs-{kind:?}"));
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();

    // The three areas' embedded servers, each with the site zone and its own area zone.
    let steering = || {
        Steering::from_pairs([
            ("127.0.1.0/24", "area-2.example.com"),
            ("127.0.2.0/24", "area-3.example.com"),
        ])
        .unwrap()
    };
    let all: Vec<AreaServer> = (1..=AREAS)
        .map(|n| AreaServer::new(&zone(n), None, vec![loopback]).unwrap())
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    let mut tasks = Vec::new();
    for n in 1..=AREAS {
        let layout = ZoneLayout::new(
            "example.com",
            &zone(n),
            None,
            vec![loopback],
            RecordTtl::DEFAULT,
        )
        .unwrap()
        .with_other_areas(all.clone());
        let server = EmbeddedServer::open_or(
            AreaName::from(format!("area-{n}").as_str()),
            layout,
            work.join(format!("state-{n}.json")),
            WwwRecords::from_addrs([IpAddr::V4(area_addr(n))], RecordTtl::DEFAULT),
        )
        .unwrap();
        server.set_steering(steering());
        let listening = server.bind(SocketAddr::new(loopback, 0)).await.unwrap();
        servers.push(listening.local_addr());
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(listening.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }

    let port = free_udp_port();
    let resolver_addr = SocketAddr::new(loopback, port);
    let resolver = start_resolver(kind, &program, work.path(), port, &servers);

    let client = |s: &str| -> IpAddr { s.parse().unwrap() };
    let started = Instant::now();
    // The resolver is ready when it answers (tens of ms); 127.0.3.1 is unmapped and
    // falls back to the resolver's own address (unmapped too): area 1.
    let mut first = None;
    while started.elapsed() < Duration::from_secs(10) && first.is_none() {
        first = resolve_from(client("127.0.3.1"), resolver_addr);
    }
    let log = || std::fs::read_to_string(work.join("resolver.log")).unwrap_or_default();
    assert_eq!(first, Some(vec![area_addr(1)]), "{kind:?} log:\n{}", log());
    // One after the other, cache kept: each client its own area.
    for (from, area) in [
        ("127.0.1.1", 2),
        ("127.0.2.1", 3),
        ("127.0.1.2", 2),
        ("127.0.3.2", 1),
        ("127.0.2.9", 3),
    ] {
        assert_eq!(
            resolve_from(client(from), resolver_addr),
            Some(vec![area_addr(area)]),
            "client {from} via {kind:?}; log:\n{}",
            log()
        );
    }
    let through_resolver = started.elapsed();

    // The scope, read by dig straight from area 1's server: (name, client subnet, the
    // CLIENT-SUBNET dig prints: address/source/scope).
    for (name, subnet, want) in [
        ("www.example.com", "127.0.1.0/24", "127.0.1.0/24/24"),
        // 127.0.3.0 shares 23 bits with 127.0.2.0: the fallback answer holds for the /24.
        ("www.example.com", "127.0.3.0/24", "127.0.3.0/24/24"),
        // A /16 holding both mapped /24s cannot be told apart: capped at the source.
        ("www.example.com", "127.0.0.0/16", "127.0.0.0/16/16"),
        // A name that steering does not change: scope 0.
        ("www.area-1.example.com", "127.0.1.0/24", "127.0.1.0/24/0"),
    ] {
        assert_eq!(
            dig_subnet(servers[0], name, subnet),
            want,
            "{name} {subnet}"
        );
    }
    eprintln!(
        "{{\"test\":\"ecs_resolver\",\"resolver\":\"{kind:?}\",\"queries\":6,\"through_resolver_ms\":{},\"total_ms\":{}}}",
        through_resolver.as_millis(),
        started.elapsed().as_millis()
    );

    drop(resolver);
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
}

/// Starts the resolver on 127.0.0.1:`port`, reaching area `n`'s zone (and area 1's the
/// site zone) at `servers[n - 1]` and sending ECS (the client's /24, both defaults) to
/// 127.0.0.1. Its log is `resolver.log` in `work`.
fn start_resolver(
    kind: Kind,
    program: &Path,
    work: &Path,
    port: u16,
    servers: &[SocketAddr],
) -> ChildGuard {
    let d = work.display();
    let mut zones = vec![("example.com".to_owned(), servers[0])];
    zones.extend((1..=AREAS).map(|n| (zone(n), servers[usize::from(n - 1)])));
    let (conf_name, conf, args) = match kind {
        Kind::Unbound => {
            let stubs: String = zones
                .iter()
                .map(|(z, a)| {
                    let (ip, p) = (a.ip(), a.port());
                    format!("stub-zone:\n  name: \"{z}\"\n  stub-addr: {ip}@{p}\n")
                })
                .collect();
            let conf = format!(
                "server:\n  interface: 127.0.0.1\n  port: {port}\n  interface-automatic: no\n\
                 \x20 do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  username: \"\"\n\
                 \x20 chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n\
                 \x20 module-config: \"subnetcache iterator\"\n  send-client-subnet: 127.0.0.1\n\
                 \x20 do-not-query-localhost: no\n  qname-minimisation: no\n  use-syslog: no\n\
                 \x20 logfile: \"{d}/resolver.log\"\n  verbosity: 1\n  num-threads: 1\n\
                 \x20 so-reuseport: no\n{stubs}"
            );
            let c = work.join("unbound.conf").display().to_string();
            (
                "unbound.conf",
                conf,
                vec!["-d".to_owned(), "-c".to_owned(), c],
            )
        }
        Kind::Pdns => {
            let forwards: Vec<String> = zones
                .iter()
                .map(|(z, a)| format!("{z}={}:{}", a.ip(), a.port()))
                .collect();
            // No security polling (it would query the Internet); private addresses allowed.
            let conf = format!(
                "security-poll-suffix=\nlocal-address=127.0.0.1\nlocal-port={port}\n\
                 dnssec=off\ndont-query=\nsocket-dir={d}\ndaemon=no\nwrite-pid=no\n\
                 threads=1\ndisable-syslog=yes\nloglevel=4\nquiet=yes\n\
                 allow-from=127.0.0.0/8\nqname-minimization=no\n\
                 ecs-add-for=127.0.0.0/8\nedns-subnet-allow-list=127.0.0.1\n\
                 forward-zones={}\n",
                forwards.join(",")
            );
            let c = format!("--config-dir={d}");
            ("recursor.conf", conf, vec![c])
        }
    };
    std::fs::write(work.join(conf_name), conf).unwrap();
    ChildGuard::start_logged(
        format!("{kind:?}"),
        Command::new(program).args(&args),
        &work.join("resolver.log"),
    )
}
