//! One lab run from start to finish: wire the namespaces, start every server, wait until
//! each answers, run the clients, stop everything (also on error or Ctrl-C: every part is
//! a guard), then compute the run's figures from the records.

use super::analysis::FailureTimes;
use super::analysis::{analyze, RunResult};
use super::netns::{clean_stale, ChildGuard, LabError, Namespaces};
use super::relay::now_ms;
use super::servers;
use super::spec::{Failure, LabSpec, ROOT_ADDR};
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
    let exe_s = exe.display().to_string();
    let spec_s = spec_file.display().to_string();
    let started = Instant::now();

    let _ns = Namespaces::create(spec)?;
    let mut guards: Vec<ChildGuard> = Vec::new();
    guards.push(servers::start_root(spec)?);
    for a in spec.all_areas() {
        guards.push(servers::start_area_ns(spec, exe, &spec_file, a)?);
        for k in 1..=spec.servers_per_cluster {
            guards.push(servers::start_web(spec, a, k)?);
        }
    }
    for r in spec.all_regions() {
        let region = r.0.to_string();
        guards.push(ChildGuard::spawn_in(
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
        let mut w = ChildGuard::spawn_in(&spec.ns_region(r), "readiness", &exe_s, &args, &log)?;
        wait_exit(&mut w, 60, &log, &mut guards).await?;
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
            ChildGuard::spawn_in(
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
    let budget = u64::from(spec.seconds) + 90;
    for (c, log) in &mut clients {
        wait_exit(c, budget, log, &mut guards).await?;
    }
    // Let the relays write their last records.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(clients);
    drop(guards);
    drop(_ns);
    let result = analyze(spec, name);
    tracing::info!(name, secs = started.elapsed().as_secs(), "run done");
    Ok(result)
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
    guards.retain(|g| !g.what.starts_with(&prefix)); // dropped guards SIGKILL their nginx
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
                cmd: child.what.clone(),
                detail: format!("{st}; log {}: {}", log.display(), tail(log)),
            });
        }
        for s in servers.iter_mut() {
            if let Some(st) = s.exited() {
                return Err(LabError::Command {
                    cmd: s.what.clone(),
                    detail: format!("exited early ({st}); see the logs under the run directory"),
                });
            }
        }
        if Instant::now() > deadline {
            return Err(LabError::NotReady {
                what: child.what.clone(),
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
