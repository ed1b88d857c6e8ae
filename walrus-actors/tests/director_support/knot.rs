//! A real Knot DNS (`knotd`) authoritative for one area's §7.2 layout on a loopback port,
//! set up from what `walrus-node dns knot-config` prints (`knot_config`): its ACL lets the
//! area's TSIG key update only `www.<area>` and `_walrus-epoch.<area>` (types A, AAAA,
//! TXT). Killed (SIGKILL) on drop.

use super::{free_port, layout, need, spawn_authority, tsig_keygen, Authority, TempDir};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command};
use walrus_actors::director::bind_config::split_rendered;
use walrus_actors::director::knot_config::{knot_config, UpdateSetup};
use walrus_actors::director::rfc2136::TsigKey;
use walrus_actors::director::zone::{WwwRecords, ZoneLayout};

pub struct Knot {
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub key: TsigKey,
    pub layout: ZoneLayout,
    child: Option<Child>,
}

impl Knot {
    pub fn start(area: u32, key_name: &str) -> Self {
        let knotd = need("knotd", "knot");
        let dir = TempDir::new(&format!("knot-a{area}"));
        let port = free_port();
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
        let mut k = Knot {
            addr,
            dir,
            key,
            layout,
            child: None,
        };
        k.spawn(&knotd);
        k
    }

    fn spawn(&mut self, knotd: &std::path::Path) {
        let mut cmd = Command::new(knotd);
        cmd.arg("-c").arg(self.dir.path().join("knot.conf"));
        let log = self.dir.path().join("knot.log");
        self.child = Some(spawn_authority("knotd", cmd, &log, self.addr, &self.layout));
    }
}

impl Authority for Knot {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn key(&self) -> &TsigKey {
        &self.key
    }
    fn layout(&self) -> &ZoneLayout {
        &self.layout
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn restart(&mut self) {
        self.kill();
        self.spawn(&need("knotd", "knot"));
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        self.kill();
    }
}
