//! `walrus-node status`: fetching a node's `/status` (plain or TLS, with a token) and the
//! table it prints.

use super::*;

/// Fetches `/status` from `addr`.
pub async fn fetch(addr: SocketAddr) -> Result<StatusDoc, StatusError> {
    fetch_with(addr, &FetchOptions::default()).await
}

/// How `walrus-node status` reaches a node whose HTTP side has `[http]` TLS or a token.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// HTTPS, verified against this CA file (the cluster's `ca.pem` for `tls =
    /// "cluster"`); None: plain HTTP.
    pub https_ca: Option<std::path::PathBuf>,
    /// The name the node's certificate carries (its node name for `tls = "cluster"`).
    pub server_name: Option<String>,
    /// The bearer token.
    pub token: Option<String>,
}

/// Reads `/status` of the node at `addr` as `options` say.
pub async fn fetch_with(
    addr: SocketAddr,
    options: &FetchOptions,
) -> Result<StatusDoc, StatusError> {
    get_json(addr, "/status", options).await
}

/// Reads `/steering?resolver=ADDR` of the node at `addr`: how its name servers answer
/// `resolver` and why (`walrus-node status --resolver`).
pub async fn fetch_resolver(
    addr: SocketAddr,
    resolver: std::net::IpAddr,
    options: &FetchOptions,
) -> Result<ResolverDoc, StatusError> {
    get_json(addr, &format!("/steering?resolver={resolver}"), options).await
}

async fn get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    options: &FetchOptions,
) -> Result<T, StatusError> {
    use walrus_actors::reporter::http::{Page, TlsOptions};
    let scheme = if options.https_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}{path}");
    let err = |detail: String| StatusError::Fetch {
        url: url.clone(),
        detail,
    };
    let tls = TlsOptions {
        ca_file: options.https_ca.clone(),
        server_name: options.server_name.clone(),
        client_cert: None,
    };
    let mut page = Page::new(&url, Duration::from_secs(5), &tls).map_err(|e| err(e.to_string()))?;
    if let Some(token) = &options.token {
        page = page
            .with_header("Authorization", &format!("Bearer {token}"))
            .map_err(|e| err(e.to_string()))?;
    }
    let answer = page.get().await.map_err(|e| err(e.to_string()))?;
    if answer.status == 401 {
        return Err(err(
            "401: the node asks for its token (--token-file, the node's [http] token_file)".into(),
        ));
    }
    if answer.status != 200 {
        return Err(err(format!("status {}", answer.status)));
    }
    serde_json::from_str(&answer.body).map_err(|source| StatusError::Parse {
        url: url.clone(),
        source,
    })
}

/// `walrus-node status --resolver`: one block per name server of the node.
pub fn render_resolver(doc: &ResolverDoc) -> String {
    let mut out = format!("resolver {}\n", doc.resolver);
    if doc.servers.is_empty() {
        out += "  this node runs no embedded name server\n";
    }
    for s in &doc.servers {
        let _ = writeln!(
            out,
            "  area {} answers: www -> {} (by {}: {})",
            s.area, s.steered_to, s.by, s.why
        );
        match &s.prefix {
            Some(p) => {
                let _ = writeln!(out, "    learned entry {p}:");
                for a in &s.areas {
                    let rtt = a
                        .rtt_ms
                        .map_or_else(|| "too few samples".to_owned(), |r| format!("{r:.1} ms"));
                    let age = a
                        .newest_age_s
                        .map_or_else(String::new, |s| format!(", newest {s:.0} s ago"));
                    let _ = writeln!(
                        out,
                        "      {:<12} median TC round trip {rtt} ({} fresh samples{age})",
                        a.area, a.samples
                    );
                }
            }
            None => out += "    no learned entry for its prefix\n",
        }
    }
    out
}

/// One line: this node's config digest and, when the nodes run different files, which
/// node runs which ("config digests DIFFER: 1a2b… n-1 n-2 | 3c4d… n-3").
pub fn describe_digests(doc: &StatusDoc) -> String {
    let mut by_digest: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, d) in &doc.config_digests {
        by_digest.entry(d.as_str()).or_default().push(node.as_str());
    }
    if by_digest.len() <= 1 {
        let n = doc.config_digests.len().max(1);
        return format!(
            "config digest {} (same on the {n} node(s) heard)",
            doc.config_digest
        );
    }
    let groups: Vec<String> = by_digest
        .iter()
        .map(|(d, nodes)| {
            let mine = if *d == doc.config_digest {
                " (this node)"
            } else {
                ""
            };
            format!("{d}{mine}: {}", nodes.join(" "))
        })
        .collect();
    format!("config digests DIFFER: {}", groups.join(" | "))
}

/// The table `walrus-node status` prints.
pub fn render_table(doc: &StatusDoc) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "node {}   site {}", doc.node, doc.site);
    let _ = writeln!(
        t,
        "master {}{}   round {}",
        doc.master.as_deref().unwrap_or("(none)"),
        if doc.is_master { " (this node)" } else { "" },
        doc.round.map_or_else(|| "-".to_owned(), |r| r.to_string())
    );
    if let Some(v) = &doc.view {
        let _ = writeln!(t, "view {} members {}", v.id, v.members.join(", "));
    }
    if let Some(c) = &doc.client {
        let _ = writeln!(
            t,
            "client of the group, attached to {}",
            c.attached_to.as_deref().unwrap_or("(none: connecting)")
        );
    }
    if doc.client.is_none() && !doc.clients.is_empty() {
        let links: Vec<String> = doc
            .clients
            .iter()
            .map(|c| {
                format!(
                    "{} → {}",
                    c.node,
                    c.attached_to.as_deref().unwrap_or("(connecting)")
                )
            })
            .collect();
        let _ = writeln!(t, "clients {}", links.join(", "));
    }
    if let Some(os) = &doc.os_source {
        let _ = writeln!(t, "os statistics from {os}");
    }
    let _ = writeln!(t, "{}", describe_digests(doc));
    for a in &doc.actors {
        let _ = writeln!(
            t,
            "actor {:<16} restarts {}   mailbox {}/{} (full {}){}",
            a.role,
            a.restarts,
            a.mailbox_depth,
            a.mailbox_capacity,
            a.mailbox_full,
            a.last_cause
                .as_ref()
                .map(|c| format!("   last cause: {c}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "{:<10} {:<10} {:<10} answer", "area", "home", "cluster");
    for a in &doc.areas {
        let _ = writeln!(
            t,
            "{:<10} {:<10} {:<10} {}{}",
            a.name,
            a.home_cluster,
            a.cluster.as_deref().unwrap_or("-"),
            a.answer.join(" "),
            a.dns
                .as_ref()
                .map(|d| format!("   [dns: {d}]"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "{:<10} {:<10} {:<28} {:<6} generation",
        "server", "cluster", "state", "load"
    );
    for s in &doc.servers {
        let _ = writeln!(
            t,
            "{:<10} {:<10} {:<28} {:<6} {}",
            s.name,
            s.cluster,
            s.state,
            s.load.map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
            match (s.generation, s.generation_lag) {
                (Some(g), Some(l)) => format!("{g} (lag {l})"),
                (Some(g), None) => g.to_string(),
                _ => "-".to_owned(),
            }
        );
    }
    if let Some(r) = &doc.replication {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "replicator {}: generation {} newest {} lag {}   pulls {} failures {}{}",
            r.role,
            r.generation
                .map_or_else(|| "-".to_owned(), |g| g.to_string()),
            r.newest.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            r.lag.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            r.pulls,
            r.failures,
            r.last_error
                .as_ref()
                .map(|e| format!("   last error: {e}"))
                .unwrap_or_default()
        );
    }
    if !doc.overrides.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "operator overrides:");
        for o in &doc.overrides {
            let _ = writeln!(t, "  {o}");
        }
    }
    if !doc.events.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "last decisions:");
        for e in &doc.events {
            let _ = writeln!(t, "  {e}");
        }
    }
    t
}
