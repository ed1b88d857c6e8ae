//! A real Knot DNS (`knotd`) authoritative for one area's §7.2 layout on a loopback port,
//! with the zone files `bind_config` writes and an ACL that lets the area's TSIG key
//! update only `www.<area>` and `_walrus-epoch.<area>` (types A, AAAA, TXT). Killed
//! (SIGKILL) on drop.

use super::{free_port, layout, need, spawn_authority, tsig_keygen, Authority, TempDir};
use std::net::SocketAddr;
use std::process::{Child, Command};
use walrus_actors::director::bind_config::bind_config;
use walrus_actors::director::rfc2136::{TsigKey, EPOCH_LABEL};
use walrus_actors::director::zone::{WwwRecords, ZoneLayout};

pub struct Knot {
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub key: TsigKey,
    pub layout: ZoneLayout,
    child: Option<Child>,
}

/// The base64 secret of `key` (from its BIND form: the key has no other accessor).
pub fn secret_of(key: &TsigKey) -> String {
    let text = key.to_bind_key();
    let after = text.split_once("secret \"").unwrap().1;
    after.split('"').next().unwrap().to_owned()
}

impl Knot {
    pub fn start(area: u32, key_name: &str) -> Self {
        let knotd = need("knotd", "knot");
        let dir = TempDir::new(&format!("knot-a{area}"));
        let port = free_port();
        let key = tsig_keygen(key_name);
        let layout = layout(area, 30);
        let cfg = bind_config(&layout, key_name, dir.path(), &WwwRecords::default()).unwrap();
        std::fs::write(
            dir.path().join(&cfg.site_zone_file.0),
            &cfg.site_zone_file.1,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(&cfg.area_zone_file.0),
            &cfg.area_zone_file.1,
        )
        .unwrap();
        // Without its database directory every update fails with SERVFAIL.
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        let d = dir.path().display();
        let site = layout.site.to_ascii();
        let area_zone = layout.area_zone.to_ascii();
        let secret = secret_of(&key);
        // Knot's ACL checks every record of an update against one rule's owners and
        // types (not pairs of them): www and the epoch TXT may each get A, AAAA and TXT.
        let conf = format!(
            "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n\n\
             control:\n  listen: \"{d}/knot.sock\"\n\n\
             log:\n  - target: stderr\n    any: info\n\n\
             database:\n  storage: \"{d}/db\"\n\n\
             key:\n  - id: {key_name}\n    algorithm: hmac-sha256\n    secret: {secret}\n\n\
             acl:\n  - id: walrus-update\n    key: {key_name}\n    action: update\n\
             \x20   update-type: [A, AAAA, TXT]\n    update-owner: name\n\
             \x20   update-owner-match: equal\n    update-owner-name: [www, {EPOCH_LABEL}]\n\n\
             template:\n  - id: default\n    storage: \"{d}\"\n\n\
             zone:\n  - domain: {site}\n    file: \"{}\"\n\
             \x20 - domain: {area_zone}\n    file: \"{}\"\n    acl: walrus-update\n",
            cfg.site_zone_file.0, cfg.area_zone_file.0
        );
        std::fs::write(dir.path().join("knot.conf"), conf).unwrap();
        let mut k = Knot {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
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
