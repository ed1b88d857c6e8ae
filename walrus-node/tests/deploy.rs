//! What `deploy/` ships for operators is checked against what the node really exports:
//! the Prometheus alert rules (`promtool check rules` and `promtool test rules`, Debian
//! package `prometheus`) and the Grafana dashboard (its JSON's shape), and every metric
//! either of them names must be a family that `/metrics` declares.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use walrus_node::status::{render_metrics, StatusDoc};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The metric families `/metrics` declares (`# TYPE name kind`), with a summary's series.
fn exported_families() -> BTreeSet<String> {
    let text = render_metrics(&StatusDoc::default());
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            if kind == "summary" {
                names.insert(format!("{name}_sum"));
                names.insert(format!("{name}_count"));
            }
        }
    }
    names
}

/// Every `walrus_…` identifier in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("walrus_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn promtool(args: &[&str]) {
    let dir = deploy().join("prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's `prometheus` package")
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "walrus-rules.yml"]);
    promtool(&["test", "rules", "walrus-rules.test.yml"]);
}

#[test]
fn the_alert_rules_and_the_dashboard_name_only_exported_metrics() {
    let exported = exported_families();
    for file in ["prometheus/walrus-rules.yml", "grafana/walrus.json"] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        let used = metric_names_in(&text);
        assert!(!used.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics that /metrics does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn the_grafana_dashboard_has_the_panels_operators_look_for() {
    let text = std::fs::read_to_string(deploy().join("grafana/walrus.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "walrus");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        assert!(p["type"].as_str().is_some(), "{title}: no type");
        let pos = &p["gridPos"];
        for k in ["x", "y", "w", "h"] {
            assert!(pos[k].as_u64().is_some(), "{title}: gridPos.{k}");
        }
        assert!(
            pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Load per cluster",
        "Area → cluster",
        "Rounds per minute",
        "DNS updates",
        "View changes",
        "Replica lag",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
}
