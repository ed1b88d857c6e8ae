//! The full lab's scenarios and its report: `results.json` (every run's figures),
//! `report.md` (tables), PNG plots drawn by `plot.py` (matplotlib; skipped with a note in
//! the report when Python or matplotlib is missing, so nothing else depends on it).

use super::analysis::{ClientSummary, RunResult};
use super::learned::Spoof;
use super::spec::{Area, Failure, LabSpec, Mode, Region, ResolverKind, ScenarioEvent};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A run's spec with the lab's defaults: ring latency matrix (nearest area 10 ms, +30 ms
/// per step), two servers per cluster, every resolver kind.
pub fn base_spec(work: &Path, tag: &str, areas: u8, regions: u8, mode: Mode) -> LabSpec {
    LabSpec {
        prefix: format!("wl{}x{}", std::process::id(), tag),
        dir: work.join(tag),
        areas,
        servers_per_cluster: 2,
        regions,
        rtt_ms: LabSpec::ring_matrix(regions, areas, 10, 30),
        resolvers: ResolverKind::ALL.to_vec(),
        mode,
        ttl_secs: 2,
        seconds: 40,
        clients_per_resolver: 3,
        think_ms: 200,
        probe_rate: 8,
        seed: 9,
        failure: None,
        event: None,
        spoof: None,
    }
}

/// The modes of the steady-state runs, in the report's order.
pub const STEADY_MODES: [Mode; 8] = [
    Mode::Single,
    Mode::RoundRobin,
    Mode::Oracle,
    Mode::Walrus,
    Mode::OracleTable,
    Mode::Runtime,
    Mode::RuntimeOracleTable,
    Mode::Learned,
];

/// Least length of a learned-steering steady run or spoofing test, seconds: with
/// `[dns.learned]`'s defaults (one probe of a prefix per 30 s, 3 samples before an area's
/// estimate counts) an area knows a resolver prefix 60–90 s after its first query.
pub const LEARNED_SECS: u32 = 150;

/// The spoofing test of the lab: from `at` for `secs` seconds, 200 forged queries a second
/// from the victim's prefix and 20 made-up ones.
pub fn spoof_at(at: u32, secs: u32) -> Spoof {
    Spoof {
        at_secs: at,
        secs,
        rate: 200,
        sources: 20,
    }
}

/// The result of a run that was not made, with the reason.
pub fn not_run(spec: &LabSpec, name: &str, why: &str) -> RunResult {
    RunResult {
        name: name.to_owned(),
        mode: spec.mode.name().to_owned(),
        areas: spec.areas,
        regions: spec.regions,
        convergence: Vec::new(),
        clients: Vec::new(),
        failure: None,
        event: None,
        warmup: Vec::new(),
        provenance: None,
        not_run: Some(why.to_owned()),
        steering: None,
        measured_rtt: Vec::new(),
    }
}

/// The full lab: convergence with 2..=5 areas (probes only); steady state with 3 and 5
/// areas in every mode ([`STEADY_MODES`]: baselines, oracles, the real runtime without a
/// steering table and with learned steering); a cluster dies (scripted); the real
/// runtime's events, without a steering table and with learned steering; the overload
/// met by round-robin DNS; the spoofing test.
pub fn full_plan(work: &Path, seconds: u32) -> Vec<(String, LabSpec)> {
    let mut plan = Vec::new();
    for n in 2..=5u8 {
        let tag = format!("c{n}");
        let mut s = base_spec(work, &tag, n, n.min(3), Mode::Walrus);
        s.clients_per_resolver = 0;
        s.probe_rate = 10;
        s.seconds = seconds;
        plan.push((format!("convergence-{n}-areas"), s));
    }
    for n in [3u8, 5] {
        for (i, mode) in STEADY_MODES.into_iter().enumerate() {
            let tag = format!("s{n}x{i}");
            let mut s = base_spec(work, &tag, n, 3, mode);
            s.seconds = seconds;
            // The runtime's oracle lasts as long as learned steering's runs: it is their
            // bar (the same walrus-node processes on the same cores, for as long).
            if matches!(mode, Mode::Learned | Mode::RuntimeOracleTable) {
                s.seconds = seconds.max(LEARNED_SECS);
            }
            if mode == Mode::Oracle {
                s.clients_per_resolver = 3 * ResolverKind::ALL.len() as u32;
                s.probe_rate = 0;
            }
            plan.push((format!("steady-{n}-{}", mode.name()), s));
        }
    }
    for (tag, redirect, name) in [("f0", true, "walrus"), ("f1", false, "round-robin")] {
        let mode = if redirect {
            Mode::Walrus
        } else {
            Mode::RoundRobin
        };
        let mut s = base_spec(work, tag, 3, 3, mode);
        s.seconds = seconds;
        s.probe_rate = 0;
        s.failure = Some(Failure {
            area: Area(2),
            at_secs: seconds / 3,
            to: Area(1),
            detect_ms: 1000,
            redirect,
        });
        plan.push((format!("cluster-dies-{name}"), s));
    }
    // The real runtime (walrus-node processes): one event each, with no steering table
    // (the paper's rule) and with learned steering. Area 2's cluster dies or overloads,
    // the master dies, area 3 is cut off from the others.
    let third = (seconds / 3).max(1);
    let events: [(&str, ScenarioEvent); 4] = [
        (
            "cluster-dies",
            ScenarioEvent::ClusterDies {
                area: Area(2),
                at_secs: third,
            },
        ),
        (
            "overload",
            ScenarioEvent::Overload {
                area: Area(2),
                at_secs: (seconds / 4).max(1),
                secs: third,
                conns: OVERLOAD_CONNS,
            },
        ),
        ("master-dies", ScenarioEvent::MasterDies { at_secs: third }),
        (
            "partition",
            ScenarioEvent::Partition {
                area: Area(3),
                at_secs: (seconds / 4).max(1),
                secs: third,
            },
        ),
    ];
    let overload = events[1].1;
    for (mode, prefix) in [
        (Mode::Runtime, "runtime"),
        (Mode::Learned, "runtime-learned"),
    ] {
        for (i, (name, event)) in events.into_iter().enumerate() {
            let mut s = base_spec(work, &format!("{prefix}{i}"), 3, 3, mode);
            s.seconds = seconds;
            s.probe_rate = 0;
            s.event = Some(event);
            plan.push((format!("{prefix}-{name}"), s));
        }
    }
    // The same overload met by round-robin DNS (no Controller: where do requests go?).
    let mut s = base_spec(work, "rt5", 3, 3, Mode::RoundRobin);
    s.seconds = seconds;
    s.probe_rate = 0;
    s.event = Some(overload);
    plan.push(("overload-round-robin".into(), s));
    // The spoofing test against learned steering.
    // Once learned (see LEARNED_SECS): the forger starts at 60 % of the run, for 20 %.
    let mut s = base_spec(work, "sp", 3, 3, Mode::Learned);
    s.seconds = seconds.max(LEARNED_SECS);
    s.spoof = Some(spoof_at(s.seconds * 3 / 5, s.seconds / 5));
    plan.push(("learned-spoof".into(), s));
    plan
}

/// Slow connections held per server in the overload scenario: 36 of
/// [`super::runtime::MAX_WORKERS`] (40) is a load of 0.9, above the 0.8 threshold.
pub const OVERLOAD_CONNS: u32 = 36;

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Writes `report.md` (and asks `plot.py` for the PNGs) into `out`.
pub fn write_report(out: &Path, results: &[RunResult], command: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(results)?)?;
    let plots = draw_plots(&json, out);
    let mut md = String::new();
    let _ = writeln!(md, "# Steering lab report\n");
    write_provenance(&mut md, results, command);
    let _ = writeln!(
        md,
        "Raw figures: `results.json` (each run carries its commit and command). How the lab \
         works: `lab/src/lib.rs`. Latency matrix: region *r*'s nearest area is area *r*, 10 ms \
         RTT; every step of |r−a| adds 30 ms. A resolver's queries reach an area undelayed and \
         everything the area sends back to the resolver's address crosses the region's delay \
         line (the full RTT), so an area server timing its own exchanges with a resolver \
         measures the matrix; HTTP goes through a user-space relay that adds half the RTT each \
         way. Two nginx servers per cluster; TTL of the site's records 2 s. Resolvers in every \
         region: Unbound with its defaults (`unbound`), Unbound tuned (`unbound-fast`), BIND, \
         Knot Resolver, PowerDNS Recursor, and two sending EDNS Client Subnet \
         (`unbound-ecs`, `pdns-ecs`).\n"
    );
    let _ = writeln!(
        md,
        "**Oracles** (labelled *(oracle)* wherever they appear): `oracle` (clients skip DNS \
         and use their region's nearest cluster), `walrus-oracle-table` (scripted area servers \
         steering by a table written from the lab's ground truth; formerly `walrus-steered`) \
         and `walrus-runtime-oracle-table` (the real runtime with that table). No operator \
         knows that table: they are the bar, not Walrus. `walrus-runtime` is the real runtime \
         with no steering table (the paper's rule: the resolver picks the area server by RTT); \
         `walrus-learned` the real runtime with learned steering (`[dns.learned]`, no table).\n"
    );
    let skipped: Vec<&RunResult> = results.iter().filter(|r| r.not_run.is_some()).collect();
    if !skipped.is_empty() {
        let _ = writeln!(md, "**Not run** (their rows are absent below):\n");
        for r in skipped {
            let _ = writeln!(
                md,
                "- `{}`: {}",
                r.name,
                r.not_run.as_deref().unwrap_or_default()
            );
        }
        md.push('\n');
    }
    write_warmup(&mut md, results);
    write_measured_rtt(&mut md, results);
    let _ = writeln!(
        md,
        "## Convergence: share of probe queries sent to the nearest area's name server\n"
    );
    let _ = writeln!(
        md,
        "Each probe is a never-seen name under the site zone, so each one makes the resolver \
         choose among the site zone's name servers again (all areas serve it, §7.2). Counted \
         at the relays (ground truth). *After warm-up* = after the first 10 s. *Settled \
         after* = probes a region's resolver sent before its first 10 in a row all went to \
         the nearest area (the learning cost; \"never\" = not within the run).\n"
    );
    let conv: Vec<&RunResult> = results
        .iter()
        .filter(|r| !r.convergence.is_empty())
        .collect();
    let _ = writeln!(
        md,
        "| run | mode | areas | resolver | probes | nearest (all) | nearest (after warm-up) | settled after (per region) | per area |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in &conv {
        for c in r.convergence.iter().filter(|c| c.queries > 0) {
            let per: Vec<String> = c
                .per_area
                .iter()
                .map(|(a, n)| format!("a{a}:{n}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                label(&r.mode),
                r.areas,
                c.resolver.name(),
                c.queries,
                pct(c.nearest_all),
                pct(c.nearest_after_warmup),
                counts_or_never(&c.settle_after),
                per.join(" ")
            );
        }
    }
    let _ = writeln!(md, "\n## Clients: latency, errors, requests per cluster\n");
    let _ = writeln!(
        md,
        "Per run (what the area name servers answer) and per resolver of the clients. \
         *served by nearest* = share of successful requests served by the region's nearest \
         cluster; *answer from nearest zone* = share of DNS answers whose CNAME named the \
         nearest area's zone. Times include the DNS lookup when the stub's cache had expired.\n"
    );
    let _ = writeln!(md, "| run | mode | clients of | requests | errors | p50 ms | p99 ms | served by nearest | answer from nearest zone | per cluster |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for r in results.iter().filter(|r| !r.clients.is_empty()) {
        for c in &r.clients {
            let per: Vec<String> = c
                .per_cluster
                .iter()
                .map(|(a, n)| format!("a{a}:{n}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
                r.name,
                label(&r.mode),
                c.who,
                c.requests,
                c.errors,
                c.p50_ms,
                c.p99_ms,
                pct(c.nearest),
                pct(c.answer_nearest),
                per.join(" ")
            );
        }
    }
    let failed: Vec<&RunResult> = results.iter().filter(|r| r.failure.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(md, "\n## A cluster dies\n");
        let _ = writeln!(
            md,
            "Area a2's whole home cluster is killed (SIGKILL) a third into the run. With \
             the scripted Walrus (`cluster-dies-walrus`), 1 s later (standing in for \
             detection plus one Controller round) a2's name server answers with a1's cluster; \
             with the real runtime (`runtime-cluster-dies`) the Reporters see their nginx \
             refuse connections and the master moves the area; with round-robin DNS nothing \
             changes. TTL 2 s. *after answer moved* for the runtime = after the watcher first \
             saw a2's new answer.\n"
        );
        let _ = writeln!(md, "| run | requests after | errors after | uses of dead servers | last dead use after kill (ms) | after answer moved (ms) |");
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for r in failed {
            if let Some(f) = &r.failure {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.name,
                    f.requests_after,
                    f.errors_after,
                    f.dead_uses,
                    f.last_dead_use_ms.map_or("never".into(), |x| x.to_string()),
                    f.last_dead_use_after_update_ms
                        .map_or("—".into(), |x| x.to_string()),
                );
            }
        }
    }
    let events: Vec<&RunResult> = results.iter().filter(|r| r.event.is_some()).collect();
    if !events.is_empty() {
        let _ = writeln!(md, "\n## The real runtime: events\n");
        let _ = writeln!(
            md,
            "`walrus-node run` processes in the area namespaces (per area: a Controller, a \
             Director with the embedded name server — no steering table in `runtime-*`, \
             learned steering in `runtime-learned-*` — plus the Reporter of \
             web server 1, the Reporter of web server 2), group communication over QUIC on the \
             backbone, 1 s rounds, threshold 0.8 of `max_workers` = 40 busy connections. A \
             watcher in region 1 asks every area server for `www.<area zone>` every 100 ms and \
             every Controller's `/status` every 200 ms. *reaction* = event start → the struck \
             area's first answer without its own cluster (cluster dies, overload), → one new \
             master (master dies), → the cut-off side has its own master (partition). \
             *recovery* = event end → the area back on its home cluster (overload), → one \
             master again (partition). Client figures are from the event's start to the end \
             of the run, all resolvers. `overload-round-robin` is the baseline: the same slow \
             clients against round-robin DNS, no runtime.\n"
        );
        let _ = writeln!(md, "| run | event | reaction ms | recovery ms | most masters at once | masters at end | requests after | errors after | p50 ms | p99 ms | served by nearest | per cluster | answer changes (ms after start: area → clusters) |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for r in events {
            let Some(e) = &r.event else { continue };
            let ms = |x: Option<u64>| x.map_or("—".to_owned(), |v| v.to_string());
            let changes: Vec<String> = e
                .answer_changes
                .iter()
                .filter(|(t, _, _)| *t >= 0)
                .take(8)
                .map(|(t, a, c)| {
                    let c: Vec<String> = c.iter().map(|x| format!("c{x}")).collect();
                    format!("{t}: a{a}→{}", c.join("+"))
                })
                .collect();
            let (req, err, p50, p99, near, per) = match &e.after {
                Some(c) => (
                    c.requests.to_string(),
                    c.errors.to_string(),
                    format!("{:.1}", c.p50_ms),
                    format!("{:.1}", c.p99_ms),
                    pct(c.nearest),
                    c.per_cluster
                        .iter()
                        .map(|(a, n)| format!("a{a}:{n}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                None => Default::default(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {req} | {err} | {p50} | {p99} | {near} | {per} | {} |",
                r.name,
                e.kind,
                ms(e.reaction_ms),
                ms(e.recovery_ms),
                e.max_masters,
                e.masters_at_end,
                if changes.is_empty() {
                    "none".to_owned()
                } else {
                    changes.join("; ")
                }
            );
        }
    }
    let during: Vec<(&str, &ClientSummary)> = results
        .iter()
        .filter_map(|r| r.event.as_ref().map(|e| (r.name.as_str(), e)))
        .flat_map(|(n, e)| e.during.iter().map(move |c| (n, c)))
        .collect();
    if !during.is_empty() {
        let _ = writeln!(
            md,
            "\nClients *during* the events that end (start → end): all regions, and the \
             region whose nearest area was struck.\n"
        );
        let _ = writeln!(
            md,
            "| run | clients | requests | errors | p50 ms | p99 ms | served by nearest | per cluster |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
        for (name, c) in during {
            let per: Vec<String> = c
                .per_cluster
                .iter()
                .map(|(a, n)| format!("a{a}:{n}"))
                .collect();
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {:.1} | {:.1} | {} | {} |",
                c.who,
                c.requests,
                c.errors,
                c.p50_ms,
                c.p99_ms,
                pct(c.nearest),
                per.join(" ")
            );
        }
    }
    write_learned(&mut md, results);
    let _ = writeln!(md, "\n## Plots\n");
    match plots {
        Ok(names) => {
            for n in names {
                let _ = writeln!(md, "![{n}]({n})\n");
            }
        }
        Err(e) => {
            let _ = writeln!(md, "No plots: {e}\n");
        }
    }
    if let Ok(reading) = std::fs::read_to_string(out.join("reading.md")) {
        let _ = writeln!(md, "\n{reading}");
    }
    let path = out.join("report.md");
    std::fs::write(&path, md)?;
    Ok(path)
}

/// One Markdown table row.
fn row(md: &mut String, cells: &[String]) {
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

/// Per-region counts, `never` where there is none: `3 never 12`.
fn counts_or_never(v: &[Option<usize>]) -> String {
    v.iter()
        .map(|x| x.map_or("never".into(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A mode's name, with *(oracle)* after the oracles'.
pub fn label(mode: &str) -> String {
    match Mode::parse(mode) {
        Some(m) if m.is_oracle() => format!("{mode} *(oracle)*"),
        _ => mode.to_owned(),
    }
}

/// The commit(s) and command(s) the report's runs were made with, and the report's own.
fn write_provenance(md: &mut String, results: &[RunResult], command: &str) {
    let now = super::analysis::Provenance::now();
    let _ = writeln!(
        md,
        "Report written by `{command}` at commit `{}`.\n",
        now.short()
    );
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    for r in results {
        let name = if r.not_run.is_some() {
            format!("{} (not run)", r.name)
        } else {
            r.name.clone()
        };
        let (c, cmd) = match &r.provenance {
            Some(p) => (format!("`{}`", p.short()), format!("`{}`", p.command)),
            None => (
                "unknown (made before runs recorded their commit)".into(),
                "—".into(),
            ),
        };
        match groups.iter_mut().find(|g| g.0 == c && g.1 == cmd) {
            Some(g) => g.2.push(name),
            None => groups.push((c, cmd, vec![name])),
        }
    }
    let _ = writeln!(md, "| commit | command | runs |\n|---|---|---|");
    for (c, cmd, names) in groups {
        let _ = writeln!(md, "| {c} | {cmd} | {} |", names.join(", "));
    }
    md.push('\n');
}

/// Issue 21's "Must show 1": per resolver and mode, the clients' warm-up, the share the
/// nearest cluster served after it, and p50 against the oracle run with as many areas.
fn write_warmup(md: &mut String, results: &[RunResult]) {
    let steady: Vec<&RunResult> = results
        .iter()
        .filter(|r| !r.warmup.is_empty() && r.event.is_none() && r.failure.is_none())
        .collect();
    if steady.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## Clients per resolver and mode: warm-up, nearest share, latency against the oracle\n"
    );
    let _ = writeln!(
        md,
        "Steady state, 3 regions. *Warm-up* = a region's client requests (its clients of that \
         resolver, in time order) before the first {} in a row served by the region's nearest \
         cluster, per region (\"never\" = not within the run). *Nearest after warm-up* = \
         share of successful requests after each region's warm-up served by the nearest \
         cluster (a region that never settled counts with all its requests). *p50* = median \
         request time (DNS + HTTP) of the whole run; *vs oracle* = that over the p50 of the \
         `oracle` run with as many areas (clients that skip DNS and use the nearest cluster). \
         *≥ 95 % from* = the first 2 s bin from which every bin to the end has at least 95 % \
         of its requests served by the nearest cluster (chance runs of ten cannot fake it), \
         and the share from there; *answer ≥ 95 % from* the same for the answer's zone \
         (the area steering named), which the Controller's moves of an area to another \
         cluster do not change. *÷ runtime oracle* = the p50 from there over the p50 of \
         the `walrus-runtime-oracle-table` run with as many areas: the same walrus-node \
         processes on the same cores for as long, steering by the lab's ground truth. It is \
         the fair bar for the real-runtime modes: once every request goes to the nearest \
         cluster and the answer is cached, a request's time is the HTTP exchange with that \
         cluster through the lab's user-space relay, which the runtime's own CPU use slows \
         on a small machine (the `oracle` run has no walrus-node at all). Issue 21's bar for \
         learned steering: ≥ 95 % and ≤ 1.10. Learned-steering runs and the runtime's oracle \
         last {} s (the others 40 s).\n",
        super::analysis::SETTLED_RUN,
        LEARNED_SECS
    );
    let _ = writeln!(
        md,
        "| areas | mode | resolver | warm-up (requests, per region) | nearest after warm-up | requests after | p50 ms | vs oracle | ≥ 95 % from (s) | answer ≥ 95 % from (s) | nearest from there | p50 from there, vs oracle | ÷ runtime oracle |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in steady {
        let oracle_p50 = results
            .iter()
            .find(|o| {
                o.mode == Mode::Oracle.name() && o.areas == r.areas && o.name.starts_with("steady-")
            })
            .and_then(|o| o.clients.iter().find(|c| c.who == "all"))
            .map(|c| c.p50_ms);
        let runtime_oracle_p50 = results
            .iter()
            .find(|o| {
                o.mode == Mode::RuntimeOracleTable.name()
                    && o.areas == r.areas
                    && o.name.starts_with("steady-")
            })
            .and_then(|o| o.clients.iter().find(|c| c.who == "all"))
            .map(|c| c.p50_ms);
        let runtime = Mode::parse(&r.mode).is_some_and(Mode::is_runtime);
        for w in &r.warmup {
            let p50 = r
                .clients
                .iter()
                .find(|c| c.who == w.who)
                .map_or(0.0, |c| c.p50_ms);
            let ratio = match oracle_p50 {
                Some(o) if o > 0.0 => format!("{:.2}", p50 / o),
                _ => "—".into(),
            };
            row(
                md,
                &[
                    r.areas.to_string(),
                    // Not a steady run (the spoofing test): say which.
                    if r.name.starts_with("steady-") {
                        label(&r.mode)
                    } else {
                        format!("{} (`{}`)", label(&r.mode), r.name)
                    },
                    w.who.clone(),
                    counts_or_never(&w.requests_before),
                    pct(w.nearest_after),
                    w.requests_after.to_string(),
                    format!("{p50:.1}"),
                    ratio,
                    w.steady_from_secs.map_or("never".into(), |s| s.to_string()),
                    match (w.answer_checked, w.answer_steady_from_secs) {
                        (false, _) => "—".into(),
                        (true, None) => "never".into(),
                        (true, Some(s)) => s.to_string(),
                    },
                    w.nearest_when_steady.map_or("—".into(), pct),
                    match (w.p50_when_steady_ms, oracle_p50) {
                        (Some(p), Some(o)) if o > 0.0 => format!("{p:.1} ({:.2})", p / o),
                        (Some(p), _) => format!("{p:.1}"),
                        _ => "—".into(),
                    },
                    match (w.p50_when_steady_ms, runtime_oracle_p50) {
                        (Some(p), Some(o)) if runtime && o > 0.0 => format!("{:.2}", p / o),
                        _ => "—".into(),
                    },
                ],
            );
        }
    }
    md.push('\n');
}

/// What the areas could measure to the resolvers (the delay line's check).
fn write_measured_rtt(md: &mut String, results: &[RunResult]) {
    let runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| !r.measured_rtt.is_empty())
        .collect();
    let Some(first) = runs.first() else { return };
    let _ = writeln!(
        md,
        "## What an area server can measure: TCP connect time to each region's resolvers\n"
    );
    let _ = writeln!(
        md,
        "At the clients' start of every run, each area times TCP connects from its namespace \
         to port 53 of every resolver of every region (3 tries each, median per region): the \
         round trip a server can time itself, which learned steering relies on. Run `{}`, \
         measured ms (matrix ms):\n",
        first.name
    );
    let regions: Vec<u8> = {
        let mut v: Vec<u8> = first.measured_rtt.iter().map(|m| m.region).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let _ = writeln!(
        md,
        "| area | {} |\n|---|{}",
        regions
            .iter()
            .map(|r| format!("r{r}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(regions.len())
    );
    for a in 1..=first.areas {
        let cells: Vec<String> = regions
            .iter()
            .map(|r| {
                first
                    .measured_rtt
                    .iter()
                    .find(|m| m.area == a && m.region == *r)
                    .map_or("—".into(), |m| format!("{:.1} ({})", m.ms, m.matrix_ms))
            })
            .collect();
        let _ = writeln!(md, "| a{a} | {} |", cells.join(" | "));
    }
    let worst = runs
        .iter()
        .flat_map(|r| r.measured_rtt.iter())
        .map(|m| m.ms - f64::from(m.matrix_ms))
        .fold(f64::NEG_INFINITY, f64::max);
    let least = runs
        .iter()
        .flat_map(|r| r.measured_rtt.iter())
        .map(|m| m.ms - f64::from(m.matrix_ms))
        .fold(f64::INFINITY, f64::min);
    let _ = writeln!(
        md,
        "\nOver all {} runs that measured: measured − matrix from {least:.1} to {worst:.1} ms.\n",
        runs.len()
    );
}

/// Learned steering: the Directors' counters at the end of each run that scraped them, and
/// the spoofing test.
fn write_learned(md: &mut String, results: &[RunResult]) {
    let runs: Vec<(&RunResult, &super::learned::SteeringOutcome)> = results
        .iter()
        .filter_map(|r| r.steering.as_ref().map(|s| (r, s)))
        .collect();
    let _ = writeln!(
        md,
        "\n## Learned steering: the area servers' counters, spoofing\n"
    );
    if runs.is_empty() {
        let _ = writeln!(
            md,
            "No run scraped the Directors' steering counters (no real-runtime run in this \
             report, or none made).\n"
        );
        return;
    }
    let silent: Vec<&str> = runs
        .iter()
        .filter(|(_, s)| !s.exposed)
        .map(|(r, _)| r.name.as_str())
        .collect();
    if !silent.is_empty() {
        let _ = writeln!(
            md,
            "No Director exposed `walrus_steering_*` or a `/status` `steering` block in: {} \
             (a `walrus-node` without learned steering).\n",
            silent.join(", ")
        );
    }
    let runs: Vec<(&RunResult, &super::learned::SteeringOutcome)> =
        runs.into_iter().filter(|(_, s)| s.exposed).collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "Scraped from every area Director's `/metrics` (`walrus_steering_*`) at the clients' \
         start and end; the end's figures. \"—\" = not exposed.\n"
    );
    let _ = writeln!(
        md,
        "| run | area | table prefixes | answers learned | override | paper's rule | probes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let f = |x: Option<f64>| x.map_or("—".to_owned(), |v| format!("{v:.0}"));
    for (r, s) in &runs {
        for sc in s.scrapes.iter().filter(|x| x.label == "end") {
            let _ = writeln!(
                md,
                "| {} | a{} | {} | {} | {} | {} | {} |",
                r.name,
                sc.area,
                f(sc.table_prefixes),
                f(sc.answers_learned),
                f(sc.answers_override),
                f(sc.answers_paper),
                f(sc.probes)
            );
        }
    }
    for (r, s) in &runs {
        let Some(sp) = &s.spoof else { continue };
        let _ = writeln!(
            md,
            "\n**Spoofing test** (`{}`): from {} s for {} s, {} forged queries a second \
             (sent: {}) to the area servers from region r{} with {} forged sources: one in the \
             victim prefix `{}` (region r1's resolvers) and {} made-up prefixes. An observer in \
             r1 asked every area server every 500 ms from another address of the victim \
             prefix. Budget per area for the window: {:.0} probes (one per prefix per {} s, \
             at most {} a second).\n",
            r.name,
            sp.spoof.at_secs,
            sp.spoof.secs,
            sp.spoof.rate,
            sp.sent,
            r.regions,
            sp.spoof.sources + 1,
            Region(1).resolver_prefix(),
            sp.spoof.sources,
            sp.budget,
            super::learned::PROBE_INTERVAL_SECS,
            super::learned::PROBES_PER_SECOND
        );
        let _ = writeln!(
            md,
            "| area asked | victim's answer before | changes from the start (ms: area) | probes during |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for (area, (before, changes)) in &sp.victim_answers {
            let ch: Vec<String> = changes
                .iter()
                .map(|(t, a)| format!("{t}: {}", a.map_or("none".into(), |a| format!("a{a}"))))
                .collect();
            let _ = writeln!(
                md,
                "| a{area} | {} | {} | {} |",
                before.map_or("none".into(), |a| format!("a{a}")),
                if ch.is_empty() {
                    "none".into()
                } else {
                    ch.join("; ")
                },
                f(sp.probes_during.get(area).copied())
            );
        }
        let _ = writeln!(
            md,
            "\nVerdict: answer for the victim prefix {}; probes {}.",
            match (sp.moved, sp.moved_away) {
                (false, _) => "never moved",
                (true, false) => "moved only to its nearest area (the table learning)",
                (true, true) => "**moved to an area not its nearest**",
            },
            match sp.within_budget {
                Some(true) => "within budget",
                Some(false) => "**over budget**",
                None => "not counted (no probe counter exposed)",
            }
        );
    }
}

/// Runs the embedded `plot.py` with python3; returns the PNG file names.
fn draw_plots(json: &Path, out: &Path) -> Result<Vec<String>, String> {
    let script = out.join(".plot.py");
    std::fs::write(&script, include_str!("plot.py")).map_err(|e| e.to_string())?;
    // The first python3 on PATH (maybe a pyenv one without matplotlib), then Debian's.
    let mut res = std::process::Command::new("python3")
        .arg(&script)
        .arg(json)
        .arg(out)
        .output();
    if !res.as_ref().is_ok_and(|o| o.status.success()) {
        let debian = std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(json)
            .arg(out)
            .output();
        if debian.as_ref().is_ok_and(|o| o.status.success()) {
            res = debian;
        }
    }
    let _ = std::fs::remove_file(&script);
    let o =
        res.map_err(|e| format!("python3 not runnable ({e}); install python3 and matplotlib"))?;
    if !o.status.success() {
        return Err(format!(
            "plot.py failed (pip install matplotlib?): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}
