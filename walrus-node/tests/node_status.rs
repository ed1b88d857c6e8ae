//! A node's own status server: `walrus-node run` with `status_addr` serves `/status`,
//! `/metrics` and the dashboard over plain HTTP, and stops with the node on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_serves_status_metrics_and_dashboard_on_its_status_addr() {
    let exe = env!("CARGO_BIN_EXE_walrus-node");
    let dir = TempDir::new("node-status");
    let web = TinyHttp::start().await;
    let dns = walrus_node::cluster::free_dns_port().unwrap();
    let gcs = walrus_node::cluster::free_udp_port().unwrap();
    let status: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let d = dir.path().display();
    let toml = format!(
        "site = \"example.com\"\n\
         [timing]\nround_period = \"500ms\"\nreport_timeout = \"250ms\"\nreport_interval = \"200ms\"\n\
         [dns]\nttl = \"5s\"\nstate_dir = \"{d}/dns\"\n\
         [reporter]\nbypass_file = \"{d}/bypass\"\n\
         [controller]\nuse_cpu = false\n\
         [tls]\nca = \"{d}/certs/ca.pem\"\ndir = \"{d}/certs\"\n\
         [areas.eu]\nzone = \"area-eu.example.com\"\nname_server = \"127.0.0.1:{dns}\"\nhome_cluster = \"c1\"\n\
         [clusters.c1.servers.s1]\naddresses = [\"192.0.2.1\"]\nstatus = \"probe\"\nstatus_url = \"{}\"\nmax_workers = 10\n\
         [nodes.n1]\naddress = \"127.0.0.1:{gcs}\"\nroles = [\"controller\", \"reporter\", \"director\"]\n\
         server = \"s1\"\narea = \"eu\"\nstatus_addr = \"{status}\"\n",
        web.url()
    );
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, toml).unwrap();
    let certs = dir.path().join("certs");
    for args in [
        vec!["certs", "init", "--dir", certs.to_str().unwrap()],
        vec!["certs", "issue", "--dir", certs.to_str().unwrap(), "n1"],
    ] {
        assert!(Command::new(exe).args(&args).status().unwrap().success());
    }
    let child = Command::new(exe)
        .args(["run", "--config", conf.to_str().unwrap(), "--node", "n1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Guard(child);

    let doc: serde_json::Value = poll_until("/status shows area eu home", PATIENCE, || {
        let (code, body) = http_get(status, "/status")?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && doc["areas"][0]["cluster"] == "c1" && doc["round"].as_u64()? >= 2)
            .then_some(doc)
    })
    .await;
    assert_eq!(doc["node"], "n1");
    assert_eq!(doc["master"], "n1");
    assert_eq!(doc["is_master"], true);
    assert_eq!(doc["areas"][0]["answer"][0], "192.0.2.1");
    assert_eq!(doc["servers"][0]["state"], "working");

    let (code, metrics) = http_get(status, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE walrus_rounds_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("walrus_servers{state=\"working\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("walrus_is_master 1"), "{metrics}");
    let delivered: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("walrus_gcs_messages_delivered_total ")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(delivered > 0, "{metrics}");
    let (code, page) = http_get(status, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>Walrus dashboard</title>"));

    // SIGTERM stops the node and its status server.
    let pid = node.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = poll_until("the node exits", PATIENCE, || node.0.try_wait().unwrap()).await;
    assert!(exit.success(), "{exit}");
    assert!(http_get(status, "/status").is_none(), "still serving");
}
