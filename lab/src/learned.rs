//! Learned steering in the lab (issue 21): what the area servers say they learned and
//! did (their `/status` `steering` block and `/metrics` counters, scraped during the run),
//! and the spoofing test.
//!
//! The spoofing test ([`Spoof`]): while the real runtime runs with learned steering, a
//! *forger* in the last region sends the area servers queries whose source addresses are
//! not its own — one inside the *victim* prefix (region 1's resolvers, `10.200.1.0/24`)
//! and one in each of `sources` made-up prefixes (`10.77.i.1`). The addresses are bound
//! on the forger's own loopback, so the queries leave with those sources over the
//! backbone, and every reply or probe the area servers send to them goes where the
//! address really routes: the victim prefix's to region 1 (through its delay line), the
//! made-up ones nowhere. The forger never sees an answer, as on the Internet.
//! Meanwhile an *observer* in region 1 asks every area server for `www.<site>` from
//! another address of the victim prefix every 500 ms and records which area's zone the
//! answer names. Pass: no answer for the victim prefix moves after the spoofing starts,
//! and each area's probes during the spoofing stay within the proximity table's budget
//! (one per prefix per [`PROBE_INTERVAL_SECS`], at most [`PROBES_PER_SECOND`] a second).
//!
//! Roles run inside the namespaces (hidden `walrus-lab` subcommands): [`scrape`] (region
//! 1, reaches every area's status page on the backbone), [`observe`], [`spoof`].

use super::analysis::read_jsonl;
use super::clients::stub_query_from;
use super::relay::now_ms;
use super::runtime::{nodes, status_doc, LabNode};
use super::spec::{Area, LabSpec, Region, SITE};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proximity table's default least time between two probes of one prefix (walrus-
/// actors `director::proximity`), seconds: the budget the spoofing test checks. (An area
/// probes a prefix every `learn_interval`, 5 s, until it holds `min_samples` fresh samples
/// of it; the forger starts long after that, and its own sources never answer: once
/// unanswered, an address is not probed again for this interval.)
pub const PROBE_INTERVAL_SECS: f64 = 30.0;
/// The proximity table's default most probes a second in all (also the burst).
pub const PROBES_PER_SECOND: f64 = 100.0;

/// The spoofing test of a run (see the module doc); times are seconds after the clients'
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spoof {
    /// When the forger starts.
    pub at_secs: u32,
    /// For how long.
    pub secs: u32,
    /// Forged queries a second, all sources and areas together.
    pub rate: u32,
    /// Made-up prefixes (`10.77.i.1`, i < sources) besides the victim's.
    pub sources: u32,
}

impl Spoof {
    /// The victim: region 1.
    pub const VICTIM: Region = Region(1);
    /// The forged address inside the victim's prefix.
    pub fn victim_forged() -> Ipv4Addr {
        Ipv4Addr::new(10, 200, Self::VICTIM.0, 250)
    }
    /// The observer's address (also in the victim's prefix).
    pub fn observer() -> Ipv4Addr {
        Ipv4Addr::new(10, 200, Self::VICTIM.0, 251)
    }
    /// Every forged source.
    pub fn forged(&self) -> Vec<Ipv4Addr> {
        let mut v = vec![Self::victim_forged()];
        v.extend((0..self.sources.min(250)).map(|i| Ipv4Addr::new(10, 77, i as u8, 1)));
        v
    }
    /// The forger's region: the last one.
    pub fn forger(spec: &LabSpec) -> Region {
        Region(spec.regions)
    }
}

/// What one area's Director said at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scrape {
    /// Unix ms.
    pub t: u64,
    /// Why it was taken (`start`, `spoof-start`, `spoof-end`, `end`).
    pub label: String,
    /// The area.
    pub area: u8,
    /// `walrus_steering_table_prefixes`.
    pub table_prefixes: Option<f64>,
    /// `walrus_steering_answers_total{by="learned"}`.
    pub answers_learned: Option<f64>,
    /// `... {by="override"}`.
    pub answers_override: Option<f64>,
    /// `... {by="paper"}`.
    pub answers_paper: Option<f64>,
    /// `walrus_steering_probes_total`.
    pub probes: Option<f64>,
    /// The `/status` document's `steering` block, as it was.
    pub status: Option<serde_json::Value>,
}

/// What one area answered the victim prefix: the area named before the spoofing, and
/// every different answer from its start on (ms after the start, area named).
pub type VictimAnswers = (Option<u8>, Vec<(i64, Option<u8>)>);

/// What the spoofing test found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoofOutcome {
    /// The test.
    pub spoof: Spoof,
    /// Forged queries sent.
    pub sent: u64,
    /// Start and end, Unix ms.
    pub start: u64,
    /// End.
    pub end: u64,
    /// Per area asked: the area its last answer to the observer before the spoofing named,
    /// and every different answer from the start on (ms after the start, area named).
    pub victim_answers: BTreeMap<u8, VictimAnswers>,
    /// Whether some answer for the victim prefix moved from the start on.
    pub moved: bool,
    /// Whether some answer for the victim prefix moved, from the start on, to an area that
    /// is not its nearest: what a forger is after. A move *to* the nearest area is the
    /// table still learning (samples of the victim's own resolvers keep coming, one round
    /// per probe interval), which [`SpoofOutcome::moved`] cannot tell from an attack.
    #[serde(default)]
    pub moved_away: bool,
    /// Per area: probes sent during the spoofing (from the scrapes at its start and end).
    pub probes_during: BTreeMap<u8, f64>,
    /// Per area: the budget for that window: prefixes that queried (forged + the regions'
    /// resolvers) × (window / probe interval + 1), capped at the global rate × window +
    /// burst.
    pub budget: f64,
    /// Whether every area stayed within the budget (`None`: no probe counter).
    pub within_budget: Option<bool>,
}

/// Learned steering's figures of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeringOutcome {
    /// Every scrape.
    pub scrapes: Vec<Scrape>,
    /// Whether the Directors expose the steering counters at all.
    pub exposed: bool,
    /// The spoofing test, when the run had one.
    pub spoof: Option<SpoofOutcome>,
}

/// One observation of the observer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Unix ms.
    pub t: u64,
    /// The area server asked.
    pub asked: u8,
    /// The area whose zone the answer's CNAME named (`None`: no answer or no CNAME).
    pub named: Option<u8>,
}

/// The forger's report (`spoof.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoofSent {
    /// Queries sent.
    pub sent: u64,
    /// Unix ms.
    pub start: u64,
    /// Unix ms.
    pub end: u64,
}

/// The learned-steering figures of a finished run, from its records (`None` when the run
/// scraped nothing).
pub fn outcome(spec: &LabSpec) -> Option<SteeringOutcome> {
    let scrapes: Vec<Scrape> = read_jsonl(&spec.dir.join("steering.jsonl"));
    if scrapes.is_empty() {
        return None;
    }
    let exposed = scrapes
        .iter()
        .any(|s| s.table_prefixes.is_some() || s.status.is_some());
    let spoof = spec.spoof.and_then(|sp| {
        let sent: SpoofSent =
            serde_json::from_slice(&std::fs::read(spec.dir.join("spoof.json")).ok()?).ok()?;
        let obs: Vec<Observation> = read_jsonl(&spec.dir.join("observe.jsonl"));
        Some(spoof_outcome(spec, sp, sent, &obs, &scrapes))
    });
    Some(SteeringOutcome {
        scrapes,
        exposed,
        spoof,
    })
}

/// The spoofing test's verdict from its records.
pub fn spoof_outcome(
    spec: &LabSpec,
    spoof: Spoof,
    sent: SpoofSent,
    obs: &[Observation],
    scrapes: &[Scrape],
) -> SpoofOutcome {
    let mut victim_answers = BTreeMap::new();
    let mut moved = false;
    let nearest = spec.nearest(Spoof::VICTIM).0;
    let mut moved_away = false;
    for a in spec.all_areas() {
        let mine: Vec<&Observation> = obs.iter().filter(|o| o.asked == a.0).collect();
        let before = mine
            .iter()
            .rfind(|o| o.t < sent.start && o.named.is_some())
            .and_then(|o| o.named);
        let mut changes: Vec<(i64, Option<u8>)> = Vec::new();
        let mut last = before;
        for o in mine
            .iter()
            .filter(|o| o.t >= sent.start && o.named.is_some())
        {
            if o.named != last {
                changes.push((o.t as i64 - sent.start as i64, o.named));
                last = o.named;
            }
        }
        moved |= !changes.is_empty();
        moved_away |= changes.iter().any(|(_, a)| *a != Some(nearest));
        victim_answers.insert(a.0, (before, changes));
    }
    let probes_at = |label: &str, area: u8| {
        scrapes
            .iter()
            .find(|s| s.label == label && s.area == area)
            .and_then(|s| s.probes)
    };
    let mut probes_during = BTreeMap::new();
    for a in spec.all_areas() {
        if let (Some(x), Some(y)) = (probes_at("spoof-start", a.0), probes_at("spoof-end", a.0)) {
            probes_during.insert(a.0, y - x);
        }
    }
    let window = sent.end.saturating_sub(sent.start) as f64 / 1000.0;
    let prefixes = spoof.forged().len() as f64 + f64::from(spec.regions);
    let budget = (prefixes * (window / PROBE_INTERVAL_SECS + 1.0).floor())
        .min(PROBES_PER_SECOND * window + PROBES_PER_SECOND);
    let within_budget =
        (!probes_during.is_empty()).then(|| probes_during.values().all(|p| *p <= budget));
    SpoofOutcome {
        spoof,
        sent: sent.sent,
        start: sent.start,
        end: sent.end,
        victim_answers,
        moved,
        moved_away,
        probes_during,
        budget,
        within_budget,
    }
}

/// The value of the first sample of `name` (with exactly `labels`, e.g. `{by="learned"}`,
/// or none) in a Prometheus text exposition.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{labels}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.trim().rsplit_once(' ')?;
            (k == key).then_some(v)
        })
        .and_then(|v| v.parse().ok())
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        text.starts_with("HTTP/1.1 200")
            .then(|| text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
            .flatten()
    };
    tokio::time::timeout(Duration::from_millis(800), get)
        .await
        .ok()
        .flatten()
}

/// The `scrape` role (region 1): every area Director's `/metrics` and `/status`, one
/// [`Scrape`] each appended to `<dir>/steering.jsonl`.
pub async fn scrape(spec: LabSpec, label: &str) -> anyhow::Result<()> {
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.dir.join("steering.jsonl"))?;
    let directors: Vec<LabNode> = nodes(&spec).into_iter().filter(|n| n.index == 1).collect();
    for d in directors {
        let Some(addr) = d.status() else { continue };
        let m = http_get(addr, "/metrics").await.unwrap_or_default();
        let by = |b: &str| {
            metric(
                &m,
                "walrus_steering_answers_total",
                &format!("{{by=\"{b}\"}}"),
            )
        };
        let s = Scrape {
            t: now_ms(),
            label: label.to_owned(),
            area: d.area.0,
            table_prefixes: metric(&m, "walrus_steering_table_prefixes", ""),
            answers_learned: by("learned"),
            answers_override: by("override"),
            answers_paper: by("paper"),
            probes: metric(&m, "walrus_steering_probes_total", ""),
            status: status_doc(addr)
                .await
                .and_then(|d| d.get("steering").cloned()),
        };
        writeln!(out, "{}", serde_json::to_string(&s)?)?;
    }
    Ok(())
}

/// The `observe` role (region 1): every 500 ms for `secs`, asks each area's server for
/// `www.<site>` from the observer's address ([`Spoof::observer`], bound on region 1's
/// loopback by the orchestrator); appends each answer to `<dir>/observe.jsonl`.
pub async fn observe(spec: LabSpec, secs: u64) -> anyhow::Result<()> {
    let mut out = std::fs::File::create(spec.dir.join("observe.jsonl"))?;
    let from = SocketAddr::new(Spoof::observer().into(), 0);
    let name = format!("www.{SITE}.");
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        for a in spec.all_areas() {
            let ns = SocketAddr::new(a.backbone().into(), 53);
            let named = stub_query_from(from, ns, &name, RecordType::A, Duration::from_millis(400))
                .await
                .ok()
                .and_then(|ans| ans.area.map(|x: Area| x.0));
            let o = Observation {
                t: now_ms(),
                asked: a.0,
                named,
            };
            writeln!(out, "{}", serde_json::to_string(&o)?)?;
        }
        out.flush()?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The `spoof` role (the forger's region): for `spoof.secs`, `spoof.rate` queries a second
/// for `www.<site>` to the area servers in turn, from the forged sources in turn (bound on
/// the forger's loopback by the orchestrator); never reads a reply (none comes: they go
/// where the addresses really are). Writes `<dir>/spoof.json`.
pub async fn spoof(spec: LabSpec, spoof: Spoof) -> anyhow::Result<()> {
    let mut socks = Vec::new();
    for ip in spoof.forged() {
        socks.push(tokio::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0)).await?);
    }
    let areas: Vec<SocketAddr> = spec
        .all_areas()
        .map(|a| SocketAddr::new(a.backbone().into(), 53))
        .collect();
    let name = Name::from_ascii(format!("www.{SITE}."))?;
    let start = now_ms();
    let gap = Duration::from_secs_f64(1.0 / f64::from(spoof.rate.max(1)));
    let end = tokio::time::Instant::now() + Duration::from_secs(u64::from(spoof.secs));
    let mut tick = tokio::time::interval(gap);
    let mut sent: u64 = 0;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        let i = sent as usize;
        let mut m = Message::new();
        m.set_id(i as u16).set_recursion_desired(false);
        m.add_query(Query::query(name.clone(), RecordType::A));
        let sock = &socks[i % socks.len()];
        let to = areas[(i / socks.len()) % areas.len()];
        if sock.send_to(&m.to_vec()?, to).await.is_ok() {
            sent += 1;
        }
    }
    let report = SpoofSent {
        sent,
        start,
        end: now_ms(),
    };
    std::fs::write(spec.dir.join("spoof.json"), serde_json::to_vec(&report)?)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What an area measured to a region's resolvers: the median time of a TCP connect to
/// port 53 (SYN → SYN-ACK or RST; the resolvers listen there), the round trip a server
/// can time itself, against the latency matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredRtt {
    /// The area measuring.
    pub area: u8,
    /// The region measured.
    pub region: u8,
    /// Median connect time over the region's resolvers, 3 tries each, ms.
    pub ms: f64,
    /// The latency matrix's RTT, ms.
    pub matrix_ms: u32,
}

/// The `measure-rtt` role (area `area`'s namespace): [`MeasuredRtt`] to every region,
/// appended to `<dir>/rtt.jsonl`.
pub async fn measure_rtt(spec: LabSpec, area: Area) -> anyhow::Result<()> {
    let mut lines = String::new();
    for r in spec.all_regions() {
        let mut times = Vec::new();
        for k in &spec.resolvers {
            for _ in 0..3 {
                let to = SocketAddr::new(k.addr(r).into(), 53);
                let t0 = std::time::Instant::now();
                let c = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(to),
                )
                .await;
                // Connected or refused: either way one round trip.
                if matches!(c, Ok(Ok(_)))
                    || matches!(&c, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused)
                {
                    times.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        times.sort_by(f64::total_cmp);
        if let Some(ms) = times.get(times.len() / 2) {
            let m = MeasuredRtt {
                area: area.0,
                region: r.0,
                ms: *ms,
                matrix_ms: spec.rtt(r, area),
            };
            lines.push_str(&serde_json::to_string(&m)?);
            lines.push('\n');
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.dir.join("rtt.jsonl"))?;
    out.write_all(lines.as_bytes())?;
    Ok(())
}

/// The `ip` batch that binds the forged sources on the forger's loopback.
pub fn forged_batch(spoof: &Spoof) -> String {
    spoof
        .forged()
        .iter()
        .map(|a| format!("addr add {a}/32 dev lo\n"))
        .collect()
}

/// Whether a `walrus-node` binary accepts `[dns.learned]`: `Err` with its words when
/// `check-config` refuses the run's configuration.
pub fn learned_supported(
    spec: &LabSpec,
    node_bin: &Path,
) -> Result<std::path::PathBuf, super::netns::LabError> {
    super::runtime::prepare(spec, node_bin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::base_spec;
    use crate::spec::Mode;

    #[test]
    fn metrics_are_read_by_name_and_labels() {
        let text = "# HELP x\nwalrus_steering_table_prefixes 3\n\
                    walrus_steering_answers_total{by=\"learned\"} 40\n\
                    walrus_steering_answers_total{by=\"paper\"} 7\n";
        assert_eq!(
            metric(text, "walrus_steering_table_prefixes", ""),
            Some(3.0)
        );
        assert_eq!(
            metric(text, "walrus_steering_answers_total", "{by=\"paper\"}"),
            Some(7.0)
        );
        assert_eq!(
            metric(text, "walrus_steering_answers_total", "{by=\"override\"}"),
            None
        );
    }

    fn scrape(label: &str, area: u8, probes: f64) -> Scrape {
        Scrape {
            t: 0,
            label: label.into(),
            area,
            table_prefixes: Some(3.0),
            answers_learned: None,
            answers_override: None,
            answers_paper: None,
            probes: Some(probes),
            status: None,
        }
    }

    #[test]
    fn a_moved_victim_answer_and_a_probe_flood_are_caught() {
        let spec = base_spec(Path::new("/tmp/x"), "t", 2, 2, Mode::Learned);
        let sp = Spoof {
            at_secs: 10,
            secs: 20,
            rate: 200,
            sources: 8,
        };
        let sent = SpoofSent {
            sent: 4000,
            start: 10_000,
            end: 30_000,
        };
        let o = |t, asked, named| Observation {
            t,
            asked,
            named: Some(named),
        };
        let steady = vec![
            o(9_000, 1, 1),
            o(9_000, 2, 1),
            o(20_000, 1, 1),
            o(20_000, 2, 1),
        ];
        let scrapes = vec![
            scrape("spoof-start", 1, 10.0),
            scrape("spoof-end", 1, 20.0),
            scrape("spoof-start", 2, 10.0),
            scrape("spoof-end", 2, 21.0),
        ];
        let ok = spoof_outcome(&spec, sp, sent, &steady, &scrapes);
        assert!(!ok.moved && !ok.moved_away);
        // 9 forged prefixes + 2 regions, each at most once per 30 s: 11 in 20 s.
        assert_eq!(ok.budget, 11.0);
        assert_eq!(ok.within_budget, Some(true));
        // Planted faults: area 2 answers the victim with area 2 after the start; area 1
        // sent 500 probes.
        let mut bad = steady.clone();
        bad.push(o(25_000, 2, 2));
        let mut flood = scrapes.clone();
        flood[1].probes = Some(510.0);
        let caught = spoof_outcome(&spec, sp, sent, &bad, &flood);
        assert!(caught.moved && caught.moved_away);
        assert_eq!(caught.victim_answers[&2].1, vec![(15_000, Some(2))]);
        assert_eq!(caught.within_budget, Some(false));
        // Learning, not an attack: area 2 answered a farther area before and moves to the
        // nearest (area 1) after the start: moved, not away.
        let learning = vec![o(9_000, 1, 1), o(9_000, 2, 2), o(25_000, 2, 1)];
        let l = spoof_outcome(&spec, sp, sent, &learning, &scrapes);
        assert!(l.moved && !l.moved_away);
    }
}
