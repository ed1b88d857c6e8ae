//! A real PowerDNS Authoritative (`pdns_server`, gsqlite3 backend) for one area's §7.2
//! layout on a loopback port, set up from what `walrus-node dns pdns-config` prints
//! (`pdns_config`: pdns.conf, the zone files and its `pdnsutil` setup script, run as
//! written). PowerDNS has no per-name grant: the key may change any name of the area zone
//! (and nothing in the site zone); see `walrus_actors::director::pdns_config` for why no
//! Lua policy narrows it. Killed (SIGKILL) on drop.

use super::{layout, tsig_keygen, Authoritative};
use crate::dir::TempDir;
use crate::net::free_dns_port;
use crate::process::need;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use walrus_actors::director::bind_config::split_rendered;
use walrus_actors::director::knot_config::UpdateSetup;
use walrus_actors::director::pdns_config::{pdns_config, SQLITE_SCHEMA};
use walrus_actors::director::zone::WwwRecords;

impl Authoritative {
    /// PowerDNS for area `area` with a fresh key named `key_name` (see the module
    /// doc).
    pub fn pdns(area: u32, key_name: &str) -> Self {
        need("pdns_server", "pdns-server");
        let pdnsutil = need("pdnsutil", "pdns-server");
        need("sqlite3", "sqlite3");
        // The backend's schema and module (under /usr/lib/<multiarch>/pdns).
        let module = std::fs::read_dir("/usr/lib")
            .unwrap()
            .flatten()
            .any(|d| d.path().join("pdns/libgsqlite3backend.so").exists());
        assert!(
            Path::new(SQLITE_SCHEMA).exists() && module,
            "PowerDNS' gsqlite3 backend not found: install the Debian package `pdns-backend-sqlite3`"
        );
        let dir = TempDir::new(&format!("pdns-a{area}"));
        let port = free_dns_port();
        let key = tsig_keygen(key_name);
        let layout = layout(area, 30);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.path();
        // What `walrus-node dns pdns-config` prints, installed as its comments say: the
        // files, then its setup script with PDNSUTIL pointing at this configuration.
        let setup = UpdateSetup {
            layout: &layout,
            key_name,
            key: Some(&key),
            listen: addr,
            zone_dir: d,
            update_from: &[IpAddr::from([127, 0, 0, 1])],
            initial: &WwwRecords::default(),
        };
        let text = pdns_config(&setup, &d.join("pdns.sqlite3"))
            .unwrap()
            .render();
        for (name, body) in split_rendered(&text) {
            std::fs::write(d.join(name), body).unwrap();
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("pdns.conf"))
            .unwrap();
        writeln!(
            conf,
            "socket-dir={}\ndaemon=no\nguardian=no\ndisable-syslog=yes\nloglevel=6",
            d.display()
        )
        .unwrap();
        let out = Command::new("sh")
            .arg(d.join("walrus-pdns-setup.sh"))
            .env(
                "PDNSUTIL",
                format!("{} --config-dir={}", pdnsutil.display(), d.display()),
            )
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "walrus-pdns-setup.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start(
            "pdns_server",
            "pdns.log",
            |d| {
                let mut c = Command::new(need("pdns_server", "pdns-server"));
                c.arg(format!("--config-dir={}", d.display()));
                c
            },
            dir,
            (addr, key, layout),
        )
    }
}
