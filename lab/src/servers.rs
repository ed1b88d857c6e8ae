//! The real servers of the lab and their configurations: BIND as the fake root (zone `.`,
//! delegating the site zone to every area name server and each area zone to its own server,
//! paper §7.2), our embedded area name server, nginx web servers, and the recursive
//! resolvers (Unbound, BIND, Knot Resolver, PowerDNS Recursor), each configured to iterate
//! from our root, without DNSSEC validation, from its own source address.

use super::netns::{require, ChildGuard, LabError};
use super::spec::{Area, LabSpec, Mode, Region, ResolverKind, ROOT_ADDR, SITE};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use walrus_actors::director::embedded::EmbeddedServer;
use walrus_actors::director::steering::Steering;
use walrus_actors::director::zone::{AreaServer, RecordTtl, WwwRecords, ZoneLayout};
use walrus_actors::director::NameServer;
use walrus_actors::model::AreaName;

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|source| LabError::Io {
            path: d.display().to_string(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| LabError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn sub(spec: &LabSpec, name: &str) -> PathBuf {
    spec.dir.join(name)
}

/// The root hints every resolver starts from.
pub fn root_hints() -> String {
    root_hints_at(ROOT_ADDR)
}

/// Root hints naming one root server, `a.root.test` at `root`.
pub fn root_hints_at(root: Ipv4Addr) -> String {
    format!(". 3600000 IN NS a.root.test.\na.root.test. 3600000 IN A {root}\n")
}

/// The root zone: delegations of the site zone (to every area server) and of every area
/// zone (to its own server), with glue.
pub fn root_zone(spec: &LabSpec) -> String {
    let mut z = format!(
        "$TTL 3600\n. IN SOA a.root.test. hostmaster.root.test. 1 3600 600 86400 60\n\
         . IN NS a.root.test.\na.root.test. IN A {ROOT_ADDR}\n"
    );
    for a in spec.all_areas() {
        z.push_str(&format!("{SITE}. IN NS {}\n", a.ns_name()));
    }
    for a in spec.all_areas() {
        z.push_str(&format!(
            "{} IN NS {}\n{} IN A {}\n",
            a.zone(),
            a.ns_name(),
            a.ns_name(),
            a.ns_public()
        ));
    }
    z
}

/// Starts BIND as the root server in the root namespace.
pub fn start_root(spec: &LabSpec) -> Result<ChildGuard, LabError> {
    spawn_root(
        &spec.ns_root(),
        &sub(spec, "root"),
        ROOT_ADDR,
        &root_zone(spec),
    )
}

/// Starts BIND in namespace `ns` as a root server on `addr`:53 serving `zone` (the text of
/// zone `.`), with its files in `dir`.
pub fn spawn_root(
    ns: &str,
    dir: &Path,
    addr: Ipv4Addr,
    zone: &str,
) -> Result<ChildGuard, LabError> {
    require("named", "bind9")?;
    write(&dir.join("root.zone"), zone)?;
    let ds = dir.display();
    let conf = format!(
        "options {{ directory \"{ds}\"; pid-file \"{ds}/named.pid\"; \
         session-keyfile \"{ds}/session.key\"; listen-on port 53 {{ {addr}; }}; \
         listen-on-v6 {{ none; }}; recursion no; notify no; allow-query {{ any; }}; }};\n\
         controls {{ }};\nzone \".\" {{ type primary; file \"{ds}/root.zone\"; }};\n"
    );
    write(&dir.join("named.conf"), &conf)?;
    let c = dir.join("named.conf").display().to_string();
    super::netns::spawn_in(
        ns,
        "root BIND",
        "named",
        &["-4", "-g", "-c", &c],
        &dir.join("named.log"),
    )
}

/// Starts nginx for web server `k` of area `a` (one process: `master_process off`, so a
/// SIGKILL of the guard leaves nothing behind).
pub fn start_web(spec: &LabSpec, a: Area, k: u8) -> Result<ChildGuard, LabError> {
    require("nginx", "nginx")?;
    let d = sub(spec, &format!("{a}/web{k}"));
    let ds = d.display();
    let port = super::spec::WEB_PORT_BASE + u16::from(k);
    let mut conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {ds}/nginx.pid;\n\
         error_log {ds}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n\
         access_log off;\nclient_header_timeout 300s;\n"
    );
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        conf.push_str(&format!("{t}_temp_path {ds}/{t};\n"));
    }
    conf.push_str(&format!(
        "server {{ listen {}:{port}; location / {{ default_type text/plain; \
         return 200 \"walrus lab: area {a} server {k}\\n\"; }} \
         location = /nginx_status {{ stub_status; }} }}\n}}\n",
        a.backbone()
    ));
    write(&d.join("nginx.conf"), &conf)?;
    let c = d.join("nginx.conf").display().to_string();
    let p = format!("{ds}/");
    super::netns::spawn_in(
        &spec.ns_area(a),
        &format!("nginx {a}/{k}"),
        "nginx",
        &["-c", &c, "-p", &p],
        &d.join("nginx.log"),
    )
}

/// Starts our embedded name server for area `a` (the `authd` role of this binary).
pub fn start_area_ns(
    spec: &LabSpec,
    exe: &Path,
    spec_file: &Path,
    a: Area,
) -> Result<ChildGuard, LabError> {
    let d = sub(spec, &a.to_string());
    write(&d.join(".keep"), "")?;
    let s = spec_file.display().to_string();
    let area = a.0.to_string();
    super::netns::spawn_in(
        &spec.ns_area(a),
        &format!("name server {a}"),
        &exe.display().to_string(),
        &["authd", "--spec", &s, "--area", &area],
        &d.join("authd.log"),
    )
}

/// The `authd` role: serves area `a`'s zone and the site zone until killed.
pub async fn run_area_ns(spec: LabSpec, a: Area) -> anyhow::Result<()> {
    let ttl = RecordTtl::try_from(std::time::Duration::from_secs(u64::from(spec.ttl_secs)))?;
    let layout = ZoneLayout::new(
        SITE,
        &a.zone(),
        Some(&a.ns_name()),
        vec![a.ns_public().into()],
        ttl,
    )?
    .with_ns_ttl(RecordTtl::try_from(std::time::Duration::from_secs(3600))?)
    .with_other_areas(
        spec.all_areas()
            .map(|x| AreaServer::new(&x.zone(), Some(&x.ns_name()), vec![x.ns_public().into()]))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let initial = WwwRecords::from_addrs(spec.answer_of(a).into_iter().map(Into::into), ttl);
    let server = EmbeddedServer::open_or(
        AreaName(a.to_string()),
        layout,
        spec.dir.join(a.to_string()).join("state.json"),
        initial,
    )?;
    if spec.mode == Mode::OracleTable {
        let rules: Vec<(String, String)> = spec
            .all_regions()
            .map(|r| (r.resolver_prefix(), spec.nearest(r).zone()))
            .collect();
        server.set_steering(Steering::from_pairs(
            rules.iter().map(|(s, z)| (s.as_str(), z.as_str())),
        )?);
    }
    let listening = server
        .bind(std::net::SocketAddr::new(a.backbone().into(), 53))
        .await?;
    tokio::spawn(follow_answer_file(
        server.clone(),
        spec.dir.join(a.to_string()).join("answer.json"),
        ttl,
    ));
    println!("authd {a} ready on {}", listening.local_addr());
    listening.run(std::future::pending()).await;
    Ok(())
}

/// The scripted modes' Director (the baselines; `walrus-runtime` runs the real one):
/// whenever `file` (a JSON list of IPv4 addresses, written atomically by the orchestrator)
/// changes, the server's www records are replaced through the same [`NameServer`] call
/// the Director uses.
async fn follow_answer_file(server: EmbeddedServer, file: PathBuf, ttl: RecordTtl) {
    let mut last: Option<String> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if last.as_ref() == Some(&text) {
            continue;
        }
        match serde_json::from_str::<Vec<std::net::Ipv4Addr>>(&text) {
            Ok(addrs) if !addrs.is_empty() => {
                let want = WwwRecords::from_addrs(addrs.into_iter().map(Into::into), ttl);
                match server
                    .replace(&want, &walrus_actors::director::Fence::NONE)
                    .await
                {
                    Ok(()) => println!("answer replaced: {want:?}"),
                    Err(e) => eprintln!("answer not replaced: {e}"),
                }
            }
            _ => eprintln!(
                "ignoring {}: not a non-empty list of addresses",
                file.display()
            ),
        }
        last = Some(text);
    }
}

/// Starts one resolver in region `r`.
pub fn start_resolver(
    spec: &LabSpec,
    r: Region,
    kind: ResolverKind,
) -> Result<ChildGuard, LabError> {
    let dir = sub(spec, &format!("{r}/{}", kind.name()));
    let setup = ResolverSetup {
        kind,
        addr: kind.addr(r),
        root: ROOT_ADDR,
        dir: &dir,
        qmin: None,
        control: false,
    };
    spawn_resolver(
        &spec.ns_region(r),
        &format!("{} in {r}", kind.name()),
        &setup,
    )
}

/// How one recursive resolver is set up: the lab's fixed choices (iterate from our root,
/// no DNSSEC validation, queries from its own address) plus the knobs the resolver matrix
/// (`super::resolve`) varies.
#[derive(Debug, Clone)]
pub struct ResolverSetup<'a> {
    /// Which resolver.
    pub kind: ResolverKind,
    /// Where it listens on port 53, and the source address of its queries.
    pub addr: Ipv4Addr,
    /// The root server its hints name (`a.root.test`).
    pub root: Ipv4Addr,
    /// Its configuration, cache, logs and control sockets.
    pub dir: &'a Path,
    /// QNAME minimisation (RFC 9156) on or off; `None` keeps the resolver's default.
    pub qmin: Option<bool>,
    /// Opens the channel its cache is flushed through: Unbound's control socket
    /// (`<dir>/unbound.ctl`), BIND's rndc (`<dir>/rndc.conf`, port 953 on `addr`). Knot
    /// Resolver's (`<dir>/control/<pid>`) and PowerDNS Recursor's (`<dir>`, rec_control)
    /// are always there.
    pub control: bool,
}

/// Starts the resolver `setup` describes inside namespace `ns`; `what` names it in
/// messages. Its log is `<dir>/resolver.log`.
pub fn spawn_resolver(ns: &str, what: &str, setup: &ResolverSetup) -> Result<ChildGuard, LabError> {
    let kind = setup.kind;
    let (program, package) = kind.program();
    require(program, package)?;
    let d = setup.dir;
    let ds = d.display().to_string();
    let addr = setup.addr;
    let root = setup.root;
    write(&d.join("root.hints"), &root_hints_at(root))?;
    let log = d.join("resolver.log");
    match kind {
        ResolverKind::Unbound | ResolverKind::UnboundFast | ResolverKind::UnboundEcs => {
            let fast = match kind {
                ResolverKind::UnboundFast => {
                    "  fast-server-permil: 900\n  fast-server-num: 1\n  infra-cache-min-rtt: 2\n"
                }
                // ECS to every area server (their public addresses are 10.A.0.53).
                ResolverKind::UnboundEcs => {
                    "  send-client-subnet: 10.0.0.0/8\n  max-client-subnet-ipv4: 24\n"
                }
                _ => "",
            };
            let modules = if kind == ResolverKind::UnboundEcs {
                "subnetcache iterator"
            } else {
                "iterator"
            };
            let qmin = match setup.qmin {
                Some(true) => "  qname-minimisation: yes\n",
                Some(false) => "  qname-minimisation: no\n",
                None => "",
            };
            // A control socket in the file system: no certificates, no port.
            let control = if setup.control {
                format!(
                    "remote-control:\n  control-enable: yes\n  control-use-cert: no\n\
                     \x20 control-interface: \"{ds}/unbound.ctl\"\n"
                )
            } else {
                "remote-control:\n  control-enable: no\n".to_owned()
            };
            let conf = format!(
                "server:\n  interface: {addr}\n  port: 53\n  outgoing-interface: {addr}\n\
                 \x20 interface-automatic: no\n  do-ip6: no\n  access-control: 0.0.0.0/0 allow\n\
                 \x20 username: \"\"\n  chroot: \"\"\n  directory: \"{ds}\"\n\
                 \x20 pidfile: \"{ds}/unbound.pid\"\n  root-hints: \"{ds}/root.hints\"\n\
                 \x20 module-config: \"{modules}\"\n  local-zone: \"test.\" nodefault\n\
                 \x20 do-not-query-localhost: no\n\
                 \x20 use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  num-threads: 1\n\
                 \x20 so-reuseport: no\n{fast}{qmin}{control}"
            );
            write(&d.join("unbound.conf"), &conf)?;
            let c = d.join("unbound.conf").display().to_string();
            super::netns::spawn_in(ns, what, program, &["-d", "-c", &c], &log)
        }
        ResolverKind::Bind => {
            let qmin = match setup.qmin {
                Some(true) => "qname-minimization relaxed; ",
                Some(false) => "qname-minimization off; ",
                None => "",
            };
            let controls = if setup.control {
                require("tsig-keygen", "bind9")?;
                let key = super::netns::run("tsig-keygen", &["-a", "hmac-sha256", "rndc-key"])?;
                write(&d.join("rndc.key"), &key)?;
                write(
                    &d.join("rndc.conf"),
                    &format!(
                        "include \"{ds}/rndc.key\";\noptions {{ default-key \"rndc-key\"; \
                         default-server {addr}; default-port 953; }};\n"
                    ),
                )?;
                format!(
                    "include \"{ds}/rndc.key\";\ncontrols {{ inet {addr} port 953 \
                     allow {{ any; }} keys {{ \"rndc-key\"; }}; }};\n"
                )
            } else {
                "controls { };\n".to_owned()
            };
            let conf = format!(
                "options {{ directory \"{ds}\"; pid-file \"{ds}/named.pid\"; \
                 session-keyfile \"{ds}/session.key\"; listen-on port 53 {{ {addr}; }}; \
                 listen-on-v6 {{ none; }}; recursion yes; allow-query {{ any; }}; \
                 allow-recursion {{ any; }}; dnssec-validation no; {qmin}\
                 query-source address {addr}; notify no; }};\n\
                 {controls}zone \".\" {{ type hint; file \"{ds}/root.hints\"; }};\n"
            );
            write(&d.join("named.conf"), &conf)?;
            let c = d.join("named.conf").display().to_string();
            super::netns::spawn_in(ns, what, program, &["-4", "-g", "-c", &c], &log)
        }
        ResolverKind::Knot => {
            let mut flags = Vec::new();
            // Knot Resolver ignores glue and server addresses in loopback and private
            // ranges (its log: "ignoring invalid glue") unless a query has ALLOW_LOCAL.
            if root.is_loopback() {
                flags.push("'ALLOW_LOCAL'");
            }
            // QNAME minimisation on is Knot Resolver's default.
            if setup.qmin == Some(false) {
                flags.push("'NO_MINIMIZE'");
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!(
                    "policy.add(policy.all(policy.FLAGS({{{}}})))\n",
                    flags.join(", ")
                )
            };
            let conf = format!(
                "log_target('stderr')\nnet.ipv6 = false\nnet.listen('{addr}', 53, {{ kind = 'dns' }})\n\
                 net.outgoing_v4('{addr}')\ntrust_anchors.remove('.')\n\
                 policy.special_names = {{}}\n\
                 modules.load('hints > iterate')\n\
                 hints.root({{['a.root.test.'] = '{root}'}})\n\
                 cache.open(20*MB, 'lmdb://{ds}/cache')\n{flags}"
            );
            write(&d.join("kresd.conf"), &conf)?;
            let c = d.join("kresd.conf").display().to_string();
            super::netns::spawn_in(ns, what, program, &["-n", "-c", &c, &ds], &log)
        }
        ResolverKind::Pdns | ResolverKind::PdnsEcs => {
            // ECS for the lab's clients (10/8, which PowerDNS leaves out by default) to
            // every area server.
            let ecs = if kind == ResolverKind::PdnsEcs {
                "ecs-add-for=10.0.0.0/8\nedns-subnet-allow-list=10.0.0.0/8\n"
            } else {
                ""
            };
            let qmin = match setup.qmin {
                Some(true) => "qname-minimization=yes\n",
                Some(false) => "qname-minimization=no\n",
                None => "",
            };
            // Why a lookup failed goes to its log (SERVFAILs seen in learned runs, cause
            // unknown): the trace of each failing lookup only (`trace=fail`), with the
            // servers it throttled or marked down (`log-common-errors`, loglevel 6).
            // No security polling: its query for `….secpoll.powerdns.com` gets NXDOMAIN
            // for `com` from our root, and with `root-nx-trust` (default on) PowerDNS then
            // answers NXDOMAIN for every name under `com` for the root's negative TTL
            // (seen: `www.example.com` "negatively cached via '.' & 'com'" right after
            // start, a flushed cache or not).
            let conf = format!(
                "security-poll-suffix=\n\
                 local-address={addr}\nlocal-port=53\nquery-local-address={addr}\n\
                 hint-file={ds}/root.hints\ndnssec=off\ndont-query=\nsocket-dir={ds}\n\
                 daemon=no\nwrite-pid=no\nthreads=1\ndisable-syslog=yes\nloglevel=6\n\
                 quiet=yes\nlog-common-errors=yes\ntrace=fail\n\
                 allow-from=0.0.0.0/0\n{qmin}{ecs}"
            );
            write(&d.join("recursor.conf"), &conf)?;
            let c = format!("--config-dir={ds}");
            super::netns::spawn_in(ns, what, program, &[&c], &log)
        }
    }
}

/// The name of the site's `www`, as clients look it up.
pub fn site_www() -> String {
    format!("www.{SITE}.")
}

/// A name no one has asked before: the convergence probes (one cache miss each).
pub fn probe_name(region: Region, kind: ResolverKind, seq: u64) -> String {
    format!("p{seq}-{}-{region}.{SITE}.", kind.name())
}

/// Whether `qname` is a convergence probe.
pub fn is_probe(qname: &str) -> bool {
    qname.starts_with('p') && qname.ends_with(&format!(".{SITE}.")) && qname.contains('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AREAS_PARENT;

    #[test]
    fn root_zone_delegates_the_site_to_every_area() {
        let spec = LabSpec {
            prefix: "x".into(),
            dir: "/tmp".into(),
            areas: 3,
            servers_per_cluster: 1,
            regions: 1,
            rtt_ms: vec![vec![1, 2, 3]],
            resolvers: vec![],
            mode: Mode::Walrus,
            ttl_secs: 1,
            seconds: 1,
            clients_per_resolver: 0,
            think_ms: 1,
            probe_rate: 0,
            seed: 0,
            failure: None,
            event: None,
            spoof: None,
        };
        let z = root_zone(&spec);
        assert_eq!(z.matches("walrus.test. IN NS").count(), 3);
        assert!(z.contains(&format!("a2.{AREAS_PARENT}. IN NS ns.a2.{AREAS_PARENT}.")));
        assert!(is_probe(&probe_name(Region(1), ResolverKind::Bind, 7)));
        assert!(!is_probe(&site_www()));
    }
}
