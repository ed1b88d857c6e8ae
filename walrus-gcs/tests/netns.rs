//! Runs `tests/partition.sh` (beside this file): GCS nodes as separate processes in their own network
//! namespaces, partitioned with nftables and healed (needs root, iproute2, nftables).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn namespaces_partition_and_heal() {
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    assert!(
        examples.join("gcs-node").exists() && examples.join("certs").exists(),
        "build the examples first: cargo build -p walrus-gcs --examples (cargo test does)"
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/partition.sh");
    for tool in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {}", tool.0))
            .status()
            .unwrap()
            .success();
        assert!(found, "`{}` is missing: apt-get install {}", tool.0, tool.1);
    }
    let out = Command::new("bash")
        .arg(&script)
        .arg(&examples)
        .arg("5")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "partition.sh failed");
    let line = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["nodes"], 5);
}
