//! BIND 9 configuration for one area's name server in the §7.2 layout: the zone
//! statements (with an `update-policy` that lets the Director's key change only
//! `www.<area-zone>` A and AAAA) and starting zone files for the site zone and the area
//! zone. `walrus-node dns bind-config --area NAME` prints this; our BIND tests use it to
//! set BIND up, so what an operator gets is what is tested.

use super::zone::{WwwRecords, ZoneLayout};
use super::DirectorError;
use hickory_proto::rr::Name;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// The generated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindConfig {
    /// `zone` statements for `named.conf` (the `key` statement from `tsig-keygen` must be
    /// included before them).
    pub zone_statements: String,
    /// The site zone file: (file name, contents).
    pub site_zone_file: (String, String),
    /// The area zone file: (file name, contents). BIND keeps a `.jnl` journal beside it,
    /// so its directory must be writable by `named`.
    pub area_zone_file: (String, String),
}

impl BindConfig {
    /// Everything as one text, for printing: statements, then each file under a header.
    pub fn render(&self) -> String {
        format!(
            "// ---- named.conf ----\n{}\n// ---- {} ----\n{}\n// ---- {} ----\n{}",
            self.zone_statements,
            self.site_zone_file.0,
            self.site_zone_file.1,
            self.area_zone_file.0,
            self.area_zone_file.1
        )
    }
}

fn bare(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_owned()
}

/// Generates the configuration for `layout`, for the TSIG key named `key_name`, with zone
/// files in `zone_dir`, and `initial` as the starting www answer (may be empty: then
/// `www.<site>` resolves to nothing until the first decision).
pub fn bind_config(
    layout: &ZoneLayout,
    key_name: &str,
    zone_dir: &Path,
    initial: &WwwRecords,
) -> Result<BindConfig, DirectorError> {
    let key = super::zone::fqdn(key_name).map_err(|e| DirectorError::BadKey {
        key: key_name.to_owned(),
        reason: e.to_string(),
    })?;
    let in_our_zones =
        layout.area_zone.zone_of(&layout.ns_name) || layout.site.zone_of(&layout.ns_name);
    if in_our_zones && layout.ns_addrs.is_empty() {
        // BIND refuses to load a zone whose in-zone NS has no address.
        return Err(DirectorError::BadName {
            name: layout.ns_name.to_ascii(),
            reason: "the name server's name is inside the zones: give its addresses".into(),
        });
    }
    let site = bare(&layout.site);
    let area = bare(&layout.area_zone);
    let key = bare(&key);
    let site_file = format!("{site}.zone");
    let area_file = format!("{area}.zone");
    let dir = zone_dir.display();
    let zone_statements = format!(
        "// Walrus area zone {area} for site {site} (paper §7.2).\n\
         // Include the key from `tsig-keygen -a hmac-sha256 {key}` before these.\n\
         zone \"{site}\" {{\n\
         \ttype primary;\n\
         \tfile \"{dir}/{site_file}\";\n\
         }};\n\
         zone \"{area}\" {{\n\
         \ttype primary;\n\
         \tfile \"{dir}/{area_file}\";\n\
         \t// Only the Director's key, only www.{area}, only A and AAAA.\n\
         \tupdate-policy {{ grant {key} name www.{area}. A AAAA; }};\n\
         }};\n"
    );
    let ttl = layout.ttl.secs();
    let soa = |zone: &Name| {
        format!(
            "@\tIN\tSOA\t{}\thostmaster.{}\t(1 3600 600 86400 {ttl})\n",
            layout.ns_name.to_ascii(),
            zone.to_ascii()
        )
    };
    let glue = |zone: &Name| {
        let mut s = String::new();
        // BIND wants an address for an in-zone NS in every zone that encloses its name
        // (the site zone does not delegate the area zone, so both hold it).
        if zone.zone_of(&layout.ns_name) {
            for a in &layout.ns_addrs {
                let t = match a {
                    IpAddr::V4(_) => "A",
                    IpAddr::V6(_) => "AAAA",
                };
                let _ = writeln!(s, "{}\tIN\t{t}\t{a}", layout.ns_name.to_ascii());
            }
        }
        s
    };
    let mut site_zone = format!("$TTL {ttl}\n");
    site_zone.push_str(&soa(&layout.site));
    let _ = writeln!(site_zone, "@\tIN\tNS\t{}", layout.ns_name.to_ascii());
    site_zone.push_str(&glue(&layout.site));
    let _ = writeln!(
        site_zone,
        "{}\tIN\tCNAME\t{}",
        layout.site_www().to_ascii(),
        layout.area_www().to_ascii()
    );
    let mut area_zone = format!("$TTL {ttl}\n");
    area_zone.push_str(&soa(&layout.area_zone));
    let _ = writeln!(area_zone, "@\tIN\tNS\t{}", layout.ns_name.to_ascii());
    area_zone.push_str(&glue(&layout.area_zone));
    let www = layout.area_www().to_ascii();
    for a in &initial.v4 {
        let _ = writeln!(area_zone, "{www}\t{}\tIN\tA\t{a}", initial.ttl);
    }
    for a in &initial.v6 {
        let _ = writeln!(area_zone, "{www}\t{}\tIN\tAAAA\t{a}", initial.ttl);
    }
    Ok(BindConfig {
        zone_statements,
        site_zone_file: (site_file, site_zone),
        area_zone_file: (area_file, area_zone),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::director::zone::RecordTtl;

    #[test]
    fn narrow_policy_and_cname_layout() {
        let layout = ZoneLayout::new(
            "example.com",
            "area-1.example.com",
            None,
            vec!["127.0.0.1".parse().unwrap()],
            RecordTtl::DEFAULT,
        )
        .unwrap();
        let c = bind_config(
            &layout,
            "walrus-area1",
            Path::new("/z"),
            &WwwRecords::default(),
        )
        .unwrap();
        assert!(c.zone_statements.contains(
            "update-policy { grant walrus-area1 name www.area-1.example.com. A AAAA; };"
        ));
        assert!(!c.zone_statements.contains("allow-update"));
        assert_eq!(c.zone_statements.matches("update-policy").count(), 1);
        assert!(c
            .site_zone_file
            .1
            .contains("www.example.com.\tIN\tCNAME\twww.area-1.example.com."));
        assert!(c
            .area_zone_file
            .1
            .contains("ns.area-1.example.com.\tIN\tA\t127.0.0.1"));
        assert!(c
            .site_zone_file
            .1
            .contains("ns.area-1.example.com.\tIN\tA\t127.0.0.1"));
        assert!(c.render().contains("---- area-1.example.com.zone ----"));
    }

    #[test]
    fn in_zone_ns_without_address_is_an_error() {
        let layout = ZoneLayout::new(
            "example.com",
            "a1.example.com",
            None,
            vec![],
            RecordTtl::DEFAULT,
        )
        .unwrap();
        assert!(bind_config(&layout, "k", Path::new("/z"), &WwwRecords::default()).is_err());
    }
}
