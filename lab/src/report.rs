//! The full lab's scenarios and its report: `results.json` (every run's figures),
//! `report.md` (tables), PNG plots drawn by `plot.py` (matplotlib; skipped with a note in
//! the report when Python or matplotlib is missing, so nothing else depends on it).

use super::analysis::{ClientSummary, RunResult};
use super::spec::{Area, Event, Failure, LabSpec, Mode, ResolverKind};
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
    }
}

/// The full lab: convergence with 2..=5 areas (probes only), then the client scenarios
/// with 3 areas (single site, round-robin DNS, oracle, Walrus, Walrus with steering).
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
    for (i, mode) in [
        Mode::Single,
        Mode::RoundRobin,
        Mode::Oracle,
        Mode::Walrus,
        Mode::OracleTable,
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("s{i}");
        let mut s = base_spec(work, &tag, 3, 3, mode);
        s.seconds = seconds;
        if mode == Mode::Oracle {
            s.clients_per_resolver = 3 * ResolverKind::ALL.len() as u32;
            s.probe_rate = 0;
        }
        plan.push((format!("steady-{}", mode.name()), s));
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
    // The real runtime (walrus-node processes, with source steering): steady state, then
    // one event each. Area 2's cluster dies or overloads, the master dies, area 3 is cut
    // off from the others.
    let third = (seconds / 3).max(1);
    let events: [(&str, Option<Event>); 5] = [
        ("steady", None),
        (
            "cluster-dies",
            Some(Event::ClusterDies {
                area: Area(2),
                at_secs: third,
            }),
        ),
        (
            "overload",
            Some(Event::Overload {
                area: Area(2),
                at_secs: (seconds / 4).max(1),
                secs: third,
                conns: OVERLOAD_CONNS,
            }),
        ),
        ("master-dies", Some(Event::MasterDies { at_secs: third })),
        (
            "partition",
            Some(Event::Partition {
                area: Area(3),
                at_secs: (seconds / 4).max(1),
                secs: third,
            }),
        ),
    ];
    let overload = events[2].1;
    for (i, (name, event)) in events.into_iter().enumerate() {
        let mut s = base_spec(work, &format!("rt{i}"), 3, 3, Mode::Runtime);
        s.seconds = seconds;
        s.probe_rate = 0;
        s.event = event;
        plan.push((format!("runtime-{name}"), s));
    }
    // The same overload met by round-robin DNS (no Controller: where do requests go?).
    let mut s = base_spec(work, "rt5", 3, 3, Mode::RoundRobin);
    s.seconds = seconds;
    s.probe_rate = 0;
    s.event = overload;
    plan.push(("overload-round-robin".into(), s));
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
    let _ = writeln!(
        md,
        "Generated by `{command}`. Raw figures: `results.json`. How the lab works: \
         `lab/src/lib.rs`. Latency matrix: region *r*'s nearest area is area *r*, 10 ms RTT; \
         every step of |r−a| adds 30 ms (a user-space relay adds half each way). Two nginx \
         servers per cluster; TTL of the site's records 2 s.\n"
    );
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
        "| run | areas | resolver | probes | nearest (all) | nearest (after warm-up) | settled after (per region) | per area |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in &conv {
        for c in r.convergence.iter().filter(|c| c.queries > 0) {
            let per: Vec<String> = c
                .per_area
                .iter()
                .map(|(a, n)| format!("a{a}:{n}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                r.areas,
                c.resolver.name(),
                c.queries,
                pct(c.nearest_all),
                pct(c.nearest_after_warmup),
                c.settle_after
                    .iter()
                    .map(|x| x.map_or("never".into(), |n| n.to_string()))
                    .collect::<Vec<_>>()
                    .join(" "),
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
    let _ = writeln!(md, "| run | clients of | requests | errors | p50 ms | p99 ms | served by nearest | answer from nearest zone | per cluster |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in results.iter().filter(|r| !r.clients.is_empty()) {
        for c in &r.clients {
            let per: Vec<String> = c
                .per_cluster
                .iter()
                .map(|(a, n)| format!("a{a}:{n}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |",
                r.name,
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
             Director with the embedded name server and source steering plus the Reporter of \
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

/// Runs the embedded `plot.py` with python3; returns the PNG file names.
fn draw_plots(json: &Path, out: &Path) -> Result<Vec<String>, String> {
    let script = out.join(".plot.py");
    std::fs::write(&script, include_str!("plot.py")).map_err(|e| e.to_string())?;
    let res = std::process::Command::new("python3")
        .arg(&script)
        .arg(json)
        .arg(out)
        .output();
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
