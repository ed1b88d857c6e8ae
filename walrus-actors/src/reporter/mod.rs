//! The Reporter (paper §4): gathers OS and web-server statistics every `interval` and
//! answers a Controller's round request at once from the latest ones.
//!
//! Like the paper, it is in three pieces:
//!
//! ```text
//!   /proc/{stat,meminfo,vmstat} ──> os      (Linux-specific reading, pure parsers)
//!   status page / health probe  ──> web     (WebReader trait: nginx, Apache, probe)
//!   bypass file                 ──> bypass
//!                                    │ every interval: gatherer task (this module)
//!                                    v
//!                              state::ReporterState  (platform-independent, sans-IO:
//!                                    │                deltas, TEMPFAIL / BYPASS / PANIC)
//!                                    v  watch channel: latest Snapshot
//!   round request ──> ReporterHandle::report(round) ──> model::Report (no reading here)
//! ```
//!
//! The gcs wiring is the actor's job and stays thin:
//! - start: [`spawn`]`(config, shutdown)` on the node's tokio runtime gives a
//!   [`ReporterHandle`] (cheap to clone, `Send`);
//! - join `Reporters`; on a Controller's round request for round `r`, multicast
//!   `handle.report(r)` on `Controllers` at once (it only reads the latest snapshot);
//! - a Replicator on the same host calls [`ReporterHandle::set_generation`];
//! - the status page shows [`ReporterHandle::snapshot`] (condition, since which
//!   gathering, bypass);
//! - `walrus-node bypass on|off [--for D]` calls [`bypass::write_bypass`] /
//!   [`bypass::clear_bypass`] on the configured `bypass_file`.
//!
//! **Fast failover** (issue 23, beyond the paper; [`ReporterConfig::fast_failover`], on by
//! default): between readings the gatherer probes the web server every `probe_interval`
//! (100 ms) with a bare TCP connect to the status page's host and port
//! ([`http::HttpUrl::connect_probe`]: no request, so the hit counter is untouched). The
//! sans-IO [`state::ReporterState`] decides (rules 4-6 there): a refused probe is PANIC at
//! once, and the first fall in a flap window raises an *urgent* report, which the actor
//! multicasts on `Controllers` as [`crate::wire::WalrusMessage::Urgent`] at once, outside
//! the round ([`ReporterHandle::next_urgent`]); a flapping server is held PANIC. Probes and
//! readings share one task, so a reading that hangs (at most `web_timeout`) delays the
//! probes behind it; a killed server is refused at once and never hangs a reading.
//! `None` gives the paper's exact behaviour: readings only, reports only on request.
//!
//! Not done here: non-Linux OS statistics (every report is TEMPFAIL there, since `/proc`
//! is missing).

pub mod actor;
pub mod bypass;
pub mod cgroup;
pub mod http;
pub mod knobs;
pub mod os;
pub mod state;
pub mod web;

use crate::model::{Generation, Report, Round, ServerName};
use state::{BypassStatus, FlapDamping, ProbeResult, ReporterState, Snapshot};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use web::{AnyWebReader, ApacheReader, NginxReader, ProbeReader, WebReader};

/// Where the Reporter reads its web server's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebSource {
    /// nginx with `stub_status`, e.g. `http://127.0.0.1/nginx_status`.
    Nginx {
        /// The status page.
        url: String,
        /// Maximum workers (nginx does not say): worker_processes × worker_connections,
        /// or what the operator considers the server's capacity.
        max_workers: u32,
    },
    /// Apache with `mod_status` and `ExtendedStatus On`, e.g.
    /// `http://127.0.0.1/server-status?auto`.
    Apache {
        /// The status page, with `?auto`.
        url: String,
        /// Maximum workers; default (None): busy + idle workers from the scoreboard, i.e.
        /// the workers started so far. Set it to `MaxRequestWorkers` to be exact.
        max_workers: Option<u32>,
    },
    /// A plain health probe for servers without a status page (no hit counts).
    Probe {
        /// The page to GET.
        url: String,
        /// The status code expected; None: any 2xx.
        expect_status: Option<u16>,
        /// Text the body must contain; None: any body.
        body_contains: Option<String>,
        /// Maximum workers, from configuration.
        max_workers: u32,
    },
}

impl WebSource {
    /// The page read (its host and port are what the liveness probe connects to).
    pub fn url(&self) -> &str {
        match self {
            WebSource::Nginx { url, .. }
            | WebSource::Apache { url, .. }
            | WebSource::Probe { url, .. } => url,
        }
    }
}

/// Fast failover's settings in the Reporter (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastFailoverConfig {
    /// Time between two liveness probes. Default 100 ms.
    pub probe_interval: Duration,
    /// How long one probe's connect may take; `panic_after` probes in a row without an
    /// answer are PANIC (a refused one is at once). Default 200 ms.
    pub probe_timeout: Duration,
    /// Flap damping: window and hold (defaults 30 s and 10 s).
    pub damping: FlapDamping,
}

impl Default for FastFailoverConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(200),
            damping: FlapDamping::default(),
        }
    }
}

/// How a Reporter runs. Build with [`ReporterConfig::new`], which sets every default.
#[derive(Debug, Clone, PartialEq)]
pub struct ReporterConfig {
    /// The web server reported on, as named in the site configuration.
    pub server: ServerName,
    /// Where its figures come from.
    pub web: WebSource,
    /// How often statistics are gathered. Default 1 s. Each report covers one interval.
    pub interval: Duration,
    /// How long one web reading may take (connect, send, read). Default (None): the
    /// interval, so a hung server cannot delay the next gathering by more than one.
    pub web_timeout: Option<Duration>,
    /// Web readings failing in a row (other than connection refused, which is PANIC at
    /// once) before PANIC; fewer are TEMPFAIL. Default 3.
    pub panic_after: u32,
    /// A snapshot older than this is reported as TEMPFAIL (the gatherer is stuck).
    /// Default (None): three intervals.
    pub stale_after: Option<Duration>,
    /// The operator's bypass file (see [`bypass`]). Default `/var/lib/walrus/bypass`.
    pub bypass_file: PathBuf,
    /// The procfs directory. Default `/proc`; tests point it elsewhere.
    pub proc_root: PathBuf,
    /// Which OS reader: procfs on Linux and sysinfo elsewhere (default), or either one
    /// forced (`[reporter] os_stats = "procfs" | "portable"`).
    pub os_stats: os::OsSource,
    /// How `https://` status pages and probes are verified. Default: the system CA
    /// bundle, the name in the URL.
    pub tls: http::TlsOptions,
    /// Fast failover: liveness probes, urgent reports, flap damping. Default: on, with
    /// [`FastFailoverConfig::default`]. None: the paper's behaviour.
    pub fast_failover: Option<FastFailoverConfig>,
}

impl ReporterConfig {
    /// The defaults documented on each field.
    pub fn new(server: ServerName, web: WebSource) -> Self {
        let knobs = knobs::ReporterKnobs::default();
        Self {
            server,
            web,
            interval: Duration::from_secs(1),
            web_timeout: None,
            panic_after: knobs.panic_after,
            stale_after: None,
            bypass_file: knobs.bypass_file,
            proc_root: PathBuf::from("/proc"),
            os_stats: knobs.os_stats,
            tls: http::TlsOptions::default(),
            fast_failover: Some(FastFailoverConfig::default()),
        }
    }

    /// The web timeout in force.
    pub fn effective_web_timeout(&self) -> Duration {
        self.web_timeout.unwrap_or(self.interval)
    }

    /// The staleness limit in force.
    pub fn effective_stale_after(&self) -> Duration {
        self.stale_after.unwrap_or(self.interval * 3)
    }

    /// Builds the web reader this configuration names.
    pub fn web_reader(&self) -> Result<AnyWebReader, ReporterError> {
        let timeout = self.effective_web_timeout();
        let parse = |url: &str| {
            http::Page::new(url, timeout, &self.tls).map_err(|source| ReporterError::BadUrl {
                server: self.server.clone(),
                source,
            })
        };
        Ok(match &self.web {
            WebSource::Nginx { url, max_workers } => {
                AnyWebReader::Nginx(NginxReader::new(parse(url)?, *max_workers))
            }
            WebSource::Apache { url, max_workers } => {
                AnyWebReader::Apache(ApacheReader::new(parse(url)?, *max_workers))
            }
            WebSource::Probe {
                url,
                expect_status,
                body_contains,
                max_workers,
            } => AnyWebReader::Probe(ProbeReader::new(
                parse(url)?,
                *expect_status,
                body_contains.clone(),
                *max_workers,
            )),
        })
    }

    fn validate(&self) -> Result<(), ReporterError> {
        if self.interval.is_zero() {
            return Err(ReporterError::Invalid {
                server: self.server.clone(),
                reason: "interval must be more than zero",
            });
        }
        if let Some(ff) = &self.fast_failover {
            let reason = if ff.probe_interval.is_zero() {
                Some("fast_failover probe_interval must be more than zero")
            } else if ff.probe_timeout.is_zero() {
                Some("fast_failover probe_timeout must be more than zero")
            } else if ff.damping.window.is_zero() {
                Some("fast_failover flap window must be more than zero")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ReporterError::Invalid {
                    server: self.server.clone(),
                    reason,
                });
            }
        }
        if self.panic_after == 0 {
            return Err(ReporterError::Invalid {
                server: self.server.clone(),
                reason: "panic_after must be at least 1",
            });
        }
        Ok(())
    }
}

/// Why a Reporter cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterError {
    /// The web source URL is not usable (or its TLS setup failed).
    #[error("reporter for {server}: {source}")]
    BadUrl {
        /// The server.
        server: ServerName,
        /// What is wrong.
        source: http::HttpError,
    },
    /// A setting is out of range.
    #[error("reporter for {server}: {reason}")]
    Invalid {
        /// The server.
        server: ServerName,
        /// What is wrong.
        reason: &'static str,
    },
    /// The OS reader could not be set up (sysinfo does not support this OS).
    #[error("reporter: OS statistics: {0}")]
    Os(#[from] os::OsError),
}

/// The request side of a running Reporter: cheap to clone, answers at once.
#[derive(Debug, Clone)]
pub struct ReporterHandle {
    server: ServerName,
    stale_after: Duration,
    latest: watch::Receiver<Snapshot>,
    /// Urgent reports raised so far (fast failover).
    urgent: watch::Receiver<u64>,
    generation: Arc<Mutex<Option<Generation>>>,
    /// The OS source as of the last gathering (the gatherer updates it: a cgroup limit
    /// can be set or lifted while the node runs).
    os_source: Arc<Mutex<String>>,
}

impl ReporterHandle {
    /// The report for `round`, from the latest snapshot (never reads statistics).
    pub fn report(&self, round: Round) -> Report {
        self.report_at(
            round,
            tokio::time::Instant::now().into_std(),
            SystemTime::now(),
        )
    }

    /// [`Self::report`] at given times (monotonic for staleness, wall for bypass expiry).
    pub fn report_at(&self, round: Round, now: std::time::Instant, wall: SystemTime) -> Report {
        self.latest.borrow().report(
            &self.server,
            round,
            self.generation(),
            now,
            wall,
            self.stale_after,
        )
    }

    /// The OS reader in use: "procfs" or "sysinfo", with "+cgroup2 (limits)" when the
    /// figures are against the process's cgroup v2 limits (for the status page).
    pub fn os_source(&self) -> String {
        match self.os_source.lock() {
            Ok(s) => s.clone(),
            // Poisoned: a writer panicked mid-assignment of a String; the value is whole.
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The latest snapshot (for status pages and tests).
    pub fn snapshot(&self) -> Snapshot {
        self.latest.borrow().clone()
    }

    /// Waits for the next gathering; Err when the gatherer has stopped.
    pub async fn next_gathering(&mut self) -> Result<Snapshot, watch::error::RecvError> {
        self.latest.changed().await?;
        Ok(self.latest.borrow_and_update().clone())
    }

    /// Waits for the next urgent report (fast failover: the server just went down) and
    /// returns it, built from the latest snapshot with `round` (the last round this
    /// Reporter answered; the master counts it whatever its round). Err when the gatherer
    /// has stopped.
    pub async fn next_urgent(&mut self, round: Round) -> Result<Report, watch::error::RecvError> {
        self.urgent.changed().await?;
        self.urgent.borrow_and_update();
        Ok(self.report(round))
    }

    /// Sets the content generation the host serves (from the Replicator beside it).
    pub fn set_generation(&self, generation: Option<Generation>) {
        match self.generation.lock() {
            Ok(mut g) => *g = generation,
            Err(poisoned) => *poisoned.into_inner() = generation,
        }
    }

    fn generation(&self) -> Option<Generation> {
        match self.generation.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// The gathering loop: reads everything every interval and publishes a snapshot.
pub struct Gatherer<W> {
    config: ReporterConfig,
    os: os::OsReader,
    /// Shared with the handle: the OS source after each reading.
    os_source: Arc<Mutex<String>>,
    web: W,
    state: ReporterState,
    publish: watch::Sender<Snapshot>,
    /// The liveness probe's target and settings (fast failover only).
    probe: Option<(http::HttpUrl, FastFailoverConfig)>,
    urgent: watch::Sender<u64>,
}

impl<W: WebReader> Gatherer<W> {
    /// A gatherer with any web reader (tests may pass their own) and its handle.
    pub fn with_reader(
        config: ReporterConfig,
        web: W,
    ) -> Result<(Self, ReporterHandle), ReporterError> {
        config.validate()?;
        let probe = match config.fast_failover {
            None => None,
            Some(ff) => {
                let url = config
                    .web
                    .url()
                    .parse::<http::HttpUrl>()
                    .map_err(|source| ReporterError::BadUrl {
                        server: config.server.clone(),
                        source,
                    })?;
                Some((url, ff))
            }
        };
        let os = os::OsReader::new(config.os_stats, config.proc_root.clone())?;
        let (publish, latest) = watch::channel(Snapshot::default());
        let (urgent, urgent_rx) = watch::channel(0u64);
        let handle = ReporterHandle {
            server: config.server.clone(),
            stale_after: config.effective_stale_after(),
            latest,
            urgent: urgent_rx,
            generation: Arc::new(Mutex::new(None)),
            os_source: Arc::new(Mutex::new(os.name().to_owned())),
        };
        let state = match config.fast_failover {
            Some(ff) => ReporterState::with_fast_failover(config.panic_after, ff.damping),
            None => ReporterState::new(config.panic_after),
        };
        let gatherer = Self {
            os_source: handle.os_source.clone(),
            os,
            state,
            config,
            web,
            publish,
            probe,
            urgent,
        };
        Ok((gatherer, handle))
    }

    /// One gathering: OS sample, web reading, bypass file; publishes the new snapshot.
    pub async fn gather_once(&mut self) -> Snapshot {
        let now = tokio::time::Instant::now().into_std();
        let os = self.os.read();
        if let Ok(mut s) = self.os_source.lock() {
            if *s != self.os.name() {
                *s = self.os.name().to_owned();
            }
        }
        let web = self.web.read().await;
        let bypass = BypassStatus::from_read(bypass::read_bypass(&self.config.bypass_file));
        let snapshot = self.state.handle_gathering(now, os, web, bypass).clone();
        self.publish.send_replace(snapshot.clone());
        self.raise_urgent();
        snapshot
    }

    /// One liveness probe (fast failover): publishes the snapshot only when it changed.
    /// None when fast failover is off.
    pub async fn probe_once(&mut self) -> Option<Snapshot> {
        let (url, ff) = self.probe.as_ref()?;
        let result = match url.connect_probe(ff.probe_timeout).await {
            Ok(()) => ProbeResult::Up,
            Err(e) if e.is_refused() => ProbeResult::Refused {
                reason: e.to_string(),
            },
            Err(e) => ProbeResult::NoAnswer {
                reason: e.to_string(),
            },
        };
        let now = tokio::time::Instant::now().into_std();
        let snapshot = self.state.handle_probe(now, result);
        if *snapshot != *self.publish.borrow() {
            self.publish.send_replace(snapshot.clone());
        }
        let snapshot = snapshot.clone();
        self.raise_urgent();
        Some(snapshot)
    }

    /// Hands an urgent report raised by the state to the actor (after the snapshot it is
    /// built from was published).
    fn raise_urgent(&mut self) {
        if let Some(urgent) = self.state.poll_urgent() {
            tracing::warn!(server = %self.config.server, reason = %urgent.reason, "web server down: urgent report");
            self.urgent.send_modify(|n| *n += 1);
        }
    }

    /// Gathers every interval (and probes every probe interval, with fast failover) until
    /// `shutdown` completes. The first gathering is at once.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        // A slow reading delays the next one rather than causing a burst.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prober = self.probe.as_ref().map(|(_, ff)| {
            let mut t = tokio::time::interval(ff.probe_interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = async {
                    let probe_tick = async {
                        match prober.as_mut() {
                            Some(t) => t.tick().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        biased;
                        _ = ticker.tick() => {
                            self.gather_once().await;
                        }
                        _ = probe_tick => {
                            self.probe_once().await;
                        }
                    }
                } => {}
            }
        }
    }
}

impl<W: WebReader + 'static> Gatherer<W> {
    /// Runs the gatherer as a tokio task (the web reading is async, the procfs reading
    /// takes microseconds).
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }
}

/// Starts a Reporter as a tokio task with the web reader its configuration names.
/// Returns the handle the actor answers round requests with, and the task.
pub fn spawn(
    config: ReporterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(ReporterHandle, tokio::task::JoinHandle<()>), ReporterError> {
    let reader = config.web_reader()?;
    let (gatherer, handle) = Gatherer::with_reader(config, reader)?;
    Ok((handle, gatherer.spawn(shutdown)))
}

/// A running Reporter: its supervised shell in `Reporters`, the gatherer's handle (the
/// shell answers rounds with it; the Replicator sets the generation through it) and the
/// gatherer's task.
pub struct RunningReporter {
    /// The shell's address.
    pub actor: actor::ReporterActor,
    /// The gatherer's handle.
    pub handle: ReporterHandle,
    /// The gatherer's task, which ends when `shutdown` completes.
    pub gatherer: tokio::task::JoinHandle<()>,
}

/// Starts the Reporter of `settings` in `home` over `layer`: the gatherer ([`spawn`],
/// until `shutdown` completes) and its supervised shell ([`actor::start`]).
pub fn start<L: crate::group::GroupLayer>(
    home: &crate::supervision::ActorHome,
    supervision: &crate::supervision::Supervision,
    layer: std::sync::Arc<L>,
    settings: ReporterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningReporter, ReporterError> {
    let (handle, gatherer) = spawn(settings, shutdown)?;
    let actor = actor::start(home, supervision, layer, handle.clone());
    Ok(RunningReporter {
        actor,
        handle,
        gatherer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReportBody;
    use std::collections::VecDeque;
    use web::{WebError, WebReading};

    /// Replays scripted readings (unit tests only; integration tests use real servers).
    struct Scripted(VecDeque<Result<WebReading, WebError>>);

    impl WebReader for Scripted {
        async fn read(&mut self) -> Result<WebReading, WebError> {
            self.0.pop_front().unwrap_or(Err(WebError::Status {
                url: "script".into(),
                status: 599,
                expected: "200".into(),
            }))
        }
    }

    fn reading(requests: u64) -> Result<WebReading, WebError> {
        Ok(WebReading {
            requests: Some(requests),
            own_requests: 0,
            busy_workers: 1,
            max_workers: Some(10),
        })
    }

    fn config() -> ReporterConfig {
        let mut c = ReporterConfig::new(
            ServerName::from("w1"),
            WebSource::Nginx {
                url: "http://127.0.0.1:1/".into(),
                max_workers: 10,
            },
        );
        c.bypass_file = std::env::temp_dir().join("walrus-no-such-bypass-file");
        // Scripted readings only: nothing listens on port 1 for a probe.
        c.fast_failover = None;
        c
    }

    #[test]
    fn defaults_are_as_documented() {
        let c = config();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.effective_web_timeout(), Duration::from_secs(1));
        assert_eq!(c.effective_stale_after(), Duration::from_secs(3));
        assert_eq!(c.panic_after, 3);
        let ff = ReporterConfig::new(c.server.clone(), c.web.clone())
            .fast_failover
            .expect("on by default");
        assert_eq!(ff.probe_interval, Duration::from_millis(100));
        assert_eq!(ff.probe_timeout, Duration::from_millis(200));
        assert_eq!(ff.damping.window, Duration::from_secs(30));
        assert_eq!(ff.damping.hold, Duration::from_secs(10));
    }

    #[test]
    fn bad_config_is_an_error() {
        let mut c = config();
        c.interval = Duration::ZERO;
        assert!(Gatherer::with_reader(c, Scripted(VecDeque::new())).is_err());
        let mut c = config();
        c.web = WebSource::Probe {
            url: "gopher://example.com/".into(),
            expect_status: None,
            body_contains: None,
            max_workers: 1,
        };
        let e = c.web_reader().unwrap_err().to_string();
        assert!(e.starts_with("reporter for w1: bad URL"), "{e}");
        let mut c = config();
        c.fast_failover = Some(FastFailoverConfig {
            probe_interval: Duration::ZERO,
            ..FastFailoverConfig::default()
        });
        let e = Gatherer::with_reader(c, Scripted(VecDeque::new()))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("reporter for w1: fast_failover probe_interval must be more than zero")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gatherer_publishes_and_handle_answers() {
        let script = VecDeque::from([reading(10), reading(15)]);
        let (gatherer, mut handle) = Gatherer::with_reader(config(), Scripted(script)).unwrap();
        handle.set_generation(Some(Generation(3)));
        let r = handle.report(Round(1));
        assert!(matches!(r.body, ReportBody::TempFail { .. }));
        assert_eq!(r.generation, Some(Generation(3)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = gatherer.spawn(async {
            let _ = stopped.await;
        });
        handle.next_gathering().await.unwrap();
        assert!(matches!(
            handle.report(Round(2)).body,
            ReportBody::TempFail { .. }
        ));
        handle.next_gathering().await.unwrap();
        let ReportBody::Stats(s) = handle.report(Round(3)).body else {
            panic!("expected stats")
        };
        assert_eq!(s.web.hits, 5);
        assert_eq!(s.period, Duration::from_secs(1));
        stop.send(()).unwrap();
        task.await.unwrap();
        // The gatherer is gone: waiting ends (after any snapshot not yet seen).
        while handle.next_gathering().await.is_ok() {}
    }

    #[tokio::test]
    async fn a_refused_probe_raises_an_urgent_panic_report() {
        // A port where nothing listens (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = config();
        c.web = WebSource::Nginx {
            url: format!("http://127.0.0.1:{port}/nginx_status"),
            max_workers: 10,
        };
        c.fast_failover = Some(FastFailoverConfig::default());
        let (mut gatherer, mut handle) =
            Gatherer::with_reader(c, Scripted(VecDeque::new())).unwrap();
        let snap = gatherer.probe_once().await.expect("fast failover is on");
        assert!(
            matches!(snap.condition, state::Condition::Down { .. }),
            "{snap:?}"
        );
        let r = handle.next_urgent(Round(41)).await.unwrap();
        assert_eq!(r.round, Round(41));
        let ReportBody::Panic { reason } = r.body else {
            panic!("expected PANIC, got {:?}", r.body)
        };
        assert_eq!(
            reason,
            format!("web server down: liveness probe: connection to 127.0.0.1:{port} refused")
        );
    }
}
