//! Replicator benchmark against `rsync -a --delete` to an rsync daemon, on one machine.
//!
//! `replicate bench WORKDIR [--rsync-port PORT]` generates the data set under WORKDIR,
//! starts an rsync daemon on loopback, and for each case (full, small, append) runs rsync
//! and the walrus primary→replica transfer (over walrus-gcs's point-to-point QUIC stream
//! with mutual TLS, as the running Replicator; `WALRUS_BENCH_TRANSPORT=tcp` for plain TCP
//! to see what QUIC costs), alternating
//! which goes first, each on a cold cache (drop caches, then re-read the source) and into a
//! fresh never-used directory. Prints one JSON line per case, then the watcher's
//! change-to-visible latency. Run it through `bench/replicator-vs-rsync.sh`.
//!
//! What is timed for walrus: the primary's rescan (incremental; for `full` the primary
//! already has its manifest, as a running primary does) plus the replica's pull up to the
//! atomic switch of `current` (pruning old generations, and after the first generation the
//! spare copy for the next build to recycle, come after and are shown as `prune`). Neither
//! side fsyncs (`durable: false`, like rsync without `--fsync`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use walrus_actors::replicator::manifest::Limits;
use walrus_actors::replicator::path::RelPath;
use walrus_actors::replicator::store::{ReplicaStore, StoreConfig};
use walrus_actors::replicator::transfer::{pull, serve, PrimarySource, ServeOptions};
use walrus_actors::replicator::watcher::{run_primary, PrimaryScanner, WatchConfig};
use walrus_gcs::transport::bulk::TcpStreams;
use walrus_gcs::transport::{
    certs, Limits as GcsLimits, Listen, NodeIdentity, Transport, TransportConfig, TransportEvent,
};
use walrus_gcs::NodeId;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const SMALL: usize = 19_950;
const LARGE: usize = 50;
const BIG: &str = "big/huge.bin";

/// 11 top directories x 100 subdirectories = 1,111 directories with `big/`... (1,112).
fn small_path(i: usize) -> String {
    format!("d{:02}/s{:03}/f{:05}.html", i % 11, (i / 11) % 100, i)
}

fn generate(src: &Path, rng: &mut Rng) -> u64 {
    let mut total = 0u64;
    let mut buf = vec![0u8; 8 << 20];
    for t in 0..11 {
        for s in 0..100 {
            fs::create_dir_all(src.join(format!("d{t:02}/s{s:03}"))).unwrap();
        }
    }
    for i in 0..SMALL {
        let size = (1024.0 * 50f64.powf(rng.unit())) as usize;
        rng.fill(&mut buf[..size]);
        fs::write(src.join(small_path(i)), &buf[..size]).unwrap();
        total += size as u64;
    }
    for i in 0..LARGE {
        let size = (2 << 20) + (rng.next() % (6 << 20)) as usize;
        rng.fill(&mut buf[..size]);
        fs::write(
            src.join(format!("d{:02}/large{i:02}.bin", i % 11)),
            &buf[..size],
        )
        .unwrap();
        total += size as u64;
    }
    fs::create_dir_all(src.join("big")).unwrap();
    let mut f = fs::File::create(src.join(BIG)).unwrap();
    for _ in 0..25 {
        rng.fill(&mut buf);
        f.write_all(&buf).unwrap();
        total += buf.len() as u64;
    }
    total
}

/// Drops the page cache and reads the source back in, so each run starts alike.
fn cold_cache(src: &Path) {
    if std::env::var_os("WALRUS_BENCH_QUICK").is_some() {
        return;
    }
    Command::new("sync").status().unwrap();
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "1") {
        eprintln!("warning: cannot drop caches ({e}); results are warm-cache");
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let mut f = fs::File::open(e.path()).unwrap();
                while f.read(&mut buf).unwrap() > 0 {}
            }
        }
    }
}

/// CPU seconds (user + system) of process `pid` from `/proc/PID/stat`: its own, and its
/// waited-for children's (the rsync client for us; the per-connection processes for the
/// rsync daemon).
fn cpu_s(pid: &str) -> (f64, f64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which ends at the last ')') start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0.0);
    const USER_HZ: f64 = 100.0;
    (
        (field(14) + field(15)) / USER_HZ,
        (field(16) + field(17)) / USER_HZ,
    )
}

/// CPU seconds the rsync client and the daemon's connection process used for one run of
/// `run` (read after the daemon has reaped its child).
fn rsync_cpu(daemon: u32, run: impl FnOnce() -> f64) -> (f64, f64) {
    let (_, client0) = cpu_s("self");
    let (_, served0) = cpu_s(&daemon.to_string());
    let t = run();
    std::thread::sleep(Duration::from_millis(300));
    let (_, client1) = cpu_s("self");
    let (_, served1) = cpu_s(&daemon.to_string());
    (t, client1 - client0 + served1 - served0)
}

fn rsync_run(src: &Path, port: u16, dest: &str) -> f64 {
    if std::env::var_os("WALRUS_BENCH_QUICK").is_some() {
        return f64::NAN;
    }
    let t = Instant::now();
    let st = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", src.display()))
        .arg(format!("rsync://127.0.0.1:{port}/bench/{dest}/"))
        .status()
        .unwrap();
    assert!(st.success(), "rsync failed");
    t.elapsed().as_secs_f64()
}

/// How the replica reaches the primary.
#[derive(Clone)]
enum Link {
    /// walrus-gcs's point-to-point QUIC stream (mutual TLS), as the running Replicator does.
    /// (The replica's transport, the primary's, and the primary's name.)
    Quic(Transport<()>, Transport<()>, NodeId),
    /// walrus-gcs's TLS-over-TCP bulk streams, the same certificates
    /// (`[replicator] transport = "tls-tcp"`; `WALRUS_BENCH_TRANSPORT=tls-tcp`).
    TlsTcp(Arc<TcpStreams>, NodeId),
    /// Plain TCP on loopback (`WALRUS_BENCH_TRANSPORT=tcp`), to see what TLS costs.
    Tcp(std::net::SocketAddr),
}

type BoxRead = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

impl Link {
    fn name(&self) -> &'static str {
        match self {
            Link::Quic(..) => "quic-loopback",
            Link::TlsTcp(..) => "tls-tcp-loopback",
            Link::Tcp(_) => "tcp-loopback",
        }
    }

    /// The QUIC link's counters as JSON fields (empty for the TCP transports).
    fn stats_json(&self) -> String {
        match self {
            Link::Quic(t, p, primary) => [("replica", t.link_stats(primary)), ("primary", p.link_stats(&NodeId::new("replica")))].into_iter().map(|(side, s)| s.map_or(String::new(), |s| {
                format!(
                    ",\"quic_{side}\":{{\"mtu\":{},\"sent_packets\":{},\"lost_packets\":{},\"black_holes\":{},\"datagrams_per_send\":{:.1}}}",
                    s.mtu,
                    s.sent_packets,
                    s.lost_packets,
                    s.black_holes,
                    s.udp_datagrams_sent as f64 / s.udp_sends.max(1) as f64
                )
            })).collect(),
            _ => String::new(),
        }
    }

    /// A new stream to the primary.
    async fn connect(&self) -> (BoxRead, BoxWrite) {
        match self {
            Link::Quic(t, _, primary) => {
                let (w, r) = t.open_stream(primary).await.unwrap();
                (Box::new(r), Box::new(w))
            }
            Link::TlsTcp(t, primary) => {
                let (r, w) = tokio::io::split(t.open(primary).await.unwrap());
                (Box::new(r), Box::new(w))
            }
            Link::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// Starts the primary's server on `transport` ("quic", "tls-tcp" or "tcp") and returns
/// the replica's link to it.
async fn start_link(transport: &str, source: Arc<PrimarySource>) -> Link {
    if transport == "tcp" {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let source = source.clone();
                tokio::spawn(async move {
                    let (r, w) = s.into_split();
                    let _ = serve(&source, r, w, ServeOptions::default()).await;
                });
            }
        });
        return Link::Tcp(addr);
    }
    let ca = certs::create_ca().unwrap();
    let id = |n: &str| NodeIdentity::issued_by(&ca, n).unwrap();
    if transport == "tls-tcp" {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let primary = TcpStreams::bind(
            any,
            vec![(NodeId::new("replica"), unused)],
            &id("primary"),
            &GcsLimits::default(),
        )
        .await
        .unwrap();
        let replica = TcpStreams::bind(
            any,
            vec![(NodeId::new("primary"), primary.local_addr())],
            &id("replica"),
            &GcsLimits::default(),
        )
        .await
        .unwrap();
        tokio::spawn(async move {
            while let Some((_, s)) = primary.accept().await {
                let source = source.clone();
                tokio::spawn(async move {
                    let (r, w) = tokio::io::split(s);
                    let _ = serve(&source, r, w, ServeOptions::default()).await;
                });
            }
        });
        return Link::TlsTcp(Arc::new(replica), NodeId::new("primary"));
    }
    let sp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sr = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (ap, ar) = (sp.local_addr().unwrap(), sr.local_addr().unwrap());
    let start = |me: &str, sock, peer: &str, addr| {
        Transport::<()>::start(TransportConfig {
            me: NodeId::new(me),
            listen: Listen::Socket(sock),
            peers: vec![(NodeId::new(peer), addr)],
            identity: id(me),
            limits: GcsLimits::default(),
        })
    };
    let (primary, mut ep) = start("primary", sp, "replica", ar).await.unwrap();
    let (replica, mut er) = start("replica", sr, "primary", ap).await.unwrap();
    while !matches!(ep.recv().await, Some(TransportEvent::LinkUp { .. })) {}
    while !matches!(er.recv().await, Some(TransportEvent::LinkUp { .. })) {}
    // The transports' other events are not needed; keep draining them.
    tokio::spawn(async move { while ep.recv().await.is_some() {} });
    tokio::spawn(async move { while er.recv().await.is_some() {} });
    let p = primary.clone();
    tokio::spawn(async move {
        while let Some(s) = p.accept_stream().await {
            let source = source.clone();
            tokio::spawn(async move {
                let _ = serve(&source, s.recv, s.send, ServeOptions::default()).await;
            });
        }
    });
    Link::Quic(replica, primary, NodeId::new("primary"))
}

struct Walrus {
    source: Arc<PrimarySource>,
    scanner: PrimaryScanner,
    link: Link,
}

impl Walrus {
    /// Rescans the primary (incremental) and pulls into `store`: seconds to the switch,
    /// seconds of the rescan, bytes fetched, and the parts as JSON.
    async fn sync_report(&mut self, store: &mut ReplicaStore) -> (f64, f64, u64, String) {
        self.sync_report_dirty(store, None).await
    }

    /// As [`Walrus::sync_report`], but the rescan covers only `dirty` (what the live
    /// watcher passes on from inotify); `None` rescans the whole tree.
    async fn sync_report_dirty(
        &mut self,
        store: &mut ReplicaStore,
        dirty: Option<&BTreeSet<RelPath>>,
    ) -> (f64, f64, u64, String) {
        perf_control("enable");
        let t = Instant::now();
        if let Some(m) = self.scanner.rescan_paths(dirty).unwrap() {
            self.source.publish(m.clone());
        }
        let scan = t.elapsed().as_secs_f64();
        let (r, w) = self.link.connect().await;
        let rep = pull(store, r, w).await.unwrap();
        let visible = rep.switched_at.map_or(t.elapsed(), |s| s.into_std() - t);
        perf_control("disable");
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let tm = rep.timings;
        let parts = format!(
            ",\"walrus_parts_ms\":{{\"scan\":{:.0},\"manifest\":{:.0},\"layout\":{:.0},\"fetch\":{:.0},\"switch\":{:.0},\"prune\":{:.0}}},\"walrus_recycled\":{}",
            scan * 1000.0,
            ms(tm.manifest),
            ms(tm.layout),
            ms(tm.fetch),
            ms(tm.commit),
            ms(tm.prune),
            rep.recycled
        );
        (visible.as_secs_f64(), scan, rep.fetched_bytes, parts)
    }
}

/// Profiling: with `WALRUS_BENCH_PERF_CTL=FIFO`, writes `enable`/`disable` to a
/// `perf record --control=fifo:FIFO -D -1` so that only the syncs are sampled.
fn perf_control(cmd: &str) {
    if let Some(fifo) = std::env::var_os("WALRUS_BENCH_PERF_CTL") {
        if let Ok(mut f) = fs::OpenOptions::new().write(true).open(fifo) {
            let _ = writeln!(f, "{cmd}");
        }
    }
}

fn store_cfg() -> StoreConfig {
    StoreConfig {
        keep: 2,
        durable: false,
        limits: Limits::default(),
    }
}

fn line(case: &str, walrus: f64, rsync: f64, transport: &str, extra: &str) {
    println!(
        "{{\"case\":\"{case}\",\"walrus_s\":{walrus:.3},\"rsync_s\":{rsync:.3},\"ratio\":{:.2},\"transport\":\"{transport}\"{extra}}}",
        rsync / walrus
    );
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args[1] != "bench" {
        eprintln!("usage: replicate bench WORKDIR [--rsync-port PORT]");
        std::process::exit(2);
    }
    let work = PathBuf::from(&args[2]);
    let port: u16 = args
        .iter()
        .position(|a| a == "--rsync-port")
        .and_then(|i| args.get(i + 1))
        .map_or(18_873, |p| p.parse().unwrap());
    let src = work.join("src");
    let dst = work.join("dst");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    let bytes = generate(&src, &mut rng);
    eprintln!(
        "generated {bytes} bytes in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    fs::write(
        work.join("rsyncd.conf"),
        format!(
            "pid file = {w}/rsyncd.pid\nuse chroot = no\nmunge symlinks = no\n[bench]\npath = {d}\nread only = no\nuid = root\ngid = root\n",
            w = work.display(),
            d = dst.display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new("rsync")
        .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--config={}", work.join("rsyncd.conf").display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("rsync (Debian package `rsync`)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rsync daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The primary: scanned once, serving over QUIC (or TCP) on loopback.
    let source = Arc::new(PrimarySource::new(&src).unwrap());
    let mut scanner = PrimaryScanner::open(&src, &work.join("state"), Limits::default()).unwrap();
    cold_cache(&src);
    let t = Instant::now();
    let m = scanner.rescan().unwrap().unwrap().clone();
    let scan_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"case\":\"primary-first-scan\",\"seconds\":{scan_s:.3},\"entries\":{},\"bytes\":{}}}",
        m.entries.len(),
        m.total_bytes()
    );
    source.publish(m);
    let transport = std::env::var("WALRUS_BENCH_TRANSPORT").unwrap_or_else(|_| "quic".into());
    let link = start_link(&transport, source.clone()).await;
    let via = link.name();
    let mut walrus = Walrus {
        source,
        scanner,
        link,
    };

    // (a) full, in rounds of ABBA order (rsync, walrus, walrus, rsync), each run into a fresh
    // never-used directory; WALRUS_BENCH_FULL_ROUNDS rounds (default 2: four runs of each,
    // because one pair is at the mercy of whatever else this shared machine runs). The
    // line reports the means, the medians, and each run. A replica's first sync starts from
    // the generation the primary has published (its watcher keeps it current), so walrus_s
    // runs from the pull's start to the switch; the primary's rescan that precedes it here
    // finds nothing new and is reported beside it, with the ratio it would give if it were
    // counted ("ratio_with_rescan").
    // CPU seconds are counted for both (walrus: this process, which then does nothing else,
    // including the prune and spare after the switch; rsync: client plus daemon child).
    let rounds: usize = std::env::var("WALRUS_BENCH_FULL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2)
        .max(1);
    let daemon_pid = daemon.id();
    let (mut rs, mut rcs, mut ws, mut scans, mut wcs) = (vec![], vec![], vec![], vec![], vec![]);
    let mut first = None;
    let mut spare_stores = Vec::new();
    let rsync_once = |k: usize| {
        cold_cache(&src);
        let dest = if k == 0 {
            "rsync".to_string()
        } else {
            format!("rsync{k}")
        };
        rsync_cpu(daemon_pid, || rsync_run(&src, port, &dest))
    };
    for round in 0..rounds {
        let (r, rc) = rsync_once(2 * round);
        rs.push(r);
        rcs.push(rc);
        for k in 0..2 {
            let n = 2 * round + k;
            let dir = if n == 0 {
                "walrus".to_string()
            } else {
                format!("walrus{n}")
            };
            let mut st = ReplicaStore::open(&dst.join(dir), store_cfg()).unwrap();
            cold_cache(&src);
            let c0 = cpu_s("self").0;
            let (w, scan, fetched, parts) = walrus.sync_report(&mut st).await;
            wcs.push(cpu_s("self").0 - c0);
            ws.push(w - scan);
            scans.push(scan);
            if n == 0 {
                first = Some((st, fetched, parts));
            } else {
                spare_stores.push(st);
            }
        }
        let (r, rc) = rsync_once(2 * round + 1);
        rs.push(r);
        rcs.push(rc);
    }
    drop(spare_stores);
    let Some((mut store, fetched, parts)) = first else {
        unreachable!("at least one round ran")
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median = |v: &[f64]| percentile(&mut v.to_vec(), 0.5);
    let list = |v: &[f64], digits: usize| {
        let items: Vec<String> = v.iter().map(|x| format!("{x:.digits$}")).collect();
        format!("[{}]", items.join(","))
    };
    let rsync_s = mean(&rs);
    let with_rescan: Vec<f64> = ws.iter().zip(&scans).map(|(w, s)| w + s).collect();
    line(
        "full",
        mean(&ws),
        rsync_s,
        via,
        &format!(
            ",\"ratio_of_medians\":{:.2},\"walrus_runs_s\":{},\"rsync_runs_s\":{},\"primary_rescan_s\":{},\"walrus_cpu_s\":{},\"rsync_cpu_s\":{},\"walrus_with_rescan_s\":{:.3},\"ratio_with_rescan\":{:.2},\"bytes\":{bytes},\"walrus_fetched\":{fetched}{parts}{}",
            median(&rs) / median(&ws),
            list(&ws, 3),
            list(&rs, 3),
            list(&scans, 3),
            list(&wcs, 2),
            list(&rcs, 2),
            mean(&with_rescan),
            rsync_s / mean(&with_rescan),
            walrus.link.stats_json()
        ),
    );

    // WALRUS_BENCH_FULL_ONLY=1: stop after the full case (for profiling it).
    if std::env::var_os("WALRUS_BENCH_FULL_ONLY").is_some() {
        let _ = daemon.kill();
        let _ = daemon.wait();
        return;
    }

    // (b) 20 small files rewritten, twice (other files the second time), walrus first,
    // then rsync. The first time the primary rescans the whole tree (its periodic safety
    // net: a stat of every file); the second time it rescans the 20 paths that inotify
    // reported, which is what the running primary's watcher does after a change.
    let mut buf = vec![0u8; 64 << 10];
    for (rescan, offset) in [("full", 0), ("watched", 1)] {
        let mut dirty = BTreeSet::new();
        for k in 0..20 {
            let rel = small_path(k * 997 + offset);
            let p = src.join(&rel);
            let size = fs::metadata(&p).unwrap().len() as usize;
            rng.fill(&mut buf[..size]);
            fs::write(&p, &buf[..size]).unwrap();
            dirty.insert(RelPath::new(&rel).unwrap());
        }
        let dirty = (rescan == "watched").then_some(dirty);
        cold_cache(&src);
        let (w, _, fetched, parts) = walrus.sync_report_dirty(&mut store, dirty.as_ref()).await;
        cold_cache(&src);
        let r = rsync_run(&src, port, "rsync");
        line(
            "small",
            w,
            r,
            via,
            &format!(",\"rescan\":\"{rescan}\",\"walrus_fetched\":{fetched}{parts}"),
        );
    }

    // (c) 1 MiB appended to the 200 MiB file: rsync first, then walrus.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join(BIG))
        .unwrap();
    let mut mib = vec![0u8; 1 << 20];
    rng.fill(&mut mib);
    f.write_all(&mib).unwrap();
    drop(f);
    cold_cache(&src);
    let r = rsync_run(&src, port, "rsync");
    cold_cache(&src);
    let (w, _, fetched, parts) = walrus.sync_report(&mut store).await;
    line(
        "append",
        w,
        r,
        via,
        &format!(",\"walrus_fetched\":{fetched}{parts}"),
    );

    // Both replicas must now equal the source.
    let compare: &[&str] = if std::env::var_os("WALRUS_BENCH_QUICK").is_some() {
        &["walrus/current"]
    } else {
        &["rsync", "walrus/current"]
    };
    for d in compare {
        let st = Command::new("diff")
            .args(["-r", "-q"])
            .arg(&src)
            .arg(dst.join(d))
            .status()
            .unwrap();
        assert!(st.success(), "{d} differs from the source");
    }

    // Watcher: change-to-visible latency of one small file on a live replica.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let scanner = walrus.scanner;
    let source = walrus.source.clone();
    let link = walrus.link.clone();
    let cfg = WatchConfig {
        quiet: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        rescan_every: Duration::from_secs(60),
        limits: Limits::default(),
    };
    let watcher = tokio::spawn(run_primary(scanner, source.clone(), cfg, async {
        let _ = stop_rx.await;
    }));
    let mut announce = source.subscribe();
    let follower = tokio::spawn(async move {
        loop {
            let want = *announce.borrow_and_update();
            while store.current_generation() < want {
                let (r, w) = link.connect().await;
                if pull(&mut store, r, w).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            if announce.changed().await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = Vec::new();
    let probe = "d05/s050/probe.html";
    for i in 0..50 {
        let body = format!("probe {i} {}", rng.next());
        let t = Instant::now();
        fs::write(src.join(probe), &body).unwrap();
        let seen = dst.join("walrus/current").join(probe);
        loop {
            if fs::read_to_string(&seen).is_ok_and(|s| s == body) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "change {i} never became visible"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p50 = percentile(&mut lat, 0.5);
    let p99 = percentile(&mut lat, 0.99);
    println!(
        "{{\"case\":\"watch\",\"changes\":50,\"p50_ms\":{p50:.1},\"p99_ms\":{p99:.1},\"quiet_ms\":20,\"tree_entries\":{},\"transport\":\"{via}\"}}",
        SMALL + LARGE + 1113
    );
    let _ = stop_tx.send(());
    let _ = watcher.await;
    follower.abort();
    let _ = daemon.kill();
    let _ = daemon.wait();
}
