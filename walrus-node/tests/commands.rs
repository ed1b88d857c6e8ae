//! The operator commands of the `walrus-node` binary, run as a real process: `certs`,
//! `bypass`, `dns bind-config` (its output loaded by BIND's own checkers), `check-config`,
//! and `run` with SIGHUP (reload, invalid file refused) and SIGTERM (clean stop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use walrus_actors::director::bind_config::split_rendered;
use walrus_actors::reporter::bypass::read_bypass;
use walrus_gcs::transport::NodeIdentity;
use walrus_testkit::{need, ChildGuard, TempDir};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_walrus-node"))
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const EXAMPLE: &str = include_str!("../../config/walrus.toml");

#[test]
fn certs_init_then_issue_gives_loadable_identities() {
    let dir = TempDir::new("certs");
    let certs = dir.path().join("certs");
    // Issuing before a CA exists fails with the file named.
    let out = bin()
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .arg("eu-a")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca.key"));

    ok(bin()
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap());
    let out = ok(bin()
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .args(["eu-a", "us-a"])
        .output()
        .unwrap());
    assert!(
        out.contains("eu-a.pem") && out.contains("us-a.key"),
        "{out}"
    );
    NodeIdentity::load(&certs, "eu-a").unwrap();
    NodeIdentity::load(&certs, "us-a").unwrap();
    // A second init refuses to overwrite the CA.
    let out = bin()
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A name that cannot be a SAN is refused.
    let out = bin()
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .arg("bad name")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A client node's certificate is client.NAME; the prefix is the flag's, not the name's.
    let out = ok(bin()
        .args(["certs", "issue", "--client", "--dir"])
        .arg(&certs)
        .arg("web-1")
        .output()
        .unwrap());
    assert!(out.contains("client.web-1.pem"), "{out}");
    NodeIdentity::load(&certs, "client.web-1").unwrap();
    let out = bin()
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .arg("client.web-2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--client adds `client.`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bypass_on_for_a_while_then_off() {
    let dir = TempDir::new("bypass");
    let file = dir.path().join("bypass");
    let out = ok(bin()
        .args([
            "bypass",
            "on",
            "--for",
            "30m",
            "--reason",
            "kernel upgrade",
            "--file",
        ])
        .arg(&file)
        .output()
        .unwrap());
    assert!(out.contains("bypass on for 30m"), "{out}");
    let b = read_bypass(&file).unwrap().unwrap();
    assert_eq!(b.reason, "kernel upgrade");
    let left = b.until.unwrap().duration_since(SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(29 * 60) && left <= Duration::from_secs(30 * 60));
    assert!(b.is_active(SystemTime::now()));

    ok(bin()
        .args(["bypass", "off", "--file"])
        .arg(&file)
        .output()
        .unwrap());
    assert!(read_bypass(&file).unwrap().is_none());
    let out = ok(bin()
        .args(["bypass", "off", "--file"])
        .arg(&file)
        .output()
        .unwrap());
    assert!(out.contains("was not on"), "{out}");

    // Without --file, the configuration's [reporter] bypass_file is used.
    let conf = dir.path().join("walrus.toml");
    let other = dir.path().join("from-config");
    std::fs::write(
        &conf,
        EXAMPLE.replace(
            "bypass_file = \"/var/lib/walrus/bypass\"",
            &format!("bypass_file = \"{}\"", other.display()),
        ),
    )
    .unwrap();
    ok(bin()
        .args(["bypass", "on", "--config"])
        .arg(&conf)
        .output()
        .unwrap());
    let b = read_bypass(&other).unwrap().unwrap();
    assert_eq!(b.until, None, "no --for: until cleared");
}

#[test]
fn dns_bind_config_loads_in_bind() {
    let checkconf = need("named-checkconf", "bind9-utils");
    let checkzone = need("named-checkzone", "bind9-utils");
    let dir = TempDir::new("bindconf");
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, EXAMPLE).unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    let out = ok(bin()
        .args(["dns", "bind-config", "--area", "eu", "--config"])
        .arg(&conf)
        .arg("--zone-dir")
        .arg(&zones)
        .output()
        .unwrap());
    let files = split_rendered(&out);
    assert_eq!(files.len(), 3, "{out}");
    assert_eq!(files[0].0, "named.conf");
    assert!(
        files[0].1.contains("walrus-eu"),
        "default key name: {}",
        files[0].1
    );
    for (name, body) in &files[1..] {
        std::fs::write(zones.join(name), body).unwrap();
    }
    // A named.conf as an operator would write it: the key from tsig-keygen, then ours.
    let named = dir.path().join("named.conf");
    std::fs::write(
        &named,
        format!(
            "key \"walrus-eu\" {{ algorithm hmac-sha256; secret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\"; }};\n{}",
            files[0].1
        ),
    )
    .unwrap();
    let r = Command::new(&checkconf)
        .arg("-z")
        .arg(&named)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "named-checkconf -z: {}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    for (zone, file) in [
        ("example.com", "example.com.zone"),
        ("area-eu.example.com", "area-eu.example.com.zone"),
    ] {
        let r = Command::new(&checkzone)
            .arg(zone)
            .arg(zones.join(file))
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "named-checkzone {zone}: {}",
            String::from_utf8_lossy(&r.stdout)
        );
    }
    // The area zone starts with the home cluster's addresses.
    let area_zone = &files
        .iter()
        .find(|(n, _)| n.starts_with("area-eu"))
        .unwrap()
        .1;
    assert!(
        area_zone.contains("127.0.1.1") && area_zone.contains("127.0.1.2"),
        "{area_zone}"
    );

    // Planted fault: the checker does catch a broken zone file.
    std::fs::write(zones.join("example.com.zone"), "garbage\n").unwrap();
    let r = Command::new(&checkconf)
        .arg("-z")
        .arg(&named)
        .output()
        .unwrap();
    assert!(
        !r.status.success(),
        "named-checkconf accepted a broken zone"
    );

    // An unknown area is an error naming the known ones.
    let out = bin()
        .args(["dns", "bind-config", "--area", "mars", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: asia, eu, us"));
}

#[test]
fn check_config_reports_the_field_of_an_error() {
    let dir = TempDir::new("check");
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, EXAMPLE).unwrap();
    let out = ok(bin()
        .args(["check-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap());
    assert!(out.contains("3 areas"), "{out}");
    std::fs::write(
        &conf,
        EXAMPLE.replace("home_cluster = \"c-eu\"", "home_cluster = \"c9\""),
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("areas.eu.home_cluster"));

    // A client attaching first outside its area: valid, with a warning naming the file,
    // the line and the field.
    let mut text = EXAMPLE.replace("transport = \"quic\"", "transport = \"tls-tcp\"");
    for member in ["127.0.1.1", "127.0.2.1"] {
        let status = format!("status_addr = \"{member}:9400\"\n");
        text = text.replace(&status, &format!("{status}client_port = 7500\n"));
    }
    let text = text.replace(
        "[nodes.eu-b]\n",
        "[nodes.eu-b]\ntier = \"client\"\nattach = [\"us-a\", \"eu-a\"]\n",
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("attach = [\"us-a\""))
        .unwrap()
        + 1;
    std::fs::write(&conf, &text).unwrap();
    let out = ok(bin()
        .args(["check-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap());
    let expected = format!(
        "warning: {}:{line}: `nodes.eu-b.attach`: client `eu-b` is in area eu but attaches first to `us-a`",
        conf.display()
    );
    assert!(out.contains(&expected), "{expected}\nnot in\n{out}");
}

#[test]
fn run_refuses_roles_the_node_cannot_take() {
    let dir = TempDir::new("roles");
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, EXAMPLE).unwrap();
    let out = bin()
        .args(["run", "--node", "eu-b", "--roles", "director", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodes.eu-b.area"), "{err}");
    let out = bin()
        .args(["run", "--node", "eu-b", "--roles", "boss", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a role"));
}

/// `dns knot-config` and `dns pdns-config` with the area's TSIG key file: Knot's own
/// checker (`knotc conf-check`, `zone-check`) accepts the knot.conf and zone files; PowerDNS' setup script runs as printed
/// and leaves both zones, the key and the update grants in the database.
#[test]
fn dns_knot_and_pdns_configs_load_in_their_servers() {
    let knotc = need("knotc", "knot");
    let pdnsutil = need("pdnsutil", "pdns-server");
    need("sqlite3", "sqlite3");
    let dir = TempDir::new("knotpdnsconf");
    let key = dir.path().join("eu.key");
    std::fs::write(
        &key,
        "key \"walrus-eu\" { algorithm hmac-sha256; secret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\"; };\n",
    )
    .unwrap();
    let conf = dir.path().join("walrus.toml");
    let with_key = EXAMPLE.replacen(
        "# tsig_key_file = \"/etc/walrus/tsig/eu.key\"",
        &format!("tsig_key_file = \"{}\"", key.display()),
        1,
    );
    assert_ne!(
        with_key, EXAMPLE,
        "the example no longer has the commented key line"
    );
    std::fs::write(&conf, with_key).unwrap();

    // Knot: the whole knot.conf and both zone files pass Knot's checkers.
    let zones = dir.path().join("knot");
    std::fs::create_dir_all(zones.join("db")).unwrap();
    let out = ok(bin()
        .args(["dns", "knot-config", "--area", "eu", "--config"])
        .arg(&conf)
        .arg("--zone-dir")
        .arg(&zones)
        .arg("--run-dir")
        .arg(&zones)
        .output()
        .unwrap());
    let files = split_rendered(&out);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["knot.conf", "example.com.zone", "area-eu.example.com.zone"],
        "{out}"
    );
    assert!(files[0].1.contains("secret: c2VjcmV0"), "{}", files[0].1);
    for (name, body) in &files {
        std::fs::write(zones.join(name), body).unwrap();
    }
    let check = |cmd: &mut Command, what: &str| {
        let r = cmd.output().unwrap();
        assert!(
            r.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    };
    check(
        Command::new(&knotc)
            .arg("-c")
            .arg(zones.join("knot.conf"))
            .arg("conf-check"),
        "knotc conf-check",
    );
    // `zone-check` loads each zone from its file offline, as knotd would.
    check(
        Command::new(&knotc)
            .arg("-c")
            .arg(zones.join("knot.conf"))
            .arg("zone-check"),
        "knotc zone-check",
    );

    // PowerDNS: the script, run as printed, loads everything into a fresh database.
    let pdns = dir.path().join("pdns");
    std::fs::create_dir_all(&pdns).unwrap();
    let out = ok(bin()
        .args(["dns", "pdns-config", "--area", "eu", "--config"])
        .arg(&conf)
        .arg("--zone-dir")
        .arg(&pdns)
        .arg("--database")
        .arg(pdns.join("pdns.sqlite3"))
        .output()
        .unwrap());
    for (name, body) in split_rendered(&out) {
        std::fs::write(pdns.join(name), body).unwrap();
    }
    let util = format!("{} --config-dir={}", pdnsutil.display(), pdns.display());
    check(
        Command::new("sh")
            .arg(pdns.join("walrus-pdns-setup.sh"))
            .env("PDNSUTIL", &util),
        "walrus-pdns-setup.sh",
    );
    let pdnsutil_out = |args: &[&str]| {
        ok(Command::new(&pdnsutil)
            .arg(format!("--config-dir={}", pdns.display()))
            .args(args)
            .output()
            .unwrap())
    };
    for zone in ["example.com", "area-eu.example.com"] {
        pdnsutil_out(&["check-zone", zone]);
    }
    let keys = pdnsutil_out(&["list-tsig-keys"]);
    assert!(
        keys.contains("walrus-eu") && keys.contains("c2VjcmV0"),
        "{keys}"
    );
    let meta = pdnsutil_out(&["get-meta", "area-eu.example.com"]);
    assert!(
        meta.contains("TSIG-ALLOW-DNSUPDATE") && meta.contains("walrus-eu"),
        "{meta}"
    );
    assert!(meta.contains("ALLOW-DNSUPDATE-FROM"), "{meta}");
}

#[test]
fn help_of_every_command_has_an_example() {
    for args in [
        vec!["run", "--help"],
        vec!["certs", "init", "--help"],
        vec!["certs", "issue", "--help"],
        vec!["bypass", "on", "--help"],
        vec!["bypass", "off", "--help"],
        vec!["dns", "bind-config", "--help"],
        vec!["dns", "knot-config", "--help"],
        vec!["dns", "pdns-config", "--help"],
        vec!["check-config", "--help"],
        vec!["drain", "--help"],
        vec!["undrain", "--help"],
        vec!["pin", "--help"],
        vec!["unpin", "--help"],
    ] {
        let out = ok(bin().args(&args).output().unwrap());
        assert!(out.contains("Example: walrus-node"), "{args:?}: {out}");
    }
}

fn wait_for_log(log: &Path, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if start.elapsed() > timeout {
            panic!("no `{needle}` in the log after {timeout:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA and node n1's certificate (by the binary's own `certs` commands) in `dir/certs`,
/// and [`one_node_config`] written to `dir/walrus.toml`: (the file, its text).
fn one_node_setup(dir: &Path) -> (PathBuf, String) {
    let certs = dir.join("certs");
    ok(bin()
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .output()
        .unwrap());
    ok(bin()
        .args(["certs", "issue", "--dir"])
        .arg(&certs)
        .arg("n1")
        .output()
        .unwrap());
    let conf = dir.join("walrus.toml");
    let text = one_node_config(dir, "0.8");
    std::fs::write(&conf, &text).unwrap();
    (conf, text)
}

fn one_node_config(dir: &Path, threshold: &str) -> String {
    let dns = walrus_node::cluster::free_dns_port().unwrap();
    let gcs = walrus_node::cluster::free_udp_port().unwrap();
    format!(
        "site = \"example.com\"\n\
         [timing]\nround_period = \"500ms\"\nreport_interval = \"200ms\"\n\
         [controller]\nthreshold = {threshold}\nuse_cpu = false\n\
         [dns]\nstate_dir = \"{d}/dns\"\n\
         [reporter]\nbypass_file = \"{d}/bypass\"\n\
         [tls]\nca = \"{d}/certs/ca.pem\"\ndir = \"{d}/certs\"\n\
         [areas.a1]\nzone = \"area-a1.example.com\"\nname_server = \"127.0.0.1:{dns}\"\nhome_cluster = \"c1\"\n\
         [clusters.c1.servers.s1]\naddresses = [\"192.0.2.1\"]\nstatus = \"probe\"\nstatus_url = \"http://127.0.0.1:1/\"\n\
         [nodes.n1]\naddress = \"127.0.0.1:{gcs}\"\nroles = [\"controller\", \"reporter\", \"director\"]\nserver = \"s1\"\narea = \"a1\"\n",
        d = dir.display()
    )
}

#[test]
fn run_reloads_on_sighup_refuses_a_bad_file_and_stops_on_sigterm() {
    let dir = TempDir::new("run");
    let (conf, text) = one_node_setup(dir.path());
    let log: PathBuf = dir.path().join("log.jsonl");
    let child = bin()
        .args(["run", "--log-json", "--node", "n1", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new("walrus-node", child);
    wait_for_log(&log, "walrus-node running", Duration::from_secs(30));
    wait_for_log(&log, "this controller is master", Duration::from_secs(30));

    // A valid change of a reloadable setting is applied.
    std::fs::write(&conf, text.replace("threshold = 0.8", "threshold = 0.7")).unwrap();
    assert!(guard.signal("HUP"));
    let out = wait_for_log(&log, "configuration reloaded", Duration::from_secs(30));
    assert!(out.contains("controller"), "{out}");

    // An invalid file is refused and the node keeps running.
    std::fs::write(
        &conf,
        text.replace("threshold = 0.8", "threshold = \"high\""),
    )
    .unwrap();
    assert!(guard.signal("HUP"));
    wait_for_log(&log, "invalid file refused", Duration::from_secs(30));
    assert!(guard.exited().is_none(), "the node died on a bad file");

    // SIGTERM: a clean stop, exit status 0.
    assert!(guard.signal("TERM"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = guard.exited() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("node stopped"), "{text}");
    // --log-json: every line is one JSON object.
    for line in text.lines().filter(|l| !l.is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

/// `walrus-node check-config … | head -1` used to panic with "Broken pipe" and a
/// backtrace: every printing command now ends quietly when its reader has gone.
#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let dir = TempDir::new("epipe");
    let conf = dir.path().join("walrus.toml");
    std::fs::write(&conf, EXAMPLE).unwrap();
    let conf = conf.to_str().unwrap().to_owned();
    for args in [
        vec!["check-config", "--config", &conf],
        vec!["dns", "bind-config", "--config", &conf, "--area", "eu"],
    ] {
        // A pipe whose reader is gone before the first write: EPIPE at once.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin()
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Issue 16's smaller defects, as an operator meets them: a node's address already in use
/// is named once; a node name the certificates cannot carry is refused by `check-config`
/// with its line; a semantic error names the field's own line; a duplicate key is named.
#[test]
fn config_and_start_errors_name_the_thing_once_and_where() {
    let dir = TempDir::new("errors");
    let (conf, text) = one_node_setup(dir.path());
    // The node's UDP address is taken by someone else.
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("address = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let _taken = std::net::UdpSocket::bind(&addr).unwrap();
    let out = bin()
        .args(["run", "--node", "n1", "--config"])
        .arg(&conf)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches(&addr).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");

    let check = |text: &str| {
        std::fs::write(&conf, text).unwrap();
        let out = bin()
            .arg("check-config")
            .arg("--config")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    // A node name that is no DNS name.
    let bad = text.replace("[nodes.n1]", "[nodes.A_2]");
    let e = check(&bad);
    assert!(
        e.contains(&format!(":{}: `nodes.A_2`", line_of(&bad, "[nodes.A_2]"))),
        "{e}"
    );
    // A bad value is reported at its own line, not the table's.
    let bad = text.replace("area = \"a1\"", "area = \"a9\"");
    let e = check(&bad);
    assert!(
        e.contains(&format!(
            ":{}: `nodes.n1.area`",
            line_of(&bad, "area = \"a9\"")
        )),
        "{e}"
    );
    // A duplicate key is named.
    let e = check(&format!("site = \"again.example.com\"\n{text}"));
    assert!(e.contains("duplicate key `site`"), "{e}");
    let e = check(&text.replacen("[timing]", "[timing]\nround_period = \"2s\"", 1));
    assert!(e.contains("duplicate key `round_period`"), "{e}");
}
