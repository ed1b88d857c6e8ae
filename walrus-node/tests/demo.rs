//! The operator experience end to end: `walrus-node demo --duration 30` as a real process
//! exits 0 and prints the moves it made; while it runs, its `/status` and `/metrics`
//! answer plain HTTP, and its dashboard, loaded in headless Chromium (Debian `chromium`),
//! shows the areas, their clusters and the move that followed a scripted failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use walrus_testkit::{need, ChildGuard, TempDir};

/// Waits for a line matching `pred`, collecting every line read into `all`.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    all: &mut Vec<String>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                all.push(line.clone());
                if pred(&line) {
                    return line;
                }
            }
            Err(_) => panic!(
                "timed out after {timeout:?} waiting for {what}; output so far:\n{}",
                all.join("\n")
            ),
        }
    }
}

/// What the dashboard must show after area eu's cluster died: every area with its home
/// cluster, area eu assigned away from c-eu (marked), and the move in the event log.
fn dashboard_shows_the_move(dom: &str) -> Result<(), String> {
    for area in ["eu", "us", "asia"] {
        let row = format!("<tr data-area=\"{area}\"><td>{area}</td><td>c-{area}</td>");
        if !dom.contains(&row) {
            return Err(format!("no row for area {area} with its home cluster"));
        }
    }
    let eu = dom
        .split("<tr data-area=\"eu\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .ok_or("no eu row")?;
    if !eu.contains("class=\"away\">c-") {
        return Err(format!("area eu is not shown away from home: {eu}"));
    }
    let moved = dom
        .split("<li>")
        .skip(1)
        .any(|li| li.contains("area eu → c-") && li.contains("(from c-eu)"));
    if !moved {
        return Err("the event log does not show area eu's move".into());
    }
    dashboard_plots_render(dom)
}

/// The two plots: a load line per cluster, and area eu's timeline with its move (a
/// segment on c-eu, then one on another cluster, each with its reason on hover).
fn dashboard_plots_render(dom: &str) -> Result<(), String> {
    let svg = |id: &str| {
        dom.split(&format!("<svg id=\"{id}\""))
            .nth(1)
            .and_then(|r| r.split("</svg>").next())
            .map(str::to_owned)
            .ok_or(format!("no svg #{id}"))
    };
    let loads = svg("loads")?;
    let lines = loads.matches("<polyline").count();
    if lines < 2 || !loads.contains("data-cluster=\"c-us\"") {
        return Err(format!("the load plot has {lines} lines: {loads}"));
    }
    let timeline = svg("timeline")?;
    let eu: Vec<&str> = timeline
        .split("<rect")
        .skip(1)
        .filter(|r| r.contains("data-area=\"eu\""))
        .collect();
    let on_home = eu.iter().any(|r| r.contains("data-cluster=\"c-eu\""));
    let away = eu
        .iter()
        .find(|r| !r.contains("data-cluster=\"c-eu\""))
        .ok_or(format!("no segment of eu away from home: {timeline}"))?;
    if !on_home {
        return Err(format!("no segment of eu on c-eu: {timeline}"));
    }
    if !away.contains("<title>eu on c-") || !away.contains("working server") {
        return Err(format!("eu's move has no reason on hover: {away}"));
    }
    Ok(())
}

/// Loads `url` in headless Chromium with `mode` (what to produce) after its scripts ran
/// for a few seconds of virtual time; returns what it printed.
fn chromium(url: &str, mode: &[&str]) -> String {
    let chromium = need("chromium", "chromium");
    let profile = TempDir::new("chromium");
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Let the page's fetch of /status and its rendering run before the dump.
            "--virtual-time-budget=5000",
        ])
        .args(mode)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("walrus-node", child);
    let mut out = String::new();
    guard
        .child_mut()
        .unwrap()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = guard.child_mut().unwrap().wait();
    out
}

/// The DOM of `url` after its scripts ran.
fn chromium_dom(url: &str) -> String {
    chromium(url, &["--dump-dom"])
}

/// A screenshot of `url` into `png` (kept for people to look at); its size in bytes.
fn chromium_screenshot(url: &str, png: &Path) -> u64 {
    let _ = std::fs::remove_file(png);
    chromium(
        url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1000,1500",
            "--hide-scrollbars",
        ],
    );
    std::fs::metadata(png).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn demo_runs_30_s_prints_moves_and_serves_status_metrics_and_a_live_dashboard() {
    let exe = env!("CARGO_BIN_EXE_walrus-node");
    let mut child = Command::new(exe)
        .args(["demo", "--duration", "30", "--dashboard", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut demo = ChildGuard::new("walrus-node", child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut all = Vec::new();
    let patience = Duration::from_secs(60);
    let line = wait_line(&rx, &mut all, "the dashboard URL", patience, |l| {
        l.starts_with("dashboard: http://")
    });
    let addr: SocketAddr = line
        .trim_start_matches("dashboard: http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();

    // The demo runs both tiers: each area's second web host is a client of the area's
    // Director host.
    assert!(
        all.iter()
            .any(|l| l.contains("3 web hosts as clients") && l.contains("eu-2 → eu-1, then us-1")),
        "{}",
        all.join("\n")
    );

    // The scripted failure of cluster c-eu moves area eu (phase 3). Only a move after the
    // scripted death counts: a move before it would have another cause.
    wait_line(&rx, &mut all, "the death of eu-2", patience, |l| {
        l.contains("EVENT: web server eu-2 dies too")
    });
    wait_line(&rx, &mut all, "area eu's move", patience, |l| {
        l.contains("area eu → c-") && l.contains("(from c-eu), phase 3")
    });

    // Plain HTTP: /status is the JSON document, /metrics Prometheus text.
    let (code, body) = walrus_testkit::http_get(addr, "/status").unwrap();
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let areas = doc["areas"].as_array().unwrap();
    assert_eq!(areas.len(), 3, "{body}");
    let eu = areas.iter().find(|a| a["name"] == "eu").unwrap();
    assert_eq!(eu["home_cluster"], "c-eu");
    assert_ne!(eu["cluster"], "c-eu", "{body}");
    assert!(
        doc["master"].as_str().unwrap().starts_with("ctl-"),
        "{body}"
    );
    let servers = doc["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 6, "{body}");
    // Each client web host with the member it is attached to.
    let clients: Vec<(&str, &str)> = doc["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["node"].as_str().unwrap(),
                c["attached_to"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        clients,
        [("asia-2", "asia-1"), ("eu-2", "eu-1"), ("us-2", "us-1")],
        "{body}"
    );
    let eu1 = servers.iter().find(|s| s["name"] == "eu-1").unwrap();
    assert!(eu1["state"].as_str().unwrap().starts_with("dead"), "{body}");
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("area eu → c-")),
        "{body}"
    );
    let (code, metrics) = walrus_testkit::http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("walrus_rounds_total") >= 3.0, "{metrics}");
    assert!(value("walrus_area_moves_total") >= 1.0, "{metrics}");
    assert!(value("walrus_dns_updates_total") >= 1.0, "{metrics}");
    assert!(value("walrus_servers{state=\"dead\"}") >= 1.0, "{metrics}");

    // `walrus-node status` prints the same as a table.
    let table = Command::new(exe)
        .args(["status", "--addr", &addr.to_string()])
        .output()
        .unwrap();
    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table:?}");
    assert!(table_text.contains("master ctl-"), "{table_text}");
    assert!(
        table_text
            .lines()
            .any(|l| l.starts_with("eu ") && l.contains("c-eu")),
        "{table_text}"
    );
    assert!(table_text.contains("dead (PANIC)"), "{table_text}");

    // The dashboard in a real browser.
    let dom = chromium_dom(&format!("http://{addr}/"));
    if let Err(e) = dashboard_shows_the_move(&dom) {
        panic!("dashboard: {e}\n{dom}");
    }
    assert!(
        dom.contains("<tr data-client=\"eu-2\"><td>eu-2</td><td>eu-1</td></tr>"),
        "the dashboard does not show client eu-2 on eu-1:\n{dom}"
    );
    // A screenshot with both plots, for a person to look at (the DOM check above is the
    // proof); a blank page would be a few kB.
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let bytes = chromium_screenshot(&format!("http://{addr}/"), &png);
    eprintln!("dashboard screenshot: {} ({bytes} bytes)", png.display());
    assert!(
        bytes > 20_000,
        "screenshot {} has {bytes} bytes",
        png.display()
    );

    // The demo ends by itself and says what it did.
    let end = Instant::now() + patience;
    let status = loop {
        if let Some(s) = demo.exited() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "the demo did not stop after --duration 30"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        all.push(l);
    }
    let out = all.join("\n");
    assert!(status.success(), "demo exited with {status}:\n{out}");
    // The web servers serve the replicated content; the scripted content change reaches
    // every one of them.
    assert!(
        out.contains("replication: all 6 web servers serve content generation 1"),
        "{out}"
    );
    assert!(
        out.contains("replication: all 6 web servers serve content generation 2"),
        "{out}"
    );
    let summary = out
        .split("demo over:")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        summary.contains("area eu → c-") && summary.contains("(from c-eu), phase 3"),
        "{out}"
    );
}

/// The dashboard checker catches a dashboard that does not show the move: the page
/// before its script ran (no rows at all), a rendered page whose event log lost the move,
/// and pages whose plots are missing or do not show it.
#[test]
fn the_dashboard_check_catches_a_page_without_the_move() {
    assert!(dashboard_shows_the_move(walrus_node::status::DASHBOARD).is_err());
    let mut rendered = String::new();
    for (a, cluster, class) in [
        ("eu", "c-asia", " class=\"away\""),
        ("us", "c-us", ""),
        ("asia", "c-asia", ""),
    ] {
        rendered += &format!(
            "<tr data-area=\"{a}\"><td>{a}</td><td>c-{a}</td><td{class}>{cluster}</td></tr>"
        );
    }
    let plots = "<svg id=\"loads\"><polyline data-cluster=\"c-eu\"></polyline>\
        <polyline data-cluster=\"c-us\"></polyline></svg>\
        <svg id=\"timeline\"><rect data-area=\"eu\" data-cluster=\"c-eu\"><title>eu on c-eu</title></rect>\
        <rect data-area=\"eu\" data-cluster=\"c-asia\"><title>eu on c-asia from 10:00:00 (round 8): c-eu has no working server</title></rect></svg>";
    let with_move = format!(
        "{rendered}<ol><li>round 8: area eu → c-asia (from c-eu), phase 3, c-eu has no working server</li></ol>{plots}"
    );
    assert_eq!(dashboard_shows_the_move(&with_move), Ok(()));
    // Plots missing, a single load line, or eu's timeline without its move: caught.
    let no_plots = with_move.replace(plots, "");
    assert!(dashboard_shows_the_move(&no_plots).is_err());
    let one_line = with_move.replace("<polyline data-cluster=\"c-us\"></polyline>", "");
    assert!(dashboard_shows_the_move(&one_line).is_err());
    let never_moved = with_move.replace(
        "data-cluster=\"c-asia\"><title>",
        "data-cluster=\"c-eu\"><title>",
    );
    assert!(dashboard_shows_the_move(&never_moved).is_err());
    let without = format!("{rendered}<ol><li>event: web server eu-2 dies</li></ol>");
    assert!(dashboard_shows_the_move(&without).is_err());
    let home = with_move.replace(" class=\"away\">c-asia", ">c-eu");
    assert!(dashboard_shows_the_move(&home).is_err());
}
