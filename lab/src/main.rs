//! `walrus-lab`: the steering lab's command (see `lab/src/lib.rs`). Needs root (network
//! namespaces). The hidden subcommands are the roles it plays inside the namespaces.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use walrus_lab::{
    analysis, clients, learned, netns, orchestrate, relay, report, resolve, runtime, servers, spec,
    wan,
};

#[derive(Parser)]
#[command(about = "Walrus steering lab: real resolvers, emulated latency, convergence")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The full lab: every scenario, then the report (Markdown, JSON, PNG) in OUT.
    Full {
        /// Where the report goes (e.g. docs/lab).
        #[arg(long)]
        out: PathBuf,
        /// Seconds per run.
        #[arg(long, default_value_t = 40)]
        seconds: u32,
        /// Work directory for configurations and raw records.
        #[arg(long, default_value = "/tmp/walrus-lab")]
        work: PathBuf,
        /// Only the runs whose name starts with this; their results replace those of the
        /// same name in OUT/results.json, the others are kept.
        #[arg(long)]
        only: Option<String>,
    },
    /// One run.
    Run {
        /// Areas (2..=9).
        #[arg(long, default_value_t = 2)]
        areas: u8,
        /// Client regions (default: as many as areas, at most 3).
        #[arg(long)]
        regions: Option<u8>,
        /// walrus, single, round-robin, walrus-runtime, walrus-learned; the oracles:
        /// oracle, walrus-oracle-table, walrus-runtime-oracle-table.
        #[arg(long, default_value = "walrus")]
        mode: String,
        /// Comma-separated: unbound, unbound-fast, bind, knot, pdns, unbound-ecs, pdns-ecs.
        #[arg(long, default_value = "bind")]
        resolvers: String,
        /// Seconds of clients and probes.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// HTTP clients per region and resolver.
        #[arg(long, default_value_t = 2)]
        clients: u32,
        /// Probe queries per second per resolver.
        #[arg(long, default_value_t = 10)]
        probe_rate: u32,
        /// Work directory.
        #[arg(long, default_value = "/tmp/walrus-lab-run")]
        work: PathBuf,
        /// Also write a report into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --mode walrus-runtime: KIND[:AREA]@AT[+SECS], e.g. cluster-dies:2@10,
        /// overload:2@8+12, master-dies@10, partition:3@8+12.
        #[arg(long)]
        event: Option<String>,
        /// With a runtime mode: the spoofing test, AT+SECS (seconds after the clients'
        /// start), e.g. 15+15.
        #[arg(long)]
        spoof: Option<String>,
    },
    /// Rewrites report.md and the plots from OUT/results.json.
    Report {
        /// The report directory.
        #[arg(long)]
        out: PathBuf,
        /// The command line to name in the report.
        #[arg(long, default_value = "walrus-lab full --out docs/lab")]
        command: String,
    },
    /// Recomputes the figures of a full lab's runs from their raw records (WORK; runs
    /// without records keep their figures from OUT/results.json), then the report.
    Reanalyze {
        /// The work directory of the full lab.
        #[arg(long, default_value = "/tmp/walrus-lab")]
        work: PathBuf,
        /// The report directory.
        #[arg(long)]
        out: PathBuf,
        /// The command line to name in the report.
        #[arg(long, default_value = "walrus-lab full --out docs/lab")]
        command: String,
    },
    /// The resolver matrix (issue 15): `www.example.com` A through Unbound, BIND, Knot
    /// Resolver and PowerDNS Recursor from a cold cache, for the nested and flat zone
    /// layouts, the embedded and BIND backends, QNAME minimisation on and off. Prints one
    /// JSON line per cell; exits 1 if any try failed.
    ResolveMatrix {
        /// Cold-cache resolutions per cell.
        #[arg(long, default_value_t = 500)]
        tries: u32,
        /// Work directory (configurations, zone files, logs); replaced.
        #[arg(long, default_value = "/tmp/walrus-resolve-matrix")]
        work: PathBuf,
        /// The walrus-node binary; default: $WALRUS_NODE, else walrus-node next to this
        /// program.
        #[arg(long)]
        walrus_node: Option<PathBuf>,
        /// Comma-separated layouts: nested, flat.
        #[arg(long, default_value = "nested,flat")]
        layouts: String,
        /// Comma-separated backends: embedded, bind.
        #[arg(long, default_value = "embedded,bind")]
        backends: String,
        /// Comma-separated resolvers: unbound, bind, knot, pdns.
        #[arg(long, default_value = "unbound,bind,knot,pdns")]
        resolvers: String,
        /// Comma-separated QNAME minimisation settings: on, off.
        #[arg(long, default_value = "on,off")]
        qmin: String,
    },
    /// The WAN lab (issue 18): three areas' real walrus-node processes across emulated
    /// wide-area links (one-way delay 20/80/150 ms, jitter, loss), a content deploy, web
    /// clusters and masters killed; prints the figures as one JSON line and, with --out,
    /// adds them to OUT/results.json and rewrites OUT/report.md and the plots.
    Wan {
        /// Loss in percent, each direction (e.g. 0, 1, 3).
        #[arg(long, default_value_t = 1.0)]
        loss: f64,
        /// Seconds measured after the runtime settled.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
        /// Jitter, ± ms.
        #[arg(long, default_value_t = 10)]
        jitter: u32,
        /// Multiplies every one-way delay (1: 20/80/150 ms).
        #[arg(long, default_value_t = 1.0)]
        delay_scale: f64,
        /// The deploy's size in MB (0: none) ...
        #[arg(long, default_value_t = 200)]
        deploy_mb: u32,
        /// ... and files.
        #[arg(long, default_value_t = 2000)]
        deploy_files: u32,
        /// ... written in this many parts, 10 s apart (each a generation of its own).
        #[arg(long, default_value_t = 2)]
        deploy_steps: u32,
        /// Seconds between events (cluster killed / master killed, alternating); 0: none.
        #[arg(long, default_value_t = 60)]
        event_every: u32,
        /// `[timing]` values as `key=value,...` over the wan defaults, e.g.
        /// `report_timeout=400ms,gcs_profile=lan`.
        #[arg(long)]
        timing: Option<String>,
        /// `[controller] generation_grace` (e.g. `0s`: the rule before issue 18).
        #[arg(long)]
        generation_grace: Option<String>,
        /// `[controller] max_generation_lag`.
        #[arg(long)]
        max_generation_lag: Option<u64>,
        /// The run's name in the report (default: loss-<loss>).
        #[arg(long)]
        name: Option<String>,
        /// Work directory.
        #[arg(long, default_value = "/tmp/walrus-wan")]
        work: PathBuf,
        /// Add the result to this report directory (e.g. docs/wan).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rewrites the WAN report (results.md, plots) from OUT/results.json; with --work,
    /// first recomputes the figures of every run whose raw records are there.
    WanReport {
        /// The report directory.
        #[arg(long)]
        out: PathBuf,
        /// The work directory of `walrus-lab wan` runs (e.g. /tmp/walrus-wan).
        #[arg(long)]
        work: Option<PathBuf>,
    },
    /// Removes namespaces left by killed runs (`--all`: every lab namespace).
    Clean {
        #[arg(long)]
        all: bool,
    },
    #[command(hide = true)]
    Relay {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        region: u8,
    },
    #[command(hide = true)]
    WanRelay {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        area: u8,
    },
    #[command(hide = true)]
    WanWatch {
        #[arg(long)]
        spec: PathBuf,
    },
    #[command(hide = true)]
    Authd {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        area: u8,
    },
    #[command(hide = true)]
    Clients {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        region: u8,
    },
    #[command(hide = true)]
    Watch {
        #[arg(long)]
        spec: PathBuf,
    },
    #[command(hide = true)]
    Scrape {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        label: String,
    },
    #[command(hide = true)]
    MeasureRtt {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        area: u8,
    },
    #[command(hide = true)]
    Observe {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        secs: u64,
    },
    #[command(hide = true)]
    Spoof {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        secs: u32,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        sources: u32,
    },
    #[command(hide = true)]
    Hold {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        conns: u32,
        #[arg(long)]
        secs: u64,
    },
    #[command(hide = true)]
    ResolveTries {
        #[arg(long)]
        plan: PathBuf,
    },
    #[command(hide = true)]
    ResolveReady {
        /// ADDR:PORT=NAME: wait for NOERROR to NAME SOA.
        #[arg(long)]
        dns: Vec<String>,
    },
    #[command(hide = true)]
    Wait {
        #[arg(long)]
        dns: Vec<SocketAddr>,
        #[arg(long)]
        tcp: Vec<SocketAddr>,
    },
}

fn load(path: &PathBuf) -> anyhow::Result<spec::LabSpec> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let exe = std::env::current_exe()?;
    match cli.cmd {
        Cmd::Full {
            out,
            seconds,
            work,
            only,
        } => {
            let provenance = analysis::Provenance::now();
            let command = provenance.command.clone();
            let plan = report::full_plan(&work, seconds);
            let work_fut = async {
                let mut results: Vec<analysis::RunResult> = match &only {
                    Some(_) => std::fs::read_to_string(out.join("results.json"))
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                for (name, s) in &plan {
                    if only.as_ref().is_some_and(|o| !name.starts_with(o.as_str())) {
                        continue;
                    }
                    eprintln!("== {name}");
                    let mut r = match orchestrate::run_once(s, &exe, name).await {
                        Ok(r) => r,
                        Err(e) => match e.downcast::<orchestrate::Unsupported>() {
                            Ok(u) => {
                                eprintln!("{name} not run: {u}");
                                report::not_run(s, name, &u.0)
                            }
                            Err(e) => return Err(e),
                        },
                    };
                    r.provenance = Some(provenance.clone());
                    println!("{}", serde_json::to_string(&r)?);
                    match results.iter_mut().find(|x| x.name == r.name) {
                        Some(x) => *x = r,
                        None => results.push(r),
                    }
                    report::write_report(&out, &results, &command)?;
                }
                anyhow::Ok(())
            };
            interruptible(work_fut).await
        }
        Cmd::Run {
            areas,
            regions,
            mode,
            resolvers,
            seconds,
            clients,
            probe_rate,
            work,
            out,
            event,
            spoof,
        } => {
            let mode = spec::Mode::parse(&mode).context("unknown mode")?;
            let mut s =
                report::base_spec(&work, "run", areas, regions.unwrap_or(areas.min(3)), mode);
            s.resolvers = resolvers
                .split(',')
                .map(|k| {
                    spec::ResolverKind::parse(k.trim())
                        .with_context(|| format!("unknown resolver {k}"))
                })
                .collect::<anyhow::Result<_>>()?;
            s.seconds = seconds;
            s.clients_per_resolver = clients;
            s.probe_rate = probe_rate;
            if let Some(e) = event {
                s.event = Some(
                    spec::ScenarioEvent::parse(&e, report::OVERLOAD_CONNS)
                        .with_context(|| format!("bad --event {e}"))?,
                );
            }
            if let Some(sp) = spoof {
                let (at, secs) = sp
                    .split_once('+')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .with_context(|| format!("bad --spoof {sp}: AT+SECS"))?;
                s.spoof = Some(report::spoof_at(at, secs));
            }
            let provenance = analysis::Provenance::now();
            interruptible(async {
                let mut r = orchestrate::run_once(&s, &exe, "run").await?;
                r.provenance = Some(provenance);
                println!("{}", serde_json::to_string(&r)?);
                if let Some(out) = out {
                    report::write_report(&out, &[r], "walrus-lab run")?;
                }
                anyhow::Ok(())
            })
            .await
        }
        Cmd::Report { out, command } => {
            let text = std::fs::read_to_string(out.join("results.json"))?;
            let results: Vec<analysis::RunResult> = serde_json::from_str(&text)?;
            let path = report::write_report(&out, &results, &command)?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Reanalyze { work, out, command } => {
            // Runs whose raw records are gone keep their figures from OUT/results.json.
            let mut results: Vec<analysis::RunResult> =
                std::fs::read_to_string(out.join("results.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
            for (name, planned) in report::full_plan(&work, 0) {
                let Ok(s) = load(&planned.dir.join("spec.json")) else {
                    continue;
                };
                let mut r = analysis::analyze(&s, &name);
                match results.iter_mut().find(|x| x.name == r.name) {
                    // Its directory holds a spec but no records of it.
                    Some(x) if x.not_run.is_some() => {}
                    Some(x) => {
                        // The records are the run's: so is its commit.
                        r.provenance = x.provenance.take();
                        *x = r;
                    }
                    None => results.push(r),
                }
            }
            let path = report::write_report(&out, &results, &command)?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::ResolveMatrix {
            tries,
            work,
            walrus_node,
            layouts,
            backends,
            resolvers,
            qmin,
        } => {
            let walrus_node = match walrus_node {
                Some(p) => p,
                None => find_walrus_node(&exe)?,
            };
            let mut opts = resolve::MatrixOptions::full(tries, work, exe.clone(), walrus_node);
            opts.layouts = parse_list(&layouts, resolve::Layout::parse, "layout")?;
            opts.backends = parse_list(&backends, resolve::Backend::parse, "backend")?;
            opts.resolvers = parse_list(&resolvers, spec::ResolverKind::parse, "resolver")?;
            opts.qmins = parse_list(
                &qmin,
                |s| match s {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                },
                "qmin setting",
            )?;
            interruptible(async {
                let cells = resolve::run_matrix(&opts, &mut |c| {
                    if let Ok(line) = serde_json::to_string(c) {
                        println!("{line}");
                    }
                })
                .await?;
                let failures: u32 = cells.iter().map(|c| c.failures).sum();
                let tries: u32 = cells.iter().map(|c| c.tries).sum();
                eprintln!(
                    "{} cells, {tries} tries, {failures} failures (work: {})",
                    cells.len(),
                    opts.work.display()
                );
                if failures > 0 {
                    anyhow::bail!("{failures} of {tries} tries failed");
                }
                anyhow::Ok(())
            })
            .await
        }
        Cmd::ResolveTries { plan } => {
            let text =
                std::fs::read_to_string(&plan).with_context(|| plan.display().to_string())?;
            let plan: resolve::TriesPlan = serde_json::from_str(&text)?;
            let outcome = resolve::run_tries(&plan)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string(&outcome)?);
            Ok(())
        }
        Cmd::ResolveReady { dns } => {
            let targets = dns
                .iter()
                .map(|t| {
                    let (a, n) = t.split_once('=').context("expected ADDR:PORT=NAME")?;
                    anyhow::Ok((a.parse::<SocketAddr>()?, n.to_owned()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            resolve::wait_noerror(&targets, 30)
                .await
                .map_err(anyhow::Error::msg)
        }
        Cmd::Wan {
            loss,
            seconds,
            jitter,
            delay_scale,
            deploy_mb,
            deploy_files,
            deploy_steps,
            event_every,
            timing,
            generation_grace,
            max_generation_lag,
            name,
            work,
            out,
        } => {
            let name = name.unwrap_or_else(|| format!("loss-{loss}"));
            let mut s = wan::WanSpec::new(&work, &name, loss / 100.0, seconds);
            s.jitter_ms = jitter;
            for row in &mut s.one_way_ms {
                for d in row.iter_mut() {
                    *d = (f64::from(*d) * delay_scale).round() as u32;
                }
            }
            s.deploy_mb = deploy_mb;
            s.deploy_files = deploy_files;
            s.deploy_steps = deploy_steps;
            s.event_every = event_every;
            s.generation_grace = generation_grace;
            s.max_generation_lag = max_generation_lag;
            if let Some(t) = timing {
                s.timing = wan::timing_with(&s.timing, &t).map_err(anyhow::Error::msg)?;
            }
            interruptible(async {
                let r = wan::run_wan(&s, &exe, &name).await?;
                println!("{}", serde_json::to_string(&r)?);
                if let Some(out) = out {
                    let path = wan::add_result(&out, r)?;
                    eprintln!("report: {}", path.display());
                }
                anyhow::Ok(())
            })
            .await
        }
        Cmd::WanReport { out, work } => {
            if let Some(work) = work {
                for r in wan::reanalyze(&work)? {
                    eprintln!("recomputed {}", r.name);
                    wan::add_result(&out, r)?;
                }
            }
            let path = wan::write_report(&out)?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::WanRelay { spec, area } => {
            let text =
                std::fs::read_to_string(&spec).with_context(|| spec.display().to_string())?;
            wan::run_relay(serde_json::from_str(&text)?, spec::Area(area)).await
        }
        Cmd::WanWatch { spec } => {
            let text =
                std::fs::read_to_string(&spec).with_context(|| spec.display().to_string())?;
            wan::watch(serde_json::from_str(&text)?).await
        }
        Cmd::Clean { all } => {
            for n in netns::clean_stale(all) {
                println!("removed {n}");
            }
            Ok(())
        }
        Cmd::Relay { spec, region } => {
            relay::run(load(&spec)?, spec::Region(region)).await?;
            Ok(())
        }
        Cmd::Authd { spec, area } => servers::run_area_ns(load(&spec)?, spec::Area(area)).await,
        Cmd::Clients { spec, region } => clients::run(load(&spec)?, spec::Region(region)).await,
        Cmd::Watch { spec } => runtime::watch(load(&spec)?).await,
        Cmd::Hold { addr, conns, secs } => runtime::hold(addr, conns, secs).await,
        Cmd::Scrape { spec, label } => learned::scrape(load(&spec)?, &label).await,
        Cmd::MeasureRtt { spec, area } => {
            learned::measure_rtt(load(&spec)?, spec::Area(area)).await
        }
        Cmd::Observe { spec, secs } => learned::observe(load(&spec)?, secs).await,
        Cmd::Spoof {
            spec,
            secs,
            rate,
            sources,
        } => {
            let sp = learned::Spoof {
                at_secs: 0,
                secs,
                rate,
                sources,
            };
            learned::spoof(load(&spec)?, sp).await
        }
        Cmd::Wait { dns, tcp } => {
            for a in dns {
                clients::wait_ready(a, Some("."), 30)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            for a in tcp {
                clients::wait_ready(a, None, 30)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            Ok(())
        }
    }
}

/// The `walrus-node` binary: $WALRUS_NODE, else the `walrus-node` next to `exe` (Cargo's
/// target directory).
fn find_walrus_node(exe: &std::path::Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WALRUS_NODE") {
        return Ok(p.into());
    }
    Some(exe.with_file_name("walrus-node"))
        .filter(|p| p.is_file())
        .context("no walrus-node next to walrus-lab: build it (cargo build -p walrus-node) or give --walrus-node")
}

/// Parses a comma-separated list with `parse`, naming `what` on a bad item.
fn parse_list<T>(s: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> anyhow::Result<Vec<T>> {
    s.split(',')
        .map(|x| parse(x.trim()).with_context(|| format!("unknown {what} `{x}`")))
        .collect()
}

/// Runs `work` until it ends or Ctrl-C / SIGTERM: dropping it stops every process and
/// deletes every namespace of the run (they are guards inside it).
async fn interruptible(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: lab stopped and cleaned up"),
        _ = term.recv() => anyhow::bail!("terminated: lab stopped and cleaned up"),
    }
}
