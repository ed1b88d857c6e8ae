//! The two-tier group, measured where it exists and **modelled** where it does not yet.
//!
//! Members are real protocol cores in the measuring network ([`crate::net::Net`]).
//! Clients are [`Clients`]: until walrus-gcs has a client tier, a client is modelled as
//!
//! * **its attachment**: one heartbeat link to its member, a heartbeat each way every
//!   `heartbeat_interval`, each sized as a core heartbeat that lists one node (the
//!   client's member) — counted, not simulated;
//! * **its sessions**: one local session of its member standing for the client's one
//!   session, joined to a group of its own (`client-K`), so its join and its crash
//!   (`close_session`: a `Gone` op) go through the member's real total order, and its
//!   record travels in the members' view changes (`Install` carries the group table);
//! * **its crash**: one `Gone` op, measured (messages, bytes, time until every member's
//!   group table has dropped it), never a view change;
//! * **its member's crash**: the members' view change (measured) plus each of that
//!   member's clients attaching to another member and joining its group again: one
//!   `Join` op each, priced at the measured cost of one op (modelled).
//!
//! The fan-out of a client's crash to the *other clients* of a shared group is given as a
//! formula from one measured member record size (`fanout_if_shared_group`): today's
//! `Event::Membership` carries the whole member list, so a `Gone` in a group of `c`
//! clients sends `c - 1` lists of `c - 1` records through the client links.
//!
//! **Where the real client tier plugs in.** Replace [`Clients::attach`] (today: open a
//! local session on the member and join `client-K`) with `Gcs::attach(ClientConfig)` →
//! `Client` and `Client::open_session()` → `Session::join`, and [`Clients::crash`]
//! (today: `close_session` on the member) with dropping the client's connection; when
//! the client tier has a sans-IO core, [`crate::net::Net`] gets a second kind of process
//! (a client core, its `Send`s to its member counted like the members'), and
//! [`Clients::link_traffic`] (today: the heartbeat model) reads the counted client-link
//! traffic instead. Nothing else in this file or in `main.rs` changes: the JSON fields stay.

use std::time::Duration;

use serde_json::{json, Value};
use walrus_gcs::{
    codec, CoreConfig, GroupName, Heartbeat, Incarnation, Member, NodeId, NodeRef, PeerMessage,
    SessionId, ViewId,
};

use crate::net::Net;
use crate::{
    idle, ms, per_hour, round, round3, settle, view_change, Args, CRASH_RATES, WIRE_OVERHEAD,
};

/// The label every two-tier line carries.
pub const MODEL: &str = "clients modelled (no client tier in walrus-gcs yet): a client = one \
heartbeat link to its member (one heartbeat each way per heartbeat_interval, sized as a core \
heartbeat listing one node) + one local session of its member in a group of its own; a client \
crash = one Gone op in its member's total order (measured on the real cores), not a view change; \
a member crash = the members' view change (measured) + one Join op per client of that member \
re-attaching elsewhere (priced at the measured op cost)";

/// The clients of a two-tier group (today: the model above).
pub struct Clients {
    /// Per client: (its member, the session standing for it, its group).
    clients: Vec<(usize, SessionId, GroupName)>,
}

impl Clients {
    /// Attaches `c` clients round-robin to the `m` members of `net`.
    pub fn attach(net: &mut Net, m: usize, c: usize) -> Self {
        let mut clients = Vec::new();
        for k in 0..c {
            let member = k % m;
            let group = format!("client-{k:04}");
            if let Some(s) = net.open_session(member) {
                net.join(member, s, &group);
                clients.push((member, s, GroupName::new(group)));
            }
        }
        Clients { clients }
    }

    /// Client `k` crashes; runs until every running member's table has dropped it.
    /// Returns the time that took, or `None` past the deadline.
    pub fn crash(&mut self, net: &mut Net, k: usize) -> Option<Duration> {
        let (member, session, group) = self.clients.get(k)?.clone();
        let t0 = net.now;
        net.close_session(member, session);
        let n = net.names.len();
        let gone = net.run_until(net.now + Duration::from_secs(10), |net| {
            (0..n).all(|i| {
                net.node_ref(i)
                    .is_none_or(|node| node.group_members(&group).is_empty())
            })
        });
        let took = net.now - t0;
        // The stable point's acknowledgements and commit trail the deliveries: count them.
        net.run_until(net.now + Duration::from_millis(50), |_| false);
        gone.then_some(took)
    }

    /// Heartbeat traffic of the client links, per second: (messages, frame bytes), and the
    /// busiest member's share.
    pub fn link_traffic(&self, config: &CoreConfig, m: usize) -> (f64, f64, f64, f64) {
        let per_s = 1.0 / config.heartbeat_interval.as_secs_f64();
        let hb = PeerMessage::Heartbeat(Heartbeat {
            incarnation: Incarnation(crate::net::INCARNATION_BASE + 1),
            view: ViewId {
                counter: 7,
                coordinator: NodeId::new("web-0000"),
                incarnation: Incarnation(crate::net::INCARNATION_BASE + 1),
            },
            alive: vec![NodeRef {
                id: NodeId::new("web-0000"),
                incarnation: Incarnation(crate::net::INCARNATION_BASE + 1),
            }],
            max_counter: 7,
        });
        let mut buf = Vec::new();
        let size = codec::encode_frame(&hb, &mut buf)
            .map(|()| buf.len() as f64)
            .unwrap_or(0.0);
        let c = self.clients.len() as f64;
        let msgs = 2.0 * c * per_s;
        let busiest = (0..m)
            .map(|i| self.clients.iter().filter(|x| x.0 == i).count())
            .max()
            .unwrap_or(0) as f64;
        (
            msgs,
            msgs * size,
            2.0 * busiest * per_s,
            2.0 * busiest * per_s * size,
        )
    }

    /// How many clients member `i` has.
    pub fn of(&self, i: usize) -> usize {
        self.clients.iter().filter(|x| x.0 == i).count()
    }
}

/// Encoded size of a membership list of `k` members (as `Event::Membership` carries).
fn list_bytes(k: usize) -> u64 {
    let list: Vec<Member> = (0..k)
        .map(|i| Member {
            node: NodeId::new(format!("web-{:04}", i % 10_000)),
            incarnation: Incarnation(crate::net::INCARNATION_BASE + 1),
            session: SessionId(1),
        })
        .collect();
    let mut buf = Vec::new();
    codec::encode_frame(&list, &mut buf)
        .map(|()| buf.len() as u64)
        .unwrap_or(0)
}

/// One two-tier configuration: `m` members, `c` clients.
pub fn two_tier(m: usize, c: usize, args: &Args, latency: Duration) -> Value {
    let config = CoreConfig::lan();
    let mut net = Net::new(m, config.clone(), latency);
    if settle(&mut net).is_none() {
        return json!({"design": "two-tier", "members": m, "clients": c, "ok": false});
    }
    // The members' own Reporter-like sessions are not there: members are Controllers and
    // Directors; the clients carry the web hosts' sessions.
    let mut clients = Clients::attach(&mut net, m, c);
    let (members_idle, cpu) = idle(&mut net, m, args.idle_secs);
    let (lm, lb, bm, bb) = clients.link_traffic(&config, m);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let total_msgs = f(&members_idle, "msgs_per_s") + lm;
    let total_bytes = f(&members_idle, "bytes_per_s") + lb;

    // A client crash: one Gone op (measured, averaged over a few clients of
    // non-sequencer members when there are any).
    net.run_until(net.now + Duration::from_secs(1), |_| false);
    let mut op_ms = Vec::new();
    let mut op_msgs = 0u64;
    let mut op_bytes = 0u64;
    let samples: Vec<usize> = (0..c).rev().take(5).collect();
    for &k in &samples {
        net.mark();
        let took = clients.crash(&mut net, k);
        let (om, ob) = net.traffic.of(&["submit", "ordered", "ack"]);
        op_msgs += om;
        op_bytes += ob;
        if let Some(t) = took {
            op_ms.push(ms(t));
        }
    }
    let ns = samples.len().max(1) as f64;
    let gone = json!({
        "view_changes": 0,
        "ms_mean": round(op_ms.iter().sum::<f64>() / op_ms.len().max(1) as f64),
        "ms_max": op_ms.iter().cloned().fold(0.0, f64::max),
        "ok": op_ms.len() == samples.len(),
        "msgs": round(op_msgs as f64 / ns),
        "bytes": round(op_bytes as f64 / ns),
        "fanout_if_shared_group_bytes": (c.saturating_sub(1) as u64) * list_bytes(c.saturating_sub(1)),
    });

    // A member crash: the members' view change with the clients' records in its table,
    // then that member's clients re-attach (one Join op each, modelled).
    let victim = m - 1;
    let crash = view_change(&mut net, victim, false, args.link_down);
    let rejoin = view_change(&mut net, victim, true, args.link_down);
    let moved = clients.of(victim) as f64;
    let per_op = (f(&gone, "msgs"), f(&gone, "bytes"));
    let hour_members = per_hour(m, &crash, &rejoin);
    let mut hour = serde_json::Map::new();
    for (label, rate) in CRASH_RATES {
        let client_crashes = c as f64 * rate;
        let member_crashes = m as f64 * rate;
        // A client crash: a Gone now and a Join when it restarts; a member crash: its
        // clients' Joins elsewhere.
        let ops = client_crashes * 2.0 + member_crashes * moved;
        hour.insert(
            label.to_string(),
            json!({
                "view_changes": hour_members[label]["view_changes"],
                "frozen_s": hour_members[label]["frozen_s"],
                "vc_msgs": hour_members[label]["vc_msgs"],
                "vc_bytes": hour_members[label]["vc_bytes"],
                "client_ops": round3(ops),
                "client_op_msgs": round(ops * per_op.0),
                "client_op_bytes": round(ops * per_op.1),
            }),
        );
    }
    json!({
        "design": "two-tier",
        "clients_model": MODEL,
        "members": m,
        "clients": c,
        "heartbeat_interval_ms": ms(config.heartbeat_interval),
        "latency_us": args.latency_us,
        "crash_reported": args.link_down,
        "idle": {
            "msgs_per_s": round(total_msgs),
            "bytes_per_s": round(total_bytes),
            "wire_bytes_per_s_est": round(total_bytes + total_msgs * WIRE_OVERHEAD as f64),
            "members": members_idle,
            "client_links_model": {
                "msgs_per_s": round(lm),
                "bytes_per_s": round(lb),
                "busiest_member_msgs_per_s": round(bm),
                "busiest_member_bytes_per_s": round(bb),
            },
        },
        "client_crash": gone,
        "member_crash": crash,
        "member_rejoin": rejoin,
        "member_crash_reattach_ops_model": moved,
        "per_hour": Value::Object(hour),
        "sim_cpu_ms_per_virtual_s": cpu,
    })
}
