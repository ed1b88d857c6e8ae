//! The web-server piece of the Reporter (paper §4, "three pieces"): reading the web
//! server's own figures behind one small trait, [`WebReader`].
//!
//! Three real readers:
//! - [`NginxReader`]: nginx `stub_status` (`Active connections` / `accepts handled
//!   requests` / `Reading Writing Waiting`);
//! - [`ApacheReader`]: Apache `mod_status` with `?auto` (`Key: value` lines);
//! - [`ProbeReader`]: a plain HTTP health probe (status code, optional body match) for
//!   servers that expose no status page.
//!
//! A reader returns the server's *cumulative* request counter ([`WebReading::requests`]);
//! the platform-independent core turns two readings into hits over the period. Both status
//! pages count the Reporter's own status request (nginx counts the current one, Apache the
//! previous one), so each reading says how many of its requests are ours
//! ([`WebReading::own_requests`]) and busy workers leave out the one serving us.
//!
//! Parsers are pure functions tested on captured output of nginx 1.22 and Apache 2.4.

use super::http::{HttpError, Page};
use std::future::Future;

/// One reading of a web server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebReading {
    /// The server's cumulative request counter, when it has one (a probe has none).
    pub requests: Option<u64>,
    /// How many requests of each period's counter are the Reporter's own readings.
    pub own_requests: u64,
    /// Workers (connections) busy serving clients now, our own request left out.
    pub busy_workers: u32,
    /// The server's maximum workers, when it says so.
    pub max_workers: Option<u32>,
}

/// Why a web reading failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The GET failed (refused, timed out, malformed answer, ...).
    #[error("{url}: {source}")]
    Http {
        /// The page.
        url: String,
        /// What went wrong.
        source: HttpError,
    },
    /// The page answered with an unexpected status code.
    #[error("{url}: status {status}, expected {expected}")]
    Status {
        /// The page.
        url: String,
        /// The code received.
        status: u16,
        /// What was expected ("2xx" or a code).
        expected: String,
    },
    /// A probe's answer does not contain the expected text.
    #[error("{url}: body does not contain {expected:?}")]
    BodyMismatch {
        /// The page.
        url: String,
        /// The text looked for.
        expected: String,
    },
    /// The status page is not in the format of its server.
    #[error("{url}: {source}")]
    Parse {
        /// The page.
        url: String,
        /// What is wrong.
        source: StatusParseError,
    },
}

impl WebError {
    /// True when nothing listens: the web server is down (PANIC at once).
    pub fn is_down(&self) -> bool {
        matches!(self, WebError::Http { source, .. } if source.is_refused())
    }
}

/// A status page that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusParseError {
    /// A required field is missing.
    #[error("{server} status: `{field}` is missing")]
    Missing {
        /// `nginx` or `apache`.
        server: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field's value is not a number of the right size.
    #[error("{server} status: `{field}` has bad value {value:?}")]
    BadValue {
        /// `nginx` or `apache`.
        server: &'static str,
        /// The field.
        field: &'static str,
        /// The text found (cut to 64 characters).
        value: String,
    },
}

/// Reads a web server's figures. Implemented by the three real readers and by test fakes.
pub trait WebReader: Send {
    /// Takes one reading.
    fn read(&mut self) -> impl Future<Output = Result<WebReading, WebError>> + Send;
}

/// nginx `stub_status` figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NginxStatus {
    /// `Active connections`, including waiting (keep-alive) ones.
    pub active: u64,
    /// Connections accepted since start.
    pub accepts: u64,
    /// Connections handled since start.
    pub handled: u64,
    /// Requests since start (including the one reading this page).
    pub requests: u64,
    /// Connections reading a request now.
    pub reading: u64,
    /// Connections writing an answer now (including the one reading this page).
    pub writing: u64,
    /// Idle keep-alive connections.
    pub waiting: u64,
}

/// Parses nginx `stub_status` output.
pub fn parse_stub_status(text: &str) -> Result<NginxStatus, StatusParseError> {
    const S: &str = "nginx";
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let active_line = lines.next().unwrap_or("");
    let active =
        active_line
            .strip_prefix("Active connections:")
            .ok_or(StatusParseError::Missing {
                server: S,
                field: "Active connections",
            })?;
    let active = num(S, "Active connections", active.trim())?;
    if lines.next() != Some("server accepts handled requests") {
        return Err(StatusParseError::Missing {
            server: S,
            field: "server accepts handled requests",
        });
    }
    let counters = lines.next().unwrap_or("");
    let mut c = counters.split_ascii_whitespace();
    let mut next = |field| {
        c.next()
            .ok_or(StatusParseError::Missing { server: S, field })
            .and_then(|v| num(S, field, v))
    };
    let accepts = next("accepts")?;
    let handled = next("handled")?;
    let requests = next("requests")?;
    let rww = lines.next().unwrap_or("");
    let mut words = rww.split_ascii_whitespace();
    let mut field = |label: &str, field: &'static str| -> Result<u64, StatusParseError> {
        if words.next() != Some(label) {
            return Err(StatusParseError::Missing { server: S, field });
        }
        let v = words
            .next()
            .ok_or(StatusParseError::Missing { server: S, field })?;
        num(S, field, v)
    };
    let reading = field("Reading:", "Reading")?;
    let writing = field("Writing:", "Writing")?;
    let waiting = field("Waiting:", "Waiting")?;
    Ok(NginxStatus {
        active,
        accepts,
        handled,
        requests,
        reading,
        writing,
        waiting,
    })
}

/// Apache `mod_status` (`?auto`) figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApacheStatus {
    /// `Total Accesses` (needs `ExtendedStatus On`; counts requests once logged, so it
    /// includes the previous status request, not the current one).
    pub total_accesses: u64,
    /// `BusyWorkers` (including the one serving this page).
    pub busy_workers: u64,
    /// `IdleWorkers`.
    pub idle_workers: u64,
    /// Length of the `Scoreboard` line: every worker slot, open or not, when present.
    pub scoreboard_slots: Option<u64>,
}

/// Parses Apache `mod_status` `?auto` output.
pub fn parse_apache_auto(text: &str) -> Result<ApacheStatus, StatusParseError> {
    const S: &str = "apache";
    let (mut total, mut busy, mut idle, mut scoreboard) = (None, None, None, None);
    for line in text.lines() {
        // The first line is the bare server name; other lines without ':' are skipped too.
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Total Accesses" => total = Some(num(S, "Total Accesses", value)?),
            "BusyWorkers" => busy = Some(num(S, "BusyWorkers", value)?),
            "IdleWorkers" => idle = Some(num(S, "IdleWorkers", value)?),
            "Scoreboard" => scoreboard = Some(value.len() as u64),
            _ => {}
        }
    }
    Ok(ApacheStatus {
        total_accesses: total.ok_or(StatusParseError::Missing {
            server: S,
            field: "Total Accesses (is ExtendedStatus On?)",
        })?,
        busy_workers: busy.ok_or(StatusParseError::Missing {
            server: S,
            field: "BusyWorkers",
        })?,
        idle_workers: idle.ok_or(StatusParseError::Missing {
            server: S,
            field: "IdleWorkers",
        })?,
        scoreboard_slots: scoreboard,
    })
}

fn num(server: &'static str, field: &'static str, text: &str) -> Result<u64, StatusParseError> {
    text.parse().map_err(|_| StatusParseError::BadValue {
        server,
        field,
        value: text.chars().take(64).collect(),
    })
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Reads an nginx `stub_status` page.
#[derive(Debug, Clone)]
pub struct NginxReader {
    page: Page,
    max_workers: u32,
}

impl NginxReader {
    /// `max_workers` comes from configuration (nginx does not say; worker_processes ×
    /// worker_connections is its ceiling).
    pub fn new(page: Page, max_workers: u32) -> Self {
        Self { page, max_workers }
    }

    /// The figures a status page body gives (pure: used by [`WebReader::read`]).
    pub fn reading_from(&self, s: &NginxStatus) -> WebReading {
        WebReading {
            requests: Some(s.requests),
            own_requests: 1,
            // Connections reading or writing are being served; our own GET is writing.
            busy_workers: to_u32((s.reading + s.writing).saturating_sub(1)),
            max_workers: Some(self.max_workers),
        }
    }
}

impl WebReader for NginxReader {
    async fn read(&mut self) -> Result<WebReading, WebError> {
        let body = fetch_ok(&self.page).await?;
        let status = parse_stub_status(&body).map_err(|source| WebError::Parse {
            url: self.page.to_string(),
            source,
        })?;
        Ok(self.reading_from(&status))
    }
}

/// Reads an Apache `mod_status` page (give the URL with `?auto`).
#[derive(Debug, Clone)]
pub struct ApacheReader {
    page: Page,
    max_workers: Option<u32>,
}

impl ApacheReader {
    /// `max_workers` from configuration overrides the scoreboard's busy + idle workers
    /// (which counts only the workers started so far, up to `MaxRequestWorkers`).
    pub fn new(page: Page, max_workers: Option<u32>) -> Self {
        Self { page, max_workers }
    }

    /// The figures a status page body gives (pure: used by [`WebReader::read`]).
    pub fn reading_from(&self, s: &ApacheStatus) -> WebReading {
        WebReading {
            requests: Some(s.total_accesses),
            own_requests: 1,
            busy_workers: to_u32(s.busy_workers.saturating_sub(1)),
            max_workers: Some(
                self.max_workers
                    .unwrap_or_else(|| to_u32(s.busy_workers + s.idle_workers)),
            ),
        }
    }
}

impl WebReader for ApacheReader {
    async fn read(&mut self) -> Result<WebReading, WebError> {
        let body = fetch_ok(&self.page).await?;
        let status = parse_apache_auto(&body).map_err(|source| WebError::Parse {
            url: self.page.to_string(),
            source,
        })?;
        Ok(self.reading_from(&status))
    }
}

/// A plain health probe: GET a page, check its status code and, optionally, its body.
#[derive(Debug, Clone)]
pub struct ProbeReader {
    page: Page,
    expect_status: Option<u16>,
    body_contains: Option<String>,
    max_workers: u32,
}

impl ProbeReader {
    /// `expect_status` None accepts any 2xx; `max_workers` comes from configuration.
    pub fn new(
        page: Page,
        expect_status: Option<u16>,
        body_contains: Option<String>,
        max_workers: u32,
    ) -> Self {
        Self {
            page,
            expect_status,
            body_contains,
            max_workers,
        }
    }
}

impl WebReader for ProbeReader {
    async fn read(&mut self) -> Result<WebReading, WebError> {
        let url = self.page.to_string();
        let answer = self.page.get().await.map_err(|source| WebError::Http {
            url: url.clone(),
            source,
        })?;
        let ok = match self.expect_status {
            Some(code) => answer.status == code,
            None => (200..300).contains(&answer.status),
        };
        if !ok {
            return Err(WebError::Status {
                url,
                status: answer.status,
                expected: self
                    .expect_status
                    .map_or_else(|| "2xx".to_owned(), |c| c.to_string()),
            });
        }
        if let Some(expected) = &self.body_contains {
            if !answer.body.contains(expected.as_str()) {
                return Err(WebError::BodyMismatch {
                    url,
                    expected: expected.clone(),
                });
            }
        }
        Ok(WebReading {
            requests: None,
            own_requests: 0,
            busy_workers: 0,
            max_workers: Some(self.max_workers),
        })
    }
}

/// GET a status page and insist on 200.
async fn fetch_ok(page: &Page) -> Result<String, WebError> {
    let answer = page.get().await.map_err(|source| WebError::Http {
        url: page.to_string(),
        source,
    })?;
    if answer.status != 200 {
        return Err(WebError::Status {
            url: page.to_string(),
            status: answer.status,
            expected: "200".to_owned(),
        });
    }
    Ok(answer.body)
}

/// One of the three real readers, chosen by configuration.
#[derive(Debug, Clone)]
pub enum AnyWebReader {
    /// nginx `stub_status`.
    Nginx(NginxReader),
    /// Apache `mod_status`.
    Apache(ApacheReader),
    /// Health probe.
    Probe(ProbeReader),
}

impl WebReader for AnyWebReader {
    async fn read(&mut self) -> Result<WebReading, WebError> {
        match self {
            AnyWebReader::Nginx(r) => r.read().await,
            AnyWebReader::Apache(r) => r.read().await,
            AnyWebReader::Probe(r) => r.read().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NGINX_IDLE: &str = include_str!("../../tests/fixtures/nginx-1.22-stub_status-idle.txt");
    const NGINX_25: &str = include_str!("../../tests/fixtures/nginx-1.22-stub_status-after-25.txt");
    const APACHE_IDLE: &str = include_str!("../../tests/fixtures/apache-2.4-status-auto-idle.txt");
    const APACHE_25: &str =
        include_str!("../../tests/fixtures/apache-2.4-status-auto-after-25.txt");

    const NGINX_HELD: &str = include_str!("../../tests/fixtures/nginx-1.22-stub_status-3-held.txt");
    const APACHE_HELD: &str =
        include_str!("../../tests/fixtures/apache-2.4-status-auto-3-held.txt");
    const APACHE_NO_EXTENDED: &str =
        include_str!("../../tests/fixtures/apache-2.4-status-auto-extendedstatus-off.txt");

    fn page() -> Page {
        Page::new(
            "http://127.0.0.1/status",
            Duration::from_secs(1),
            &Default::default(),
        )
        .unwrap()
    }

    #[test]
    fn parses_captured_nginx() {
        let s = parse_stub_status(NGINX_IDLE).unwrap();
        assert_eq!(
            s,
            NginxStatus {
                active: 1,
                accepts: 5,
                handled: 5,
                requests: 5,
                reading: 0,
                writing: 1,
                waiting: 0
            }
        );
        let t = parse_stub_status(NGINX_25).unwrap();
        // 25 page requests plus our own status request in between.
        assert_eq!(t.requests - s.requests, 26);
        let r = NginxReader::new(page(), 512).reading_from(&t);
        assert_eq!(r.busy_workers, 0, "our own request is not a busy worker");
        assert_eq!(
            (r.requests, r.own_requests, r.max_workers),
            (Some(31), 1, Some(512))
        );
    }

    #[test]
    fn parses_captured_apache() {
        let s = parse_apache_auto(APACHE_IDLE).unwrap();
        assert_eq!(
            s,
            ApacheStatus {
                total_accesses: 3,
                busy_workers: 1,
                idle_workers: 15,
                scoreboard_slots: Some(16)
            }
        );
        let t = parse_apache_auto(APACHE_25).unwrap();
        assert_eq!(t.total_accesses - s.total_accesses, 26);
        let r = ApacheReader::new(page(), None).reading_from(&t);
        assert_eq!(r.busy_workers, 0);
        assert_eq!(r.max_workers, Some(16), "busy + idle");
        let r = ApacheReader::new(page(), Some(150)).reading_from(&t);
        assert_eq!(r.max_workers, Some(150), "configuration wins");
    }

    #[test]
    fn captured_held_connections_are_busy_workers() {
        // Three connections that sent only a request line, plus our own status request.
        let n = parse_stub_status(NGINX_HELD).unwrap();
        assert_eq!((n.active, n.reading, n.writing), (4, 3, 1));
        assert_eq!(
            NginxReader::new(page(), 64).reading_from(&n).busy_workers,
            3
        );
        let a = parse_apache_auto(APACHE_HELD).unwrap();
        assert_eq!((a.busy_workers, a.idle_workers), (4, 12));
        let r = ApacheReader::new(page(), None).reading_from(&a);
        assert_eq!((r.busy_workers, r.max_workers), (3, Some(16)));
    }

    #[test]
    fn captured_apache_without_extended_status_says_so() {
        let e = parse_apache_auto(APACHE_NO_EXTENDED).unwrap_err();
        assert_eq!(
            e.to_string(),
            "apache status: `Total Accesses (is ExtendedStatus On?)` is missing"
        );
    }

    #[test]
    fn malformed_nginx_is_a_clear_error() {
        let cases = [
            ("", "`Active connections` is missing"),
            ("<html>502 Bad Gateway</html>", "`Active connections` is missing"),
            ("Active connections: x \n", "`Active connections` has bad value \"x\""),
            ("Active connections: 1 \n", "`server accepts handled requests` is missing"),
            (
                "Active connections: 1 \nserver accepts handled requests\n 1 1 \n",
                "`requests` is missing",
            ),
            (
                "Active connections: 1 \nserver accepts handled requests\n 1 1 -3 \n",
                "`requests` has bad value \"-3\"",
            ),
            (
                "Active connections: 1 \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1\n",
                "`Waiting` is missing",
            ),
        ];
        for (text, want) in cases {
            let e = parse_stub_status(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let huge = NGINX_IDLE.replace(" 5 5 5 ", " 5 5 99999999999999999999999 ");
        assert!(parse_stub_status(&huge).is_err());
    }

    #[test]
    fn malformed_apache_is_a_clear_error() {
        let e = parse_apache_auto("<html>It works!</html>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "apache status: `Total Accesses (is ExtendedStatus On?)` is missing"
        );
        let no_extended: String = APACHE_IDLE
            .lines()
            .filter(|l| !l.starts_with("Total Accesses"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_apache_auto(&no_extended).is_err());
        let bad = APACHE_IDLE.replace("BusyWorkers: 1", "BusyWorkers: one");
        assert_eq!(
            parse_apache_auto(&bad).unwrap_err().to_string(),
            "apache status: `BusyWorkers` has bad value \"one\""
        );
        let no_idle = APACHE_IDLE.replace("IdleWorkers: 15", "");
        assert!(parse_apache_auto(&no_idle)
            .unwrap_err()
            .to_string()
            .contains("IdleWorkers"));
        assert!(parse_apache_auto("\u{0}:\u{0}\n:::\n").is_err());
    }

    #[test]
    fn only_refused_means_down() {
        let refused = WebError::Http {
            url: "u".into(),
            source: HttpError::Refused { target: "t".into() },
        };
        assert!(refused.is_down());
        let timeout = WebError::Http {
            url: "u".into(),
            source: HttpError::Timeout {
                target: "t".into(),
                after: Duration::from_secs(1),
            },
        };
        assert!(!timeout.is_down());
        let status = WebError::Status {
            url: "u".into(),
            status: 500,
            expected: "200".into(),
        };
        assert!(!status.is_down());
    }
}
