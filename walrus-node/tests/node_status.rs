//! A node's own status server: `walrus-node run` with `status_addr` serves `/status`,
//! `/metrics` and the dashboard over plain HTTP, and stops with the node on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use walrus_testkit::prelude::*;

/// `GET path`, or None if the node does not answer.
fn get_plain(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get(addr, path).ok()
}
use walrus_testkit::wait::poll_until_async as poll_until;

/// A one-node deployment (Controller, Reporter of a tiny web server, Director of area eu)
/// with `status_addr` and `extra` TOML appended; its certificates issued. Returns the
/// running node, the status address and the temporary directory.
async fn one_node(name: &str, extra: &str) -> (ChildGuard, SocketAddr, TempDir, TinyHttp) {
    let exe = env!("CARGO_BIN_EXE_walrus-node");
    let dir = TempDir::new(name);
    let web = TinyHttp::start().await;
    let dns = walrus_node::cluster::free_dns_port().unwrap();
    let gcs = walrus_node::cluster::free_udp_port().unwrap();
    let status = SocketAddr::from((
        [127, 0, 0, 1],
        walrus_testkit::free_tcp_port(std::net::Ipv4Addr::LOCALHOST),
    ));
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
         server = \"s1\"\narea = \"eu\"\nstatus_addr = \"{status}\"\n{extra}",
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
    (ChildGuard::new("walrus-node", child), status, dir, web)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_serves_status_metrics_and_dashboard_on_its_status_addr() {
    let (mut node, status, _dir, _web) = one_node("node-status", "").await;
    let doc: serde_json::Value = poll_until("/status shows area eu home", PATIENCE, || {
        let (code, body) = get_plain(status, "/status")?;
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

    let (code, metrics) = get_plain(status, "/metrics").unwrap();
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
    let (code, page) = get_plain(status, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>Walrus dashboard</title>"));

    // SIGTERM stops the node and its status server.
    let pid = node.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = poll_until("the node exits", PATIENCE, || node.exited()).await;
    assert!(exit.success(), "{exit}");
    assert!(get_plain(status, "/status").is_none(), "still serving");
}

/// `[http] tls = "cluster"` and a token: HTTPS with the node's own certificate, `/status`
/// only with the token (401 without), `/metrics` open, plain HTTP refused;
/// `walrus-node status` reads it with `--ca`, `--server-name` and `--token-file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_side_serves_https_and_asks_for_its_token() {
    use walrus_actors::reporter::http::{Page, TlsOptions};
    let exe = env!("CARGO_BIN_EXE_walrus-node");
    let token = "f00dfeedf00dfeedf00dfeed";
    let dir = TempDir::new("https-token-files");
    let token_file = dir.path().join("http-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let extra = format!(
        "[http]\ntls = \"cluster\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let (_node, status, ndir, _web) = one_node("node-https", &extra).await;
    let ca = ndir.path().join("certs/ca.pem");
    let tls = TlsOptions {
        ca_file: Some(ca.clone()),
        server_name: Some("n1".into()),
        client_cert: None,
    };
    let get = |path: &str, auth: bool| {
        let page = Page::new(
            &format!("https://{status}{path}"),
            Duration::from_secs(5),
            &tls,
        )
        .unwrap();
        let page = if auth {
            page.with_header("Authorization", &format!("Bearer {token}"))
                .unwrap()
        } else {
            page
        };
        async move { page.get().await.ok().map(|a| (a.status, a.body)) }
    };
    let doc: serde_json::Value = poll_until("/status over HTTPS with the token", PATIENCE, || {
        block_here(get("/status", true)).and_then(|(code, body)| {
            let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && doc["round"].as_u64()? >= 1).then_some(doc)
        })
    })
    .await;
    assert_eq!(doc["node"], "n1");
    assert_eq!(get("/status", false).await.map(|a| a.0), Some(401));
    assert_eq!(get("/history", false).await.map(|a| a.0), Some(401));
    assert_eq!(get("/history", true).await.map(|a| a.0), Some(200));
    let (code, metrics) = get("/metrics", false).await.unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("walrus_is_master 1"), "{metrics}");
    assert_eq!(get("/", false).await.map(|a| a.0), Some(200));
    // Plain HTTP to the HTTPS side gets nothing.
    assert!(get_plain(status, "/status").is_none_or(|(code, _)| code != 200));

    // The CLI: with everything it reads the table; without the token it says so.
    let cli = |with_token: bool| {
        let mut c = Command::new(exe);
        c.args(["status", "--addr", &status.to_string(), "--ca"])
            .arg(&ca)
            .args(["--server-name", "n1"]);
        if with_token {
            c.arg("--token-file").arg(&token_file);
        }
        c.output().unwrap()
    };
    let ok = cli(true);
    let table = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && table.contains("master n1"), "{ok:?}");
    let refused = cli(false);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
}

/// Runs a future to completion on the current (multi-thread) runtime from sync code.
fn block_here<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Drain from an admin certificate, end to end: `walrus-node certs issue --admin alice`,
/// `walrus-node drain` over HTTPS with it → the server is out (BYPASS with who and why) and
/// the override shows in /status; a node's certificate, and an admin's not in `[http]
/// admins`, are refused (403); `undrain` puts the server back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drains_and_undrains_a_node_certificate_cannot() {
    let exe = env!("CARGO_BIN_EXE_walrus-node");
    let extra = "[http]\ntls = \"cluster\"\nadmins = [\"alice\"]\n";
    let (_node, status, ndir, _web) = one_node("node-admin", extra).await;
    let certs = ndir.path().join("certs");
    for admin in ["alice", "eve"] {
        let out = Command::new(exe)
            .args(["certs", "issue", "--admin", "--dir"])
            .arg(&certs)
            .arg(admin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // A node's certificate under an admin's file name: refused all the same.
    std::fs::copy(certs.join("n1.pem"), certs.join("admin.mallory.pem")).unwrap();
    std::fs::copy(certs.join("n1.key"), certs.join("admin.mallory.key")).unwrap();
    let tls = walrus_actors::reporter::http::TlsOptions {
        ca_file: Some(certs.join("ca.pem")),
        server_name: Some("n1".into()),
        client_cert: None,
    };
    let doc_now = || {
        let page = walrus_actors::reporter::http::Page::new(
            &format!("https://{status}/status"),
            Duration::from_secs(5),
            &tls,
        )
        .unwrap();
        block_here(page.get())
            .ok()
            .and_then(|a| serde_json::from_str::<serde_json::Value>(&a.body).ok())
    };
    poll_until("the node runs rounds", PATIENCE, || {
        doc_now().filter(|d| d["round"].as_u64().is_some_and(|r| r >= 1))
    })
    .await;
    let admin_cmd = |admin: &str, args: &[&str]| {
        Command::new(exe)
            .args(args)
            .args([
                "--addr",
                &status.to_string(),
                "--server-name",
                "n1",
                "--certs",
            ])
            .arg(&certs)
            .args(["--admin", admin])
            .output()
            .unwrap()
    };
    for who in ["mallory", "eve"] {
        let refused = admin_cmd(who, &["drain", "--server", "s1", "--for", "10m"]);
        assert!(!refused.status.success(), "{who}: {refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("403"),
            "{who}: {refused:?}"
        );
    }
    let ok = admin_cmd(
        "alice",
        &[
            "drain",
            "--server",
            "s1",
            "--for",
            "10m",
            "--reason",
            "kernel upgrade",
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    let doc = poll_until("s1 drained", PATIENCE, || {
        doc_now().filter(|d| {
            d["servers"][0]["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("dead (BYPASS)"))
        })
    })
    .await;
    let overrides = doc["overrides"].to_string();
    assert!(
        overrides.contains("server s1: drained by alice") && overrides.contains("kernel upgrade"),
        "{overrides}"
    );
    let bad = admin_cmd("alice", &["drain", "--server", "nope", "--for", "10m"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("400"),
        "{bad:?}"
    );
    let ok = admin_cmd("alice", &["undrain", "--server", "s1"]);
    assert!(ok.status.success(), "{ok:?}");
    poll_until("s1 back", PATIENCE, || {
        doc_now().filter(|d| {
            d["servers"][0]["state"] == "working"
                && d["overrides"].as_array().is_some_and(Vec::is_empty)
        })
    })
    .await;
}

/// Learned steering's visibility: a node with `[dns.learned]` whose name server `dig`
/// queries (dig retries a truncated answer over TCP, as a resolver does): `/status` gets
/// its `steering` object, `/metrics` the `walrus_steering_*` series, and `walrus-node
/// status --resolver` prints the learned entry of 127.0.0.0/24 and why it is answered so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_steering_shows_in_status_metrics_and_status_resolver() {
    let exe = env!("CARGO_BIN_EXE_walrus-node");
    let extra = "[dns.learned]\nenabled = true\nprobe_interval = \"100ms\"\n";
    let (_node, status, dir, _web) = one_node("node-learned", extra).await;
    let toml = std::fs::read_to_string(dir.path().join("walrus.toml")).unwrap();
    let dns: SocketAddr = toml
        .lines()
        .find_map(|l| l.strip_prefix("name_server = "))
        .map(|v| v.trim_matches('"').parse().unwrap())
        .unwrap();
    poll_until("/status has a steering object", PATIENCE, || {
        let (_, body) = get_plain(status, "/status")?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        doc["steering"].is_object().then_some(())
    })
    .await;
    let doc = poll_until("three samples taken", PATIENCE, || {
        walrus_testkit::dns::dig_with(dns, "www.example.com", "A", &[]);
        std::thread::sleep(Duration::from_millis(120));
        let (_, body) = get_plain(status, "/status")?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        (doc["steering"]["probes_sent"].as_u64()? >= 3).then_some(doc)
    })
    .await;
    assert_eq!(doc["steering"]["table_prefixes"], 1, "{doc}");
    let (_, metrics) = get_plain(status, "/metrics").unwrap();
    for name in [
        "walrus_steering_table_prefixes 1",
        "walrus_steering_answers_total{by=\"learned\"}",
        "walrus_steering_answers_total{by=\"paper\"}",
        "walrus_steering_probes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let out = Command::new(exe)
        .args(["status", "--addr", &status.to_string()])
        .args(["--resolver", "127.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("area eu answers: www -> "), "{text}");
    assert!(text.contains("learned entry 127.0.0.0/24:"), "{text}");
    assert!(text.contains("eu           median TC round trip"), "{text}");
    eprintln!("{text}");
}
