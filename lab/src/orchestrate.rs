//! One lab run from start to finish: wire the namespaces, start every server, wait until
//! each answers, run the clients, stop everything (also on error or Ctrl-C: every part is
//! a guard), then compute the run's figures from the records.

use super::analysis::FailureTimes;
use super::analysis::{analyze, read_jsonl, EventTimes, RunResult};
use super::learned;
use super::netns::{clean_stale, ChildGuard, LabError, Namespaces};
use super::relay::now_ms;
use super::runtime::{self, Watch};
use super::servers;
use super::spec::{Failure, LabSpec, Mode, Region, ScenarioEvent, ROOT_ADDR, WEB_PORT_BASE};
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs one lab described by `spec`; `exe` is the `walrus-lab` binary (it plays the
/// in-namespace roles: relay, area name server, clients, readiness probe).
pub async fn run_once(spec: &LabSpec, exe: &Path, name: &str) -> anyhow::Result<RunResult> {
    spec.validate().map_err(anyhow::Error::msg)?;
    clean_stale(false);
    std::fs::create_dir_all(&spec.dir)?;
    let spec_file = spec.dir.join("spec.json");
    std::fs::write(&spec_file, serde_json::to_vec_pretty(spec)?)?;
    // Records a run appends to: none from an earlier run in the same directory.
    for f in ["steering.jsonl", "rtt.jsonl", "spoof.json"] {
        let _ = std::fs::remove_file(spec.dir.join(f));
    }
    let exe_s = exe.display().to_string();
    let spec_s = spec_file.display().to_string();
    let started = Instant::now();

    let node_bin = if spec.mode.is_runtime() {
        Some(runtime::node_binary(exe)?)
    } else {
        None
    };
    if let (Some(bin), Mode::Learned) = (&node_bin, spec.mode) {
        if let Err(e) = learned::learned_supported(spec, bin) {
            return Err(anyhow::Error::new(Unsupported(format!(
                "{} does not run learned steering: `walrus-node check-config` refuses `[dns.learned] enabled = true` ({e})",
                bin.display()
            ))));
        }
    }
    let _ns = Namespaces::create(spec)?;
    let mut guards: Vec<ChildGuard> = Vec::new();
    guards.push(servers::start_root(spec)?);
    for a in spec.all_areas() {
        if node_bin.is_none() {
            guards.push(servers::start_area_ns(spec, exe, &spec_file, a)?);
        }
        for k in 1..=spec.servers_per_cluster {
            guards.push(servers::start_web(spec, a, k)?);
        }
    }
    if let Some(bin) = &node_bin {
        let config = runtime::prepare(spec, bin)?;
        for n in runtime::nodes(spec) {
            guards.push(runtime::start_node(spec, bin, &config, &n)?);
        }
        let _ = std::fs::remove_file(spec.dir.join("watch.jsonl"));
        guards.push(super::netns::spawn_in(
            &spec.ns_region(Region(1)),
            "answer watcher",
            &exe_s,
            &["watch", "--spec", &spec_s],
            &spec.dir.join("watch.log"),
        )?);
    }
    for r in spec.all_regions() {
        let region = r.0.to_string();
        guards.push(super::netns::spawn_in(
            &spec.ns_region(r),
            &format!("relay {r}"),
            &exe_s,
            &["relay", "--spec", &spec_s, "--region", &region],
            &spec.dir.join(format!("relay-{r}.log")),
        )?);
    }
    // Every backend through every region's relays: root, each area's name server, each
    // web server. Resolvers start only after, so none of them marks a server as dead
    // because it was still starting.
    for r in spec.all_regions() {
        let mut args: Vec<String> = vec!["wait".into(), "--dns".into(), format!("{ROOT_ADDR}:53")];
        for a in spec.all_areas() {
            args.push("--dns".into());
            args.push(format!("{}:53", a.ns_public()));
            for web in spec.cluster(a) {
                args.push("--tcp".into());
                args.push(format!("{web}:80"));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = spec.dir.join(format!("wait-{r}.log"));
        let mut w = super::netns::spawn_in(&spec.ns_region(r), "readiness", &exe_s, &args, &log)?;
        wait_exit(&mut w, 60, &log, &mut guards).await?;
    }
    if node_bin.is_some() {
        wait_for_master(spec, 90, &mut guards).await?;
    }
    for r in spec.all_regions() {
        for &k in &spec.resolvers {
            guards.push(servers::start_resolver(spec, r, k)?);
        }
    }
    let mut clients = Vec::new();
    for r in spec.all_regions() {
        let region = r.0.to_string();
        clients.push((
            super::netns::spawn_in(
                &spec.ns_region(r),
                &format!("clients {r}"),
                &exe_s,
                &["clients", "--spec", &spec_s, "--region", &region],
                &spec.dir.join(format!("clients-{r}.log")),
            )?,
            spec.dir.join(format!("clients-{r}.log")),
        ));
    }
    if let Some(f) = spec.failure {
        fail_cluster(spec, f, &mut guards).await?;
    }
    clients_start(spec).await?;
    measure_rtt(spec, exe, &mut guards).await?;
    if node_bin.is_some() {
        scrape(spec, exe, "start", &mut guards).await?;
    }
    if spec.mode == Mode::Learned && !learned::outcome(spec).is_some_and(|o| o.exposed) {
        // Accepted in the configuration but not running: its rows would be the paper's
        // rule under learned steering's name.
        return Err(anyhow::Error::new(Unsupported(format!(
            "{} accepts `[dns.learned] enabled = true` but no area Director exposes learned \
             steering (no /status `steering` block, no `walrus_steering_*` in /metrics, at \
             the clients' start): learned steering does not run in this binary",
            node_bin
                .as_ref()
                .map_or_else(String::new, |b| b.display().to_string())
        ))));
    }
    if let Some(sp) = spec.spoof {
        spoof_test(spec, sp, exe, &mut guards).await?;
    }
    let mut helpers: Vec<ChildGuard> = Vec::new();
    let mut healed: Option<(super::spec::Area, u64)> = None;
    if let Some(e) = spec.event {
        play_event(spec, e, exe, &mut guards, &mut helpers).await?;
        if let (ScenarioEvent::Partition { area, .. }, Some(secs)) = (e, e.secs()) {
            healed = Some((area, secs.into()));
        }
    }
    if let Some((area, secs)) = healed {
        // The partition heals while the clients still run.
        tokio::time::sleep(Duration::from_secs(secs)).await;
        runtime::partition(spec, area, false)?;
        record_event_end(spec)?;
    }
    let budget = u64::from(spec.seconds) + 90;
    for (c, log) in &mut clients {
        wait_exit(c, budget, log, &mut guards).await?;
    }
    drop(helpers);
    if node_bin.is_some() {
        scrape(spec, exe, "end", &mut guards).await?;
    }
    // The watcher stops first: what it would see next is the shutdown.
    guards.retain(|g| g.what() != "answer watcher");
    // Let the relays write their last records.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(clients);
    drop(guards);
    drop(_ns);
    if let Some(ScenarioEvent::ClusterDies { area, .. }) = spec.event {
        runtime_failure_times(spec, area)?;
    }
    let result = analyze(spec, name);
    tracing::info!(name, secs = started.elapsed().as_secs(), "run done");
    Ok(result)
}

/// Waits until the runtime is settled: one master for at least 2 s (by the watcher's
/// clock) and every area answering with its whole home cluster. The first rounds after a
/// start may answer otherwise (servers that have not reported yet count as dead): the
/// resolvers start only after that.
async fn wait_for_master(
    spec: &LabSpec,
    secs: u64,
    guards: &mut [ChildGuard],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let w: Vec<Watch> = read_jsonl(&spec.dir.join("watch.jsonl"));
        let mut last: std::collections::BTreeMap<u8, Vec<std::net::Ipv4Addr>> = Default::default();
        let mut master_since = 0;
        let mut masters = Vec::new();
        for x in &w {
            match x {
                Watch::Answer { area, addrs, .. } => {
                    last.insert(*area, addrs.clone());
                }
                Watch::Master { t, .. } => {
                    let now = runtime::masters_at(&w, *t);
                    if now != masters {
                        masters = now;
                        master_since = *t;
                    }
                }
            }
        }
        let home = spec.all_areas().all(|a| {
            let mut want = spec.cluster(a);
            want.sort();
            last.get(&a.0) == Some(&want)
        });
        if masters.len() == 1 && home && now_ms() >= master_since + 2000 {
            tracing::info!(master = %masters[0], "runtime up");
            return Ok(());
        }
        for g in guards.iter_mut() {
            if let Some(st) = g.exited() {
                anyhow::bail!(
                    "{} exited early ({st}); see {}/rt/",
                    g.what(),
                    spec.dir.display()
                );
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "runtime not settled within {secs} s (masters {masters:?}, home answers: {home}); \
             see {}/watch.jsonl",
            spec.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A run the binary cannot make (e.g. learned steering in a `walrus-node` without it): the
/// full lab records it as not run, with this reason.
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

/// The RTT every area can measure to every region's resolvers (`measure-rtt` role in each
/// area, in parallel).
async fn measure_rtt(spec: &LabSpec, exe: &Path, guards: &mut [ChildGuard]) -> anyhow::Result<()> {
    if spec.resolvers.is_empty() {
        return Ok(());
    }
    let _ = std::fs::remove_file(spec.dir.join("rtt.jsonl"));
    let s = spec.dir.join("spec.json").display().to_string();
    let mut running = Vec::new();
    for a in spec.all_areas() {
        let log = spec.dir.join(format!("rtt-{a}.log"));
        let area = a.0.to_string();
        running.push((
            super::netns::spawn_in(
                &spec.ns_area(a),
                "measure-rtt",
                &exe.display().to_string(),
                &["measure-rtt", "--spec", &s, "--area", &area],
                &log,
            )?,
            log,
        ));
    }
    for (c, log) in &mut running {
        wait_exit(c, 60, log, guards).await?;
    }
    Ok(())
}

/// Every area Director's steering counters, now (`scrape` role in region 1).
async fn scrape(
    spec: &LabSpec,
    exe: &Path,
    label: &str,
    guards: &mut [ChildGuard],
) -> anyhow::Result<()> {
    let log = spec.dir.join(format!("scrape-{label}.log"));
    let s = spec.dir.join("spec.json").display().to_string();
    let mut c = super::netns::spawn_in(
        &spec.ns_region(Region(1)),
        "scrape",
        &exe.display().to_string(),
        &["scrape", "--spec", &s, "--label", label],
        &log,
    )?;
    wait_exit(&mut c, 30, &log, guards).await?;
    Ok(())
}

/// The spoofing test (see [`learned`]): the observer in region 1 from the clients' start,
/// the forger in the last region from `at_secs` for `secs`, scrapes at both ends.
async fn spoof_test(
    spec: &LabSpec,
    sp: learned::Spoof,
    exe: &Path,
    guards: &mut Vec<ChildGuard>,
) -> anyhow::Result<()> {
    let s = spec.dir.join("spec.json").display().to_string();
    let exe_s = exe.display().to_string();
    let victim = spec.ns_region(learned::Spoof::VICTIM);
    super::netns::ip(
        &victim,
        &[
            "addr",
            "add",
            &format!("{}/32", learned::Spoof::observer()),
            "dev",
            "lo",
        ],
    )?;
    // Past the clients' end: the guard stops it with the others.
    let secs = (spec.seconds + 120).to_string();
    guards.push(super::netns::spawn_in(
        &victim,
        "observer",
        &exe_s,
        &["observe", "--spec", &s, "--secs", &secs],
        &spec.dir.join("observe.log"),
    )?);
    let start = clients_start(spec).await?;
    let due = start + u64::from(sp.at_secs) * 1000;
    tokio::time::sleep(Duration::from_millis(due.saturating_sub(now_ms()))).await;
    let forger = spec.ns_region(learned::Spoof::forger(spec));
    super::netns::ip_batch(&forger, &learned::forged_batch(&sp))?;
    scrape(spec, exe, "spoof-start", guards).await?;
    let log = spec.dir.join("spoof.log");
    let args = [
        "spoof".to_owned(),
        "--spec".into(),
        s.clone(),
        "--secs".into(),
        sp.secs.to_string(),
        "--rate".into(),
        sp.rate.to_string(),
        "--sources".into(),
        sp.sources.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut f = super::netns::spawn_in(&forger, "forger", &exe_s, &args, &log)?;
    wait_exit(&mut f, u64::from(sp.secs) + 30, &log, guards).await?;
    scrape(spec, exe, "spoof-end", guards).await?;
    Ok(())
}

/// Unix ms of the clients' start (region 1), waiting for it.
async fn clients_start(spec: &LabSpec) -> anyhow::Result<u64> {
    let start_file = spec.dir.join("start-r1.txt");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(t) = std::fs::read_to_string(&start_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(t);
        }
        anyhow::ensure!(Instant::now() < deadline, "clients never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays a runtime scenario's event when it is due (see [`ScenarioEvent`]); writes its times to
/// `event.json`. An event with a duration returns at its start: overload holders are
/// pushed to `helpers` (they end by themselves), a partition is healed by the caller.
async fn play_event(
    spec: &LabSpec,
    e: ScenarioEvent,
    exe: &Path,
    guards: &mut Vec<ChildGuard>,
    helpers: &mut Vec<ChildGuard>,
) -> anyhow::Result<()> {
    let start = clients_start(spec).await?;
    let due = start + u64::from(e.at_secs()) * 1000;
    tokio::time::sleep(Duration::from_millis(due.saturating_sub(now_ms()))).await;
    let mut victim = None;
    match e {
        ScenarioEvent::ClusterDies { area, .. } => {
            let prefix = format!("nginx {area}/");
            guards.retain(|g| !g.what().starts_with(&prefix));
        }
        ScenarioEvent::Overload {
            area, secs, conns, ..
        } => {
            for k in 1..=spec.servers_per_cluster {
                let addr = format!("{}:{}", area.backbone(), WEB_PORT_BASE + u16::from(k));
                let (c, s) = (conns.to_string(), secs.to_string());
                helpers.push(super::netns::spawn_in(
                    &spec.ns_area(area),
                    &format!("slow clients {area}/{k}"),
                    &exe.display().to_string(),
                    &["hold", "--addr", &addr, "--conns", &c, "--secs", &s],
                    &spec.dir.join(format!("hold-{area}-{k}.log")),
                )?);
            }
        }
        ScenarioEvent::MasterDies { .. } => {
            let w: Vec<Watch> = read_jsonl(&spec.dir.join("watch.jsonl"));
            let masters = runtime::masters_at(&w, u64::MAX);
            anyhow::ensure!(masters.len() == 1, "no single master to kill: {masters:?}");
            let name = masters[0].clone();
            let what = runtime::what_of(&name);
            let before = guards.len();
            guards.retain(|g| g.what() != what); // the dropped guard SIGKILLs it
            anyhow::ensure!(guards.len() + 1 == before, "no process for {what}");
            victim = Some(name);
        }
        ScenarioEvent::Partition { area, .. } => runtime::partition(spec, area, true)?,
    }
    let times = EventTimes {
        start: now_ms(),
        end: e.secs().map(|s| now_ms() + u64::from(s) * 1000),
        victim,
    };
    std::fs::write(spec.dir.join("event.json"), serde_json::to_vec(&times)?)?;
    Ok(())
}

/// Sets the event's end to now (a partition healed).
fn record_event_end(spec: &LabSpec) -> anyhow::Result<()> {
    let path = spec.dir.join("event.json");
    let mut t: EventTimes = serde_json::from_slice(&std::fs::read(&path)?)?;
    t.end = Some(now_ms());
    std::fs::write(path, serde_json::to_vec(&t)?)?;
    Ok(())
}

/// For a runtime "cluster dies": `failure.json` with the kill time and the first time the
/// watcher saw the area's answer without the dead cluster (the real Controller's move).
fn runtime_failure_times(spec: &LabSpec, area: super::spec::Area) -> anyhow::Result<()> {
    let t: EventTimes = serde_json::from_slice(&std::fs::read(spec.dir.join("event.json"))?)?;
    let w: Vec<Watch> = read_jsonl(&spec.dir.join("watch.jsonl"));
    let dead = spec.cluster(area);
    let updated = w.iter().find_map(|x| match x {
        Watch::Answer {
            t: wt,
            area: a,
            addrs,
        } if *a == area.0 && *wt >= t.start && !addrs.iter().any(|x| dead.contains(x)) => Some(*wt),
        _ => None,
    });
    std::fs::write(
        spec.dir.join("failure.json"),
        serde_json::to_vec(&FailureTimes {
            killed: t.start,
            updated,
        })?,
    )?;
    Ok(())
}

/// When the failure is due, kills the area's web servers and (if `redirect`) moves the
/// area's answer; writes the times to `failure.json`.
async fn fail_cluster(
    spec: &LabSpec,
    f: Failure,
    guards: &mut Vec<ChildGuard>,
) -> anyhow::Result<()> {
    let start_file = spec.dir.join("start-r1.txt");
    let deadline = Instant::now() + Duration::from_secs(120);
    let start: u64 = loop {
        if let Some(t) = std::fs::read_to_string(&start_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break t;
        }
        anyhow::ensure!(Instant::now() < deadline, "clients never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let due = start + u64::from(f.at_secs) * 1000;
    tokio::time::sleep(Duration::from_millis(due.saturating_sub(now_ms()))).await;
    let prefix = format!("nginx {}/", f.area);
    guards.retain(|g| !g.what().starts_with(&prefix)); // dropped guards SIGKILL their nginx
    let killed = now_ms();
    let mut updated = None;
    if f.redirect {
        tokio::time::sleep(Duration::from_millis(f.detect_ms)).await;
        let dir = spec.dir.join(f.area.to_string());
        let tmp = dir.join("answer.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&spec.cluster(f.to))?)?;
        std::fs::rename(&tmp, dir.join("answer.json"))?;
        updated = Some(now_ms());
    }
    std::fs::write(
        spec.dir.join("failure.json"),
        serde_json::to_vec(&FailureTimes { killed, updated })?,
    )?;
    Ok(())
}

/// Waits for `child` to exit successfully, checking that no server died meanwhile.
async fn wait_exit(
    child: &mut ChildGuard,
    secs: u64,
    log: &Path,
    servers: &mut [ChildGuard],
) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.exited() {
            if st.success() {
                return Ok(());
            }
            return Err(LabError::Command {
                cmd: child.what().to_owned(),
                detail: format!("{st}; log {}: {}", log.display(), tail(log)),
            });
        }
        for s in servers.iter_mut() {
            if let Some(st) = s.exited() {
                return Err(LabError::Command {
                    cmd: s.what().to_owned(),
                    detail: format!("exited early ({st}); see the logs under the run directory"),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(LabError::NotReady {
                what: child.what().to_owned(),
                secs,
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
