//! A real PowerDNS Authoritative (`pdns_server`, gsqlite3 backend) for one area's §7.2
//! layout on a loopback port: zones loaded by `pdnsutil load-zone` from the zone files
//! `bind_config` writes, `dnsupdate=yes`, the TSIG key in the database, and the area zone's
//! metadata `TSIG-ALLOW-DNSUPDATE` (the key) and `ALLOW-DNSUPDATE-FROM` (loopback).
//! PowerDNS has no per-name grant in its metadata: the key may change any name of the
//! area zone (and nothing in the site zone). Its Lua policy script
//! (`lua-dnsupdate-policy-script`) could narrow that, but PowerDNS 4.7 skips a record the
//! script denies and still answers NOERROR (tried: an update of another name "succeeds"
//! and changes nothing), so the Director would see a mismatch and retry instead of a
//! refusal; not used here. Killed (SIGKILL) on drop.

use super::knot::secret_of;
use super::{free_port, layout, need, spawn_authority, tsig_keygen, Authority, TempDir};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use walrus_actors::director::bind_config::bind_config;
use walrus_actors::director::rfc2136::TsigKey;
use walrus_actors::director::zone::{WwwRecords, ZoneLayout};

const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

pub struct Pdns {
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub key: TsigKey,
    pub layout: ZoneLayout,
    child: Option<Child>,
}

fn run(dir: &Path, program: &Path, args: &[&str], stdin: Option<&Path>) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir);
    if let Some(f) = stdin {
        cmd.stdin(std::fs::File::open(f).unwrap());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pdns {
    pub fn start(area: u32, key_name: &str) -> Self {
        need("pdns_server", "pdns-server");
        let pdnsutil = need("pdnsutil", "pdns-server");
        let sqlite = need("sqlite3", "sqlite3");
        // The backend's schema and module (under /usr/lib/<multiarch>/pdns).
        let module = std::fs::read_dir("/usr/lib")
            .unwrap()
            .flatten()
            .any(|d| d.path().join("pdns/libgsqlite3backend.so").exists());
        assert!(
            Path::new(SCHEMA).exists() && module,
            "PowerDNS' gsqlite3 backend not found: install the Debian package `pdns-backend-sqlite3`"
        );
        let dir = TempDir::new(&format!("pdns-a{area}"));
        let port = free_port();
        let key = tsig_keygen(key_name);
        let layout = layout(area, 30);
        let cfg = bind_config(&layout, key_name, dir.path(), &WwwRecords::default()).unwrap();
        let d = dir.path();
        std::fs::write(d.join(&cfg.site_zone_file.0), &cfg.site_zone_file.1).unwrap();
        std::fs::write(d.join(&cfg.area_zone_file.0), &cfg.area_zone_file.1).unwrap();
        let db = d.join("pdns.sqlite3");
        run(d, &sqlite, &[db.to_str().unwrap()], Some(Path::new(SCHEMA)));
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={}\n\
             local-address=127.0.0.1:{port}\nsocket-dir={}\n\
             daemon=no\nguardian=no\ndisable-syslog=yes\nloglevel=6\n\
             dnsupdate=yes\nallow-dnsupdate-from=\n",
            db.display(),
            d.display()
        );
        std::fs::write(d.join("pdns.conf"), conf).unwrap();
        let cd = format!("--config-dir={}", d.display());
        let site = layout.site.to_ascii();
        let area_zone = layout.area_zone.to_ascii();
        for (zone, file) in [
            (&site, &cfg.site_zone_file.0),
            (&area_zone, &cfg.area_zone_file.0),
        ] {
            let path = d.join(file);
            run(
                d,
                &pdnsutil,
                &[&cd, "load-zone", zone, path.to_str().unwrap()],
                None,
            );
        }
        let secret = secret_of(&key);
        run(
            d,
            &pdnsutil,
            &[&cd, "import-tsig-key", key_name, "hmac-sha256", &secret],
            None,
        );
        for (kind, value) in [
            ("TSIG-ALLOW-DNSUPDATE", key_name),
            ("ALLOW-DNSUPDATE-FROM", "127.0.0.0/8"),
            // One serial step per update (as BIND and Knot do).
            ("SOA-EDIT-DNSUPDATE", "INCREASE"),
        ] {
            run(
                d,
                &pdnsutil,
                &[&cd, "set-meta", &area_zone, kind, value],
                None,
            );
        }
        let mut p = Pdns {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            key,
            layout,
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(need("pdns_server", "pdns-server"));
        cmd.arg(format!("--config-dir={}", self.dir.path().display()));
        let log = self.dir.path().join("pdns.log");
        self.child = Some(spawn_authority(
            "pdns_server",
            cmd,
            &log,
            self.addr,
            &self.layout,
        ));
    }
}

impl Authority for Pdns {
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
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        self.kill();
    }
}
