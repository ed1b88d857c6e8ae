//! PowerDNS Authoritative configuration for one area's name server in the §7.2 layout,
//! with the gsqlite3 backend (Debian `pdns-backend-sqlite3`): a `pdns.conf`, a setup script
//! of `pdnsutil` commands (load both zones, import the Director's TSIG key, allow it to
//! update the area zone from the Director hosts, one serial step per update) and the same
//! starting zone files as BIND's. `walrus-node dns pdns-config --area NAME` prints it; the
//! PowerDNS tests set `pdns_server` up by running it, so what an operator gets is what is
//! tested.
//!
//! PowerDNS has no per-name grant: the key may change any name of the area zone (nothing
//! in the site zone). Its Lua policy (`lua-dnsupdate-policy-script`) could narrow that, but
//! PowerDNS 4.7 skips a record the script denies and still answers NOERROR, so the
//! Director would see a silent mismatch instead of a refusal; not used.

use super::bind_config::{key_label, render_sections, zone_files, ZoneFiles};
use super::knot_config::UpdateSetup;
use super::DirectorError;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// Where Debian's `pdns-backend-sqlite3` keeps the database schema.
pub const SQLITE_SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

/// The generated PowerDNS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdnsConfig {
    /// `pdns.conf` (or lines to add to it).
    pub pdns_conf: String,
    /// A POSIX shell script of the `pdnsutil` commands that load the zones and the key.
    pub setup_script: String,
    /// The starting zone files (into [`UpdateSetup::zone_dir`]).
    pub zone_files: ZoneFiles,
}

impl PdnsConfig {
    /// Everything as one text, each file under a `// ---- NAME ----` header
    /// ([`super::bind_config::split_rendered`] cuts it back).
    pub fn render(&self) -> String {
        render_sections([
            ("pdns.conf", self.pdns_conf.as_str()),
            ("walrus-pdns-setup.sh", self.setup_script.as_str()),
            (&self.zone_files.site.0, &self.zone_files.site.1),
            (&self.zone_files.area.0, &self.zone_files.area.1),
        ])
    }
}

/// A single-quoted shell word.
fn sh(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// An address as the one-host network PowerDNS' ACLs take.
fn host_net(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The PowerDNS configuration for `setup`, with its sqlite3 database at `database`.
pub fn pdns_config(setup: &UpdateSetup<'_>, database: &Path) -> Result<PdnsConfig, DirectorError> {
    let key = key_label(setup.key_name)?;
    let files = zone_files(setup.layout, setup.initial)?;
    let site = setup.layout.site.to_ascii();
    let area = setup.layout.area_zone.to_ascii();
    let db = database.display().to_string();
    let listen = setup.listen;
    let pdns_conf = format!(
        "# Walrus: area zone {area} for site {site} (paper §7.2), from `walrus-node dns pdns-config`.\n\
         launch=gsqlite3\n\
         gsqlite3-database={db}\n\
         local-address={listen}\n\
         # RFC 2136 on; which key may update which zone from where is the zone's metadata\n\
         # (set by walrus-pdns-setup.sh), not this global list.\n\
         dnsupdate=yes\n\
         allow-dnsupdate-from=\n"
    );
    let mut s = format!(
        "#!/bin/sh\n\
         # Walrus: loads area zone {area} and site zone {site} into PowerDNS (gsqlite3).\n\
         # Run once, as the user pdns_server runs as, after installing pdns.conf and putting\n\
         # the two zone files in {dir}. PDNSUTIL may name another configuration, e.g.\n\
         # PDNSUTIL=\"pdnsutil --config-dir=/etc/powerdns\". It holds the TSIG secret when\n\
         # known: keep it private.\n\
         set -eu\n\
         PDNSUTIL=${{PDNSUTIL:-pdnsutil}}\n\
         if [ ! -s {db_q} ]; then sqlite3 {db_q} < {schema}; fi\n\
         $PDNSUTIL load-zone {site_q} {site_file}\n\
         $PDNSUTIL load-zone {area_q} {area_file}\n",
        dir = setup.zone_dir.display(),
        db_q = sh(&db),
        schema = sh(SQLITE_SCHEMA),
        site_q = sh(&site),
        area_q = sh(&area),
        site_file = sh(&setup.zone_dir.join(&files.site.0).display().to_string()),
        area_file = sh(&setup.zone_dir.join(&files.area.0).display().to_string()),
    );
    match setup.key {
        Some(k) => {
            let _ = writeln!(
                s,
                "$PDNSUTIL import-tsig-key {} hmac-sha256 {}",
                sh(&key),
                sh(&k.secret_base64())
            );
        }
        None => {
            let _ = writeln!(
                s,
                "# The Director's key is not known here: PowerDNS makes one; copy it into a BIND\n\
                 # key file (`key \"{key}\" {{ algorithm hmac-sha256; secret \"...\"; }};`) and point\n\
                 # the area's tsig_key_file at it. `$PDNSUTIL list-tsig-keys` shows it again.\n\
                 $PDNSUTIL generate-tsig-key {} hmac-sha256",
                sh(&key)
            );
        }
    }
    let from: Vec<String> = if setup.update_from.is_empty() {
        vec!["0.0.0.0/0".into(), "::/0".into()]
    } else {
        setup.update_from.iter().map(host_net).collect()
    };
    let _ = writeln!(
        s,
        "$PDNSUTIL set-meta {area_q} TSIG-ALLOW-DNSUPDATE {}\n\
         $PDNSUTIL set-meta {area_q} ALLOW-DNSUPDATE-FROM {}\n\
         # One serial step per update (as BIND and Knot do).\n\
         $PDNSUTIL set-meta {area_q} SOA-EDIT-DNSUPDATE INCREASE",
        sh(&key),
        from.iter().map(|f| sh(f)).collect::<Vec<_>>().join(" "),
        area_q = sh(&area),
    );
    Ok(PdnsConfig {
        pdns_conf,
        setup_script: s,
        zone_files: files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::rfc2136::TsigKey;
    use crate::director::zone::WwwRecords;

    #[test]
    fn the_script_loads_both_zones_and_grants_the_key_from_the_director_hosts() {
        let layout = crate::director::bind_config::tests::area_1_layout();
        let key = TsigKey::new("walrus-area1", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=").unwrap();
        let from = ["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
        let setup = UpdateSetup {
            layout: &layout,
            key_name: "walrus-area1",
            key: Some(&key),
            listen: "127.0.0.1:5300".parse().unwrap(),
            zone_dir: Path::new("/var/lib/powerdns/walrus"),
            update_from: &from,
            initial: &WwwRecords::default(),
        };
        let c = pdns_config(&setup, Path::new("/var/lib/powerdns/pdns.sqlite3")).unwrap();
        assert!(c.pdns_conf.contains("local-address=127.0.0.1:5300"));
        let s = &c.setup_script;
        assert!(
            s.contains("load-zone 'area-1.example.com.' '/var/lib/powerdns/walrus/area-1.example.com.zone'"),
            "{s}"
        );
        assert!(
            s.contains("import-tsig-key 'walrus-area1' hmac-sha256 'c2VjcmV0LXNlY3JldC1zZWNyZXQ='"),
            "{s}"
        );
        assert!(
            s.contains("ALLOW-DNSUPDATE-FROM '127.0.0.2/32' '::1/128'"),
            "{s}"
        );
        assert!(s.contains("TSIG-ALLOW-DNSUPDATE 'walrus-area1'"), "{s}");
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
