//! A network partition on loopback: nftables rules that drop UDP between two sets of ports
//! (the gcs QUIC traffic of two groups of nodes: each node's endpoint sends from its
//! listening port). Needs root. The table is deleted on drop.

use crate::process::need;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The rules of one cut, removed on drop (the partition heals).
pub struct Partition {
    table: String,
}

impl Partition {
    /// Drops UDP on 127.0.0.0/8 from any port of `a` to any of `b` and back.
    pub fn cut(a: &[u16], b: &[u16]) -> Self {
        let nft = need("nft", "nftables");
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "walrus_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let set = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        let (a, b) = (set(a), set(b));
        let script = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n\
               ip daddr 127.0.0.0/8 udp sport {{ {a} }} udp dport {{ {b} }} drop\n\
               ip daddr 127.0.0.0/8 udp sport {{ {b} }} udp dport {{ {a} }} drop\n }}\n}}\n"
        );
        let mut child = Command::new(nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nft");
        child
            .stdin
            .take()
            .expect("nft's stdin is piped")
            .write_all(script.as_bytes())
            .expect("writing the rules to nft");
        let out = child.wait_with_output().expect("waiting for nft");
        assert!(
            out.status.success(),
            "nft refused the partition rules (root needed): {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        Partition { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new(need("nft", "nftables"))
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}
