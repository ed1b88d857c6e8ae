//! BIND 9 configuration for one area's name server in the §7.2 layout: the zone
//! statements (with an `update-policy` that lets the Director's key change only
//! `www.<area-zone>` A and AAAA) and starting zone files for the site zone and the area
//! zone. `walrus-node dns bind-config --area NAME` prints this; our BIND tests use it to
//! set BIND up, so what an operator gets is what is tested.

use super::zone::{WwwRecords, ZoneContents, ZoneLayout, ZoneState};
use super::DirectorError;
use hickory_proto::rr::Name;
use hickory_proto::rr::{RData, Record};
use std::fmt::Write as _;
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
        render_sections([
            ("named.conf", self.zone_statements.as_str()),
            (&self.site_zone_file.0, &self.site_zone_file.1),
            (&self.area_zone_file.0, &self.area_zone_file.1),
        ])
    }
}

/// [`BindConfig::render`]'s text cut back at its `// ---- NAME ----` headers: (section
/// name, contents) in order — `named.conf` (the statements), then each zone file. For
/// tools and tests that install what `walrus-node dns bind-config` printed.
pub fn split_rendered(text: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("// ---- ")
            .and_then(|l| l.strip_suffix(" ----"))
        {
            files.push((name.to_owned(), String::new()));
        } else if let Some((_, body)) = files.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    files
}

fn bare(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_owned()
}

/// The two starting zone files of an area's name server, whatever its software: (file
/// name, contents) each. Shared by [`bind_config`] and the Knot and PowerDNS generators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFiles {
    /// The site zone: every area's name server, a delegation for every area zone inside it.
    pub site: (String, String),
    /// The area zone: `www` (changed by RFC 2136) and its name server.
    pub area: (String, String),
}

/// The zone files for `layout` with `initial` as the starting www answer (may be empty:
/// then `www.<site>` resolves to nothing until the first decision).
pub fn zone_files(layout: &ZoneLayout, initial: &WwwRecords) -> Result<ZoneFiles, DirectorError> {
    for area in layout.all_areas() {
        let inside = area.zone.zone_of(&area.ns_name) || layout.site.zone_of(&area.ns_name);
        if inside && area.ns_addrs.is_empty() {
            // A server refuses to load a zone whose in-zone NS (or glue) has no address.
            return Err(DirectorError::BadName {
                name: area.ns_name.to_ascii(),
                reason: "the name server's name is inside the zones: give its addresses".into(),
            });
        }
    }
    let site = zone_file(
        &ZoneContents::site(layout, None),
        "The site zone: every area's name server, a delegation (NS + glue) for every area zone inside it.",
    );
    let state = ZoneState {
        serial: 1,
        www: initial.clone(),
        epoch: 0,
    };
    let area = zone_file(
        &ZoneContents::area(layout, &state),
        "The area zone: only www's A/AAAA change, by RFC 2136 from the Director.",
    );
    Ok(ZoneFiles {
        site: (format!("{}.zone", bare(&layout.site)), site),
        area: (format!("{}.zone", bare(&layout.area_zone)), area),
    })
}

/// `key_name` as a DNS name without the final dot (how the servers' configs spell it).
pub(super) fn key_label(key_name: &str) -> Result<String, DirectorError> {
    let key = super::zone::fqdn(key_name).map_err(|e| DirectorError::BadKey {
        key: key_name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(bare(&key))
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
    let key = key_label(key_name)?;
    let files = zone_files(layout, initial)?;
    let site = bare(&layout.site);
    let area = bare(&layout.area_zone);
    let site_file = &files.site.0;
    let area_file = &files.area.0;
    let dir = zone_dir.display();
    let epoch = super::rfc2136::EPOCH_LABEL;
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
         \t// Only the Director's key: www.{area} A and AAAA, and the TXT that holds the\n\
         \t// epoch of the decision behind them (the fence against older decisions).\n\
         \tupdate-policy {{ grant {key} name www.{area}. A AAAA; grant {key} name {epoch}.{area}. TXT; }};\n\
         }};\n"
    );
    Ok(BindConfig {
        zone_statements,
        site_zone_file: files.site,
        area_zone_file: files.area,
    })
}

/// Sections as one text, each under a `// ---- NAME ----` header ([`split_rendered`] cuts
/// it back).
pub(super) fn render_sections<'a>(
    sections: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut out = String::new();
    for (name, body) in sections {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let _ = writeln!(out, "// ---- {name} ----");
        out.push_str(body);
    }
    out
}

/// A zone file for `zone`: the same records the embedded server serves, with their TTLs.
fn zone_file(zone: &ZoneContents, comment: &str) -> String {
    let mut out = format!("; {comment}\n");
    let records = zone
        .records
        .iter()
        .chain(zone.cuts.iter().flat_map(|c| c.ns.iter()))
        .chain(zone.glue.iter());
    for r in records {
        let _ = writeln!(out, "{}", record_line(r));
    }
    out
}

/// One record as a master-file line (RFC 1035 §5.1): owner, TTL, class, type, data.
fn record_line(r: &Record) -> String {
    let data = match r.data() {
        RData::SOA(soa) => format!(
            "{} {} ( {} {} {} {} {} )",
            soa.mname().to_ascii(),
            soa.rname().to_ascii(),
            soa.serial(),
            soa.refresh(),
            soa.retry(),
            soa.expire(),
            soa.minimum()
        ),
        RData::NS(n) => n.0.to_ascii(),
        RData::CNAME(c) => c.0.to_ascii(),
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        other => other.to_string(),
    };
    format!(
        "{}\t{}\tIN\t{}\t{data}",
        r.name().to_ascii(),
        r.ttl(),
        r.record_type()
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::director::zone::RecordTtl;

    /// Area 1 of site example.com, its name server at 127.0.0.1 (the generators' tests).
    pub(in crate::director) fn area_1_layout() -> ZoneLayout {
        ZoneLayout::new(
            "example.com",
            "area-1.example.com",
            None,
            vec!["127.0.0.1".parse().unwrap()],
            RecordTtl::DEFAULT,
        )
        .unwrap()
    }

    #[test]
    fn narrow_policy_and_cname_layout() {
        let layout = area_1_layout();
        let c = bind_config(
            &layout,
            "walrus-area1",
            Path::new("/z"),
            &WwwRecords::default(),
        )
        .unwrap();
        assert!(c.zone_statements.contains(
            "update-policy { grant walrus-area1 name www.area-1.example.com. A AAAA; grant walrus-area1 name _walrus-epoch.area-1.example.com. TXT; };"
        ));
        assert!(!c.zone_statements.contains("allow-update"));
        assert_eq!(c.zone_statements.matches("update-policy").count(), 1);
        assert!(c
            .site_zone_file
            .1
            .contains("www.example.com.\t30\tIN\tCNAME\twww.area-1.example.com."));
        assert!(c
            .area_zone_file
            .1
            .contains("ns.area-1.example.com.\t30\tIN\tA\t127.0.0.1"));
        assert!(c
            .site_zone_file
            .1
            .contains("ns.area-1.example.com.\t30\tIN\tA\t127.0.0.1"));
        assert!(c.render().contains("---- area-1.example.com.zone ----"));
        let parts = split_rendered(&c.render());
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["named.conf", "example.com.zone", "area-1.example.com.zone"]
        );
        assert!(parts[2].1.contains("www.area-1.example.com.") || parts[2].1.contains("SOA"));
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
