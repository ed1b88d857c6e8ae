//! What a wave of client joins and leaves costs on the client links (issue 24): `c`
//! clients attach to one member, each opens a session and joins one group, then every
//! client's link ends (a crash: its session is `Gone`). Real sans-IO parts: the member's
//! core (`Node`, alone in its view) and `ClientHost`, and one `ClientCore` per client;
//! every notice the member sends a client is encoded as it would be on the QUIC link
//! (`codec::encode_frame`) and counted, then handed to the client.
//!
//! Each membership change goes out as a delta (`ClientNotice::Membership`); the
//! `whole_*` figures are what the same events cost as whole lists, the way the client
//! link carried them before deltas (`ClientNotice::Event` with the member's
//! `Event::Membership`): each client's rebuilt event, encoded in that older form.
//!
//! ```sh
//! cargo run --release -p walrus-gcs --example client_wave -- 10 100 1000
//! ```
//! One JSON line per wave (`join`, `leave`, and with `--burst` `join_burst`) and client
//! count. `member_cpu_ms` is the CPU time of the member's core and host during the wave
//! (the thread's CPU clock, `CLOCK_THREAD_CPUTIME_ID`, read around each of their steps),
//! `member_ms` the wall time of the same steps (more when the thread was preempted);
//! `cpu_ms` is the thread's CPU time for the whole wave, the clients and the counting
//! included; `rss_mb` and `peak_rss_mb` are the process's
//! resident memory after the wave and its peak so far (`/proc/self/status`; the peak
//! carries over from earlier, smaller runs). Figures are printed, never checked.
//!
//! `--burst` (in place of the two waves): every client attaches, opens a session and
//! joins before the member's core runs, so the core orders all `c` joins at once and
//! hands out every resulting event before any client reads one (`join_burst`). Run it
//! alone for its own peak memory (`-- --burst 1000`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::time::{Duration, Instant};
use walrus_gcs::tier::{
    ClientConfig, ClientCore, ClientHost, ClientNotice, ClientOutput, HostLimits, MemberChange,
};
use walrus_gcs::{codec, CoreConfig, Event, GroupName, Incarnation, Node, NodeId};

#[derive(Default, Debug)]
struct Count {
    notices: u64,
    bytes: u64,
    membership_notices: u64,
    membership_bytes: u64,
    snapshots: u64,
    whole_membership_bytes: u64,
    member_time: Duration,
    member_cpu: Duration,
}

struct World {
    now: Instant,
    member: NodeId,
    node: Node,
    host: ClientHost,
    clients: Vec<ClientCore>,
    count: Count,
}

impl World {
    fn new(c: usize) -> World {
        let now = Instant::now();
        let member = NodeId::new("m1");
        let node = Node::new(
            CoreConfig::default(),
            member.clone(),
            Incarnation(1),
            vec![member.clone()],
            now,
        );
        let clients = (0..c)
            .map(|k| {
                ClientCore::new(ClientConfig {
                    name: NodeId::new(format!("client.c{k:04}")),
                    incarnation: Incarnation(1),
                    members: vec![member.clone()],
                    window: 8,
                })
            })
            .collect();
        World {
            now,
            member,
            node,
            host: ClientHost::new(HostLimits::default()),
            clients,
            count: Count::default(),
        }
    }

    /// Moves everything until nothing moves.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            let t = Step::start();
            let refused = self.host.pump(&mut self.node, self.now);
            assert!(refused.is_empty(), "{refused:?}");
            while let Some(out) = self.node.poll_output() {
                moved = true;
                let _ = self.host.on_output(&mut self.node, out);
            }
            let mut notices = Vec::new();
            while let Some(n) = self.host.poll_notice() {
                notices.push(n);
            }
            t.end(&mut self.count);
            for (name, notice) in notices {
                moved = true;
                self.deliver(&name, notice);
            }
            for k in 0..self.clients.len() {
                while let Some(out) = self.clients[k].poll_output() {
                    moved = true;
                    let name = self.clients[k].name().clone();
                    let t = Step::start();
                    match out {
                        ClientOutput::Connect(m) => {
                            self.host
                                .attach(&mut self.node, self.now, &name, Incarnation(1))
                                .unwrap();
                            self.clients[k].link_up(&m);
                        }
                        ClientOutput::Send { req, .. } => {
                            self.host
                                .request(&mut self.node, self.now, &name, req)
                                .unwrap();
                        }
                        ClientOutput::Deliver { .. } => {}
                    }
                    t.end(&mut self.count);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// A notice to client `name`: counted as framed on the link, then handled.
    fn deliver(&mut self, name: &NodeId, notice: ClientNotice) {
        let mut frame = Vec::new();
        codec::encode_frame(&notice, &mut frame).unwrap();
        self.count.notices += 1;
        self.count.bytes += frame.len() as u64;
        let k = self.clients.iter().position(|c| c.name() == name).unwrap();
        let membership = match &notice {
            ClientNotice::Membership {
                session, change, ..
            } => {
                self.count.membership_notices += 1;
                self.count.membership_bytes += frame.len() as u64;
                if matches!(change, MemberChange::Snapshot(_)) {
                    self.count.snapshots += 1;
                }
                Some(*session)
            }
            _ => None,
        };
        self.clients[k].handle(&self.member, notice);
        // The same event as a whole list, the way it crossed before deltas.
        if let Some(session) = membership {
            while let Some(out) = self.clients[k].poll_output() {
                if let ClientOutput::Deliver {
                    event: event @ Event::Membership { .. },
                    ..
                } = out
                {
                    let mut whole = Vec::new();
                    codec::encode_frame(&ClientNotice::Event { session, event }, &mut whole)
                        .unwrap();
                    self.count.whole_membership_bytes += whole.len() as u64;
                }
            }
        }
    }
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Wall and CPU time of one of the member's steps, added to the count.
struct Step(Instant, Duration);

impl Step {
    fn start() -> Step {
        Step(Instant::now(), thread_cpu())
    }

    fn end(self, count: &mut Count) {
        count.member_time += self.0.elapsed();
        count.member_cpu += thread_cpu().saturating_sub(self.1);
    }
}

/// A `kB` figure of `/proc/self/status` (`VmRSS:`, `VmHWM:`).
fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// When a wave started: wall clock and this thread's CPU time.
struct Start(Instant, Duration);

impl Start {
    fn now() -> Start {
        Start(Instant::now(), thread_cpu())
    }
}

fn report(wave: &str, c: usize, count: &Count, start: &Start) {
    let wall = start.0.elapsed();
    let cpu_ms = thread_cpu().saturating_sub(start.1).as_secs_f64() * 1e3;
    let line = json!({
        "bench": "client_wave",
        "wave": wave,
        "clients": c,
        "notices": count.notices,
        "bytes": count.bytes,
        "membership_notices": count.membership_notices,
        "membership_bytes": count.membership_bytes,
        "membership_snapshots": count.snapshots,
        "whole_membership_bytes": count.whole_membership_bytes,
        "bytes_per_client": count.bytes as f64 / c as f64,
        "whole_bytes_per_client": count.whole_membership_bytes as f64 / c as f64,
        "member_ms": count.member_time.as_secs_f64() * 1e3,
        "member_cpu_ms": count.member_cpu.as_secs_f64() * 1e3,
        "cpu_ms": cpu_ms,
        "wall_ms": wall.as_secs_f64() * 1e3,
        "rss_mb": status_kb("VmRSS:").map(|kb| kb as f64 / 1024.0),
        "peak_rss_mb": status_kb("VmHWM:").map(|kb| kb as f64 / 1024.0),
    });
    println!("{line}");
}

fn main() {
    let burst = std::env::args().any(|a| a == "--burst");
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| a != "--burst")
        .map(|a| a.parse().expect("a client count"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 100, 1000]
    } else {
        sizes
    };
    let group = GroupName::new("web");
    for c in sizes {
        let mut w = World::new(c);
        if !burst {
            w.run();
            w.count = Count::default();
        }
        // Join wave: one client after another opens a session and joins `web`, each
        // join ordered and told to everyone before the next; `--burst`: all at once,
        // the clients attaching too.
        let t = Start::now();
        for k in 0..c {
            let s = w.clients[k].open_session();
            w.clients[k].join(s, group.clone()).unwrap();
            if !burst {
                w.run();
            }
        }
        w.run();
        report(if burst { "join_burst" } else { "join" }, c, &w.count, &t);
        assert_eq!(w.node.group_members(&group).len(), c);
        if burst {
            continue;
        }
        // Leave wave: one client after another crashes (its link ends, its session is
        // gone); the others see each one go.
        w.count = Count::default();
        let t = Start::now();
        for k in 0..c {
            let name = w.clients[k].name().clone();
            let t = Step::start();
            w.host.detach(&mut w.node, w.now, &name);
            t.end(&mut w.count);
            w.run();
        }
        report("leave", c, &w.count, &t);
        assert!(w.node.group_members(&group).is_empty());
    }
}
