//! Knot DNS configuration for one area's name server in the §7.2 layout: a whole
//! `knot.conf` (listen address, the Director's TSIG key, an ACL that lets that key update
//! only `www.<area-zone>` and `_walrus-epoch.<area-zone>`, the two zones) and the same
//! starting zone files as BIND's ([`super::bind_config::zone_files`]).
//! `walrus-node dns knot-config --area NAME` prints it; the Knot tests set `knotd` up from
//! it, so what an operator gets is what is tested.

use super::bind_config::{key_label, render_sections, zone_files, ZoneFiles};
use super::rfc2136::{TsigKey, EPOCH_LABEL};
use super::zone::{WwwRecords, ZoneLayout};
use super::DirectorError;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// What an area's RFC 2136 name server needs to know, whatever its software.
#[derive(Debug, Clone)]
pub struct UpdateSetup<'a> {
    /// The area's zones and name servers.
    pub layout: &'a ZoneLayout,
    /// The TSIG key name the Director signs with.
    pub key_name: &'a str,
    /// The key itself, when known (from the area's `tsig_key_file`): its secret goes into
    /// the server's configuration. Without it the output says how to create one.
    pub key: Option<&'a TsigKey>,
    /// Where the server listens (the area's `name_server`).
    pub listen: SocketAddr,
    /// Where the zone files live on the name server (writable by the server).
    pub zone_dir: &'a Path,
    /// The hosts that may send updates (the area's Directors and the Controllers, which
    /// write as a fallback); empty: any host with the key.
    pub update_from: &'a [IpAddr],
    /// The starting www answer (may be empty).
    pub initial: &'a WwwRecords,
}

/// The generated Knot configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnotConfig {
    /// The whole `knot.conf`.
    pub knot_conf: String,
    /// The starting zone files (into [`UpdateSetup::zone_dir`]).
    pub zone_files: ZoneFiles,
}

impl KnotConfig {
    /// Everything as one text, each file under a `// ---- NAME ----` header
    /// ([`super::bind_config::split_rendered`] cuts it back).
    pub fn render(&self) -> String {
        render_sections([
            ("knot.conf", self.knot_conf.as_str()),
            (&self.zone_files.site.0, &self.zone_files.site.1),
            (&self.zone_files.area.0, &self.zone_files.area.1),
        ])
    }
}

/// The Knot configuration for `setup`, with `knotd`'s run directory (PID file, control
/// socket) at `run_dir`.
pub fn knot_config(setup: &UpdateSetup<'_>, run_dir: &Path) -> Result<KnotConfig, DirectorError> {
    let key = key_label(setup.key_name)?;
    let files = zone_files(setup.layout, setup.initial)?;
    let site = setup.layout.site.to_ascii();
    let area = setup.layout.area_zone.to_ascii();
    let dir = setup.zone_dir.display();
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Walrus: area zone {area} for site {site} (paper §7.2), from `walrus-node dns knot-config`.\n\
         # Before starting knotd: put the two zone files in {dir} and create {dir}/db\n\
         # (Knot's journal and timers: without it every update fails with SERVFAIL), all\n\
         # writable by the user knotd runs as. Check with `knotc -c knot.conf conf-check`.\n"
    );
    let listen = match setup.listen.ip() {
        IpAddr::V4(a) => format!("{a}@{}", setup.listen.port()),
        IpAddr::V6(a) => format!("{a}@{}", setup.listen.port()),
    };
    let _ = writeln!(
        c,
        "server:\n  rundir: \"{}\"\n  listen: {listen}\n\ndatabase:\n  storage: \"{dir}/db\"\n",
        run_dir.display()
    );
    match setup.key.map(TsigKey::secret_base64) {
        Some(secret) => {
            let _ = writeln!(
                c,
                "key:\n  - id: {key}\n    algorithm: hmac-sha256\n    secret: {secret}\n"
            );
        }
        None => {
            let _ = writeln!(
                c,
                "# The Director's key is not known here (no tsig_key_file for this area, or it\n\
                 # could not be read). Create it with `tsig-keygen -a hmac-sha256 {key}`, point\n\
                 # the area's tsig_key_file at it and run this command again; until then knotd\n\
                 # refuses this file (the ACL names an undefined key).\n"
            );
        }
    }
    // Knot checks every record of an update against one rule's owners and types (not
    // pairs of them): www and the epoch TXT may each get A, AAAA and TXT.
    let _ = writeln!(
        c,
        "acl:\n  - id: walrus-update\n    key: {key}\n    action: update"
    );
    if !setup.update_from.is_empty() {
        let hosts: Vec<String> = setup.update_from.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(c, "    address: [{}]", hosts.join(", "));
    }
    let _ = writeln!(
        c,
        "    update-type: [A, AAAA, TXT]\n    update-owner: name\n    update-owner-match: equal\n    update-owner-name: [www, {EPOCH_LABEL}]\n\n\
         template:\n  - id: default\n    storage: \"{dir}\"\n\n\
         zone:\n  - domain: {site}\n    file: \"{}\"\n  - domain: {area}\n    file: \"{}\"\n    acl: walrus-update",
        files.site.0, files.area.0
    );
    Ok(KnotConfig {
        knot_conf: c,
        zone_files: files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::bind_config::split_rendered;
    use crate::director::bind_config::tests::area_1_layout as layout;

    #[test]
    fn the_acl_grants_the_key_www_and_the_epoch_only() {
        let layout = layout();
        let key = TsigKey::new("walrus-area1", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=").unwrap();
        let from = ["127.0.0.2".parse().unwrap()];
        let setup = UpdateSetup {
            layout: &layout,
            key_name: "walrus-area1",
            key: Some(&key),
            listen: "127.0.0.1:5300".parse().unwrap(),
            zone_dir: Path::new("/var/lib/knot/walrus"),
            update_from: &from,
            initial: &WwwRecords::default(),
        };
        let c = knot_config(&setup, Path::new("/run/knot")).unwrap();
        let k = &c.knot_conf;
        assert!(k.contains("listen: 127.0.0.1@5300"), "{k}");
        assert!(k.contains("secret: c2VjcmV0LXNlY3JldC1zZWNyZXQ="), "{k}");
        assert!(k.contains("update-owner-name: [www, _walrus-epoch]"), "{k}");
        assert!(k.contains("address: [127.0.0.2]"), "{k}");
        assert_eq!(k.matches("acl: walrus-update").count(), 1, "{k}");
        let names: Vec<String> = split_rendered(&c.render())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            ["knot.conf", "example.com.zone", "area-1.example.com.zone"]
        );
    }

    #[test]
    fn without_the_key_it_says_how_to_make_one() {
        let layout = layout();
        let setup = UpdateSetup {
            layout: &layout,
            key_name: "walrus-area1",
            key: None,
            listen: "[::1]:53".parse().unwrap(),
            zone_dir: Path::new("/z"),
            update_from: &[],
            initial: &WwwRecords::default(),
        };
        let k = knot_config(&setup, Path::new("/run/knot"))
            .unwrap()
            .knot_conf;
        assert!(k.contains("tsig-keygen -a hmac-sha256 walrus-area1"), "{k}");
        assert!(!k.contains("secret:"), "{k}");
        assert!(k.contains("listen: ::1@53"), "{k}");
        assert!(!k.contains("address:"), "{k}");
    }
}
