//! The steering lab (issue 9): does Walrus send each client to the best replica, with
//! real resolvers and real clients?
//!
//! One machine, an emulated Internet in network namespaces (no `tc netem` here, so the
//! distance between a client region and an area is added in user space: HTTP through a
//! delay relay, half the RTT each way; a resolver's queries leave from its own address
//! undelayed and everything an area sends back to a resolver's address crosses the
//! region's *delay line*, a VXLAN link through the relay that holds each frame for the
//! full RTT — so what an area server can time itself, a TCP handshake or a probe,
//! measures the emulated distance too; see [`relay`] and [`netns`]):
//!
//! ```text
//!  region rR namespace                         backbone bridge           area aA namespace
//!  ┌──────────────────────────────┐           (10.255.0.0/24)          ┌──────────────────────┐
//!  │ HTTP clients + probes        │                                    │ embedded name server │
//!  │   │ stub (honours TTL)       │                                    │  (walrus-actors      │
//!  │   ▼                          │                                    │   director), :53     │
//!  │ unbound, unbound-fast, BIND, │  root hints  ┌───────────────┐     │ nginx × servers of   │
//!  │ Knot Resolver, PowerDNS ─────┼─────────────►│ root: BIND "."│     │  the home cluster    │
//!  │   │ 10.A.0.53 / 10.A.1.k     │              │ site zone →   │     └──────────▲───────────┘
//!  │   ▼                          │              │ every area NS │                │
//!  │ delay relay (RTT r×a / 2 each way) ───────────────────────────────────────────┘
//!  └──────────────────────────────┘
//! ```
//!
//! Run (as root; the lab creates and always deletes its own namespaces, `walrus-lab clean`
//! removes those of a run killed with SIGKILL):
//!
//! ```text
//! cargo build -p walrus-lab -p walrus-node
//! target/debug/walrus-lab full --out docs/lab --seconds 40      # every scenario, ~30 min
//! target/debug/walrus-lab run --areas 3 --resolvers unbound,bind --mode walrus-oracle-table
//! cargo test -p walrus-lab --test lab_short                     # the CI form, ~30 s
//! # the real runtime (walrus-node processes; build it: cargo build -p walrus-node):
//! target/debug/walrus-lab full --out docs/lab --seconds 40 --only runtime   # ~4 min
//! target/debug/walrus-lab run --areas 3 --resolvers bind --mode walrus-runtime \
//!     --event master-dies@10      # or cluster-dies:2@10, overload:2@8+12, partition:3@8+12
//! # learned steering (a walrus-node with [dns.learned]) and the spoofing test:
//! target/debug/walrus-lab run --areas 3 --resolvers bind,unbound --mode walrus-learned \
//!     --seconds 40 --spoof 13+13
//! ```
//!
//! Modes: `walrus` / `single` / `round-robin` are the scripted baselines (the lab's own
//! `authd` serves answers the orchestrator writes); `walrus-runtime` runs the real Walrus
//! ([`runtime`]) with no steering table (the paper's rule) and the scenario events against
//! it; `walrus-learned` the real Walrus with learned steering ([`learned`]). The
//! *oracles* use the lab's ground truth, which no operator has, and are labelled so in
//! every report: `oracle` (clients skip DNS), `walrus-oracle-table` (scripted servers
//! steering by a table of it), `walrus-runtime-oracle-table` (the real runtime with it).
//!
//! Debian packages: `iproute2 bind9 nginx` (CI form), and a kernel with VXLAN (the delay
//! lines); the full lab adds `unbound knot-resolver pdns-recursor` and, for the PNG plots,
//! `python3-matplotlib` (or matplotlib from PyPI; without it the report says so and has
//! no plots).
//!
//! - [`spec`]: what a run builds and the address plan.
//! - [`netns`]: namespaces, bridge, veths, process guards, stale cleanup.
//! - [`relay`]: the delay relay and its DNS query log (which resolver asked which area).
//! - [`servers`]: root zone, resolvers' and nginx configurations, the area name server role.
//! - [`clients`]: HTTP clients with a TTL-honouring stub, convergence probes.
//! - [`analysis`]: figures from records, and the checks the CI form asserts.
//! - [`orchestrate`]: one run end to end.
//! - [`report`]: the scenarios of the full lab and the Markdown report.
//! - [`resolve`]: the resolver matrix (issue 15): `www` through Unbound, BIND, Knot
//!   Resolver and PowerDNS Recursor from a cold cache, for both zone layouts and both
//!   name-server backends, in one namespace on loopback (`walrus-lab resolve-matrix`).
//! - [`wan`]: the WAN lab (issue 18): the real Walrus across emulated wide-area links
//!   between the areas (delay, jitter, loss), its figures and the CI form's checks
//!   (`walrus-lab wan`).
//! - [`learned`]: learned steering's counters scraped from the Directors, the spoofing
//!   test, and what each area can measure to the resolvers.
//! - [`runtime`]: the real Walrus (`walrus-node run` processes) in the lab, the scenario
//!   events played against it, and the watcher recording answers and masters.
//!
//! Why a crate of its own (`lab/`, `walrus-lab`) and not a `walrus-node lab` subcommand:
//! the lab needs root, namespaces and five resolver packages, none of which a production
//! node should carry. Its tests (`lab/tests`) get the lab's path from Cargo
//! (`CARGO_BIN_EXE_walrus-lab`); the `walrus-node` processes it runs are the real binary,
//! found next to `walrus-lab` in the target directory (`cargo test --workspace` builds it
//! first, for walrus-node's own tests) or at $WALRUS_NODE ([`runtime::ensure_walrus_node`]).

pub mod analysis;
pub mod clients;
pub mod learned;
pub mod netns;
pub mod orchestrate;
pub mod relay;
pub mod report;
pub mod resolve;
pub mod runtime;
pub mod servers;
pub mod spec;
pub mod wan;
