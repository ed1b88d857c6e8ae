//! Three GCS nodes as separate OS processes (the `gcs-node` example) on loopback: they
//! form one view, agree on the order of Agreed multicasts, and when one is killed with
//! SIGKILL the other two install a new view.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use walrus_gcs::transport::certs;
use walrus_testkit::{free_udp_port, ChildGuard, TempDir};

const DEADLINE: Duration = Duration::from_secs(40);

/// The `gcs-node` example, built by `cargo test` next to this test's binary.
fn gcs_node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("gcs-node");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p walrus-gcs --examples` (cargo test builds it)",
        bin.display()
    );
    bin
}

struct Node {
    name: String,
    child: ChildGuard,
    lines: mpsc::Receiver<Value>,
}

fn spawn_nodes(names: &[&str], dir: &std::path::Path, extra: &[&str]) -> Vec<Node> {
    certs::write_new_ca(dir).unwrap();
    let ports: Vec<u16> = names.iter().map(|_| free_udp_port()).collect();
    let bin = gcs_node_binary();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            certs::write_node_cert(dir, name).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg("--name")
                .arg(name)
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", ports[i]))
                .arg("--certs")
                .arg(dir)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for (j, peer) in names.iter().enumerate() {
                if j != i {
                    cmd.arg("--peer")
                        .arg(format!("{peer}=127.0.0.1:{}", ports[j]));
                }
            }
            let mut child = cmd.spawn().unwrap();
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                }
            });
            Node {
                name: name.to_string(),
                child: ChildGuard::new(name.to_string(), child),
                lines: rx,
            }
        })
        .collect()
}

/// Waits for the first line from `node` that `pred` accepts.
fn wait_line(node: &Node, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
    let end = Instant::now() + DEADLINE;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match node.lines.recv_timeout(left) {
            Ok(v) if pred(&v) => return v,
            Ok(_) => {}
            Err(_) => panic!("{}: timed out waiting for {what}", node.name),
        }
    }
}

fn members_of(v: &Value) -> Vec<String> {
    v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn three_processes_agree_and_a_killed_one_leaves_the_view() {
    let dir = TempDir::new("gcs-proc");
    let names = ["n0", "n1", "n2"];
    const PER_NODE: usize = 50;
    let mut nodes = spawn_nodes(&names, dir.path(), &["--send", &PER_NODE.to_string()]);
    let mut orders = Vec::new();
    for node in &nodes {
        let mut got = Vec::new();
        while got.len() < PER_NODE * names.len() {
            let v = wait_line(node, "agreed messages", |v| v["event"] == "msg");
            got.push(v["payload"].as_str().unwrap().to_owned());
        }
        orders.push(got);
    }
    for (i, o) in orders.iter().enumerate().skip(1) {
        assert_eq!(o, &orders[0], "{} delivered a different order", names[i]);
    }

    let victim = nodes.pop().unwrap();
    let killed_at = Instant::now();
    let mut victim = victim;
    victim.child.kill(); // SIGKILL, reaped
    for node in &nodes {
        wait_line(node, "a view without n2", |v| {
            v["event"] == "view" && members_of(v) == ["n0", "n1"]
        });
    }
    let took = killed_at.elapsed();
    eprintln!("view without the killed node after {took:?}");
    // The LAN bound: failure timeout (400 ms) + a flush round (at most the flush timeout,
    // 500 ms) + proposal settle; doubled and more for a loaded 2-core machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
