//! A real Knot DNS (`knotd`) authoritative for one area's §7.2 layout on a loopback port,
//! set up from what `walrus-node dns knot-config` prints (`knot_config`): its ACL lets the
//! area's TSIG key update only `www.<area>` and `_walrus-epoch.<area>` (types A, AAAA,
//! TXT). Killed (SIGKILL) on drop.

use super::{layout, tsig_keygen, Authoritative};
use crate::dir::TempDir;
use crate::net::free_dns_port;
use crate::process::need;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use walrus_actors::director::bind_config::split_rendered;
use walrus_actors::director::knot_config::{knot_config, UpdateSetup};
use walrus_actors::director::zone::WwwRecords;

impl Authoritative {
    /// Knot DNS for area `area` with a fresh key named `key_name` (see the module
    /// doc).
    pub fn knot(area: u32, key_name: &str) -> Self {
        need("knotd", "knot");
        let dir = TempDir::new(&format!("knot-a{area}"));
        let port = free_dns_port();
        let key = tsig_keygen(key_name);
        let layout = layout(area, 30);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // What `walrus-node dns knot-config` prints, installed as its comments say.
        let setup = UpdateSetup {
            layout: &layout,
            key_name,
            key: Some(&key),
            listen: addr,
            zone_dir: dir.path(),
            update_from: &[IpAddr::from([127, 0, 0, 1])],
            initial: &WwwRecords::default(),
        };
        let text = knot_config(&setup, dir.path()).unwrap().render();
        for (name, body) in split_rendered(&text) {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        // The test reads knotd's log from its stderr.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("knot.conf"))
            .unwrap();
        writeln!(conf, "\nlog:\n  - target: stderr\n    any: info").unwrap();
        Self::start(
            "knotd",
            "knot.log",
            |d| {
                let mut c = Command::new(need("knotd", "knot"));
                c.arg("-c").arg(d.join("knot.conf"));
                c
            },
            dir,
            (addr, key, layout),
        )
    }
}
