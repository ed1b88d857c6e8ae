//! Notifications for a human: the two real channels ([`Notifier`]) that carry the events
//! the rules emit ([`Event`], defined beside the rules in [`super::event`]).
//!
//! The assignment ([`super::assign`]) already deduplicates per incident: PANIC once when it
//! starts and once when the server works again; a silent server once after `dead_after`
//! and once when it answers again; "no working server anywhere" once. This module only
//! delivers, and never blocks a round: [`Notifier::notify`] puts the event on a bounded
//! queue per channel and returns at once (a full queue drops the event with a log line).
//!
//! Channels (each has its own task and queue, so a slow webhook does not delay the
//! command):
//! - **command**: runs a program (argv, no shell) with the event as one JSON object on
//!   stdin; exit status 0 is success.
//! - **webhook**: an HTTP/1.1 POST of the same JSON to an `http://` URL; a 2xx status is
//!   success. Written directly over a tokio `TcpStream` (about 60 lines) rather than with
//!   an HTTP client crate: one request shape, no new dependency tree for every build on
//!   our 2-core machines, and no second rustls CryptoProvider to trip over (FACTS.md).
//!   `https://` is refused at start with [`NotifyError::UnsupportedScheme`]: point it at
//!   a local relay, or use the command channel with `curl`.
//!
//! A failed delivery is logged and retried with exponential backoff ([`backoff`]) up to
//! `attempts` times, then dropped with an error log line.
//!
//! JSON shape: `{"site":"example.com","event":"panic_raised","round":12,
//! "server":"c1-s1","cluster":"c1","reason":"nginx exited"}`.

pub use super::event::Event;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The JSON object a channel delivers: the event plus the site it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The site's name (from the configuration).
    pub site: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The `notify` section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// The site's name, put in every notification.
    pub site: String,
    /// Program and arguments to run per event (no shell); the JSON is on its stdin.
    /// Default: none.
    pub command: Option<Vec<String>>,
    /// `http://host:port/path` to POST each event to. Default: none.
    pub webhook: Option<String>,
    /// Events waiting per channel before new ones are dropped. Default: 64.
    pub queue: usize,
    /// Delivery attempts per event and channel. Default: 5.
    pub attempts: u32,
    /// Wait before the first retry; doubles per retry. Default: 1 s.
    pub initial_backoff: Duration,
    /// Longest wait between retries. Default: 60 s.
    pub max_backoff: Duration,
    /// Longest one delivery attempt may take (connect + send + answer, or the command
    /// running). Default: 10 s.
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            site: String::new(),
            command: None,
            webhook: None,
            queue: 64,
            attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why notifications cannot be set up or an event could not be queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The webhook URL is not `http://…`.
    #[error("webhook {url:?}: only http:// is supported (use a local relay or the command channel for https)")]
    UnsupportedScheme {
        /// The URL as configured.
        url: String,
    },
    /// The webhook URL cannot be parsed.
    #[error("webhook {url:?}: {why}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The command is an empty list.
    #[error("notify command is empty")]
    EmptyCommand,
    /// A channel's queue is full (its deliveries are failing or slow): the event is dropped.
    #[error("notification queue of the {channel} channel is full; event dropped")]
    QueueFull {
        /// `command` or `webhook`.
        channel: &'static str,
    },
    /// The event could not be turned into JSON.
    #[error("cannot encode notification: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Why one delivery attempt failed (logged, then retried).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Connecting, writing, reading, or starting the program failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The attempt took longer than the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The webhook answered with a non-2xx status.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
    /// The webhook's answer is not HTTP.
    #[error("webhook answer is not an HTTP/1.x status line")]
    BadResponse,
    /// The command exited unsuccessfully.
    #[error("command exited with {0}")]
    Exit(std::process::ExitStatus),
}

/// The wait before retry number `retry` (0 = the first retry): `initial * 2^retry`, at
/// most `max`.
pub fn backoff(retry: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// An `http://` webhook address, parsed once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpUrl {
    /// `host` or `host:port` as written (the Host header).
    authority: String,
    /// Where to connect.
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl HttpUrl {
    fn parse(url: &str) -> Result<Self, NotifyError> {
        let bad = |why| NotifyError::BadUrl {
            url: url.to_owned(),
            why,
        };
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(NotifyError::UnsupportedScheme {
                url: url.to_owned(),
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        if path.contains(['\r', '\n', ' ']) {
            return Err(bad("path contains whitespace"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(bad("unclosed ["));
            };
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => 80,
                None => return Err(bad("junk after ]")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), 80),
            }
        };
        Ok(Self {
            authority: authority.to_owned(),
            host,
            port,
            path: path.to_owned(),
        })
    }
}

/// The largest webhook answer head we read: only the status line matters.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// One HTTP/1.1 POST; success is a 2xx status.
async fn post(url: &HttpUrl, body: &[u8]) -> Result<(), DeliveryError> {
    let mut stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: walrus-controller\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_RESPONSE_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let line = std::str::from_utf8(line).map_err(|_| DeliveryError::BadResponse)?;
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(DeliveryError::BadResponse);
    }
    let code: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(DeliveryError::BadResponse)?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(DeliveryError::Status(code))
    }
}

/// Runs the command with `body` on stdin; success is exit status 0.
async fn run_command(argv: &[String], body: &[u8]) -> Result<(), DeliveryError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(DeliveryError::Io(std::io::Error::other("empty command")));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading its stdin is its own business: its exit
        // status decides.
        let _ = stdin.write_all(body).await;
        drop(stdin);
    }
    let status = child.wait().await?;
    if status.success() {
        Ok(())
    } else {
        Err(DeliveryError::Exit(status))
    }
}

#[derive(Debug, Clone)]
enum Channel {
    Command(Vec<String>),
    Webhook(HttpUrl),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Channel::Command(_) => "command",
            Channel::Webhook(_) => "webhook",
        }
    }

    async fn deliver_once(&self, body: &[u8], timeout: Duration) -> Result<(), DeliveryError> {
        let attempt = async {
            match self {
                Channel::Command(argv) => run_command(argv, body).await,
                Channel::Webhook(url) => post(url, body).await,
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| DeliveryError::Timeout(timeout))?
    }
}

/// Retry policy of one channel.
#[derive(Debug, Clone, Copy)]
struct Retry {
    attempts: u32,
    initial: Duration,
    max: Duration,
    timeout: Duration,
}

async fn channel_task(channel: Channel, retry: Retry, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(body) = rx.recv().await {
        let attempts = retry.attempts.max(1);
        for attempt in 0..attempts {
            match channel.deliver_once(&body, retry.timeout).await {
                Ok(()) => {
                    tracing::debug!(channel = channel.name(), attempt, "notification delivered");
                    break;
                }
                Err(e) if attempt + 1 < attempts => {
                    let wait = backoff(attempt, retry.initial, retry.max);
                    tracing::warn!(channel = channel.name(), attempt, error = %e,
                        ?wait, "notification failed; will retry");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::error!(channel = channel.name(), attempts, error = %e,
                        "notification failed; giving up on this event");
                }
            }
        }
    }
}

/// Delivers notifications on the configured channels from background tasks.
///
/// Start it inside a tokio runtime. Dropping it lets queued events finish and then ends
/// the tasks; [`Notifier::close`] does the same and waits for it.
#[derive(Debug)]
pub struct Notifier {
    site: String,
    channels: Vec<(&'static str, mpsc::Sender<Vec<u8>>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Checks the configuration and starts one task per configured channel.
    pub fn start(config: &NotifyConfig) -> Result<Self, NotifyError> {
        let mut list = Vec::new();
        if let Some(argv) = &config.command {
            if argv.is_empty() {
                return Err(NotifyError::EmptyCommand);
            }
            list.push(Channel::Command(argv.clone()));
        }
        if let Some(url) = &config.webhook {
            list.push(Channel::Webhook(HttpUrl::parse(url)?));
        }
        let retry = Retry {
            attempts: config.attempts,
            initial: config.initial_backoff,
            max: config.max_backoff,
            timeout: config.timeout,
        };
        let mut channels = Vec::new();
        let mut tasks = Vec::new();
        for channel in list {
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            channels.push((channel.name(), tx));
            tasks.push(tokio::spawn(channel_task(channel, retry, rx)));
        }
        Ok(Self {
            site: config.site.clone(),
            channels,
            tasks,
        })
    }

    /// Queues the event on every channel without waiting. An error means at least one
    /// channel's queue was full (that channel drops this event; the others still got it).
    pub fn notify(&self, event: Event) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&Notification {
            site: self.site.clone(),
            event,
        })?;
        let mut result = Ok(());
        for (name, tx) in &self.channels {
            if tx.try_send(body.clone()).is_err() {
                tracing::warn!(channel = name, "notification queue full; event dropped");
                result = Err(NotifyError::QueueFull { channel: name });
            }
        }
        result
    }

    /// Stops taking events, lets the queued ones be delivered (or given up), and waits.
    pub async fn close(self) {
        drop(self.channels);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Round;

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(0, i, m), Duration::from_secs(1));
        assert_eq!(backoff(1, i, m), Duration::from_secs(2));
        assert_eq!(backoff(5, i, m), Duration::from_secs(32));
        assert_eq!(backoff(6, i, m), m);
        assert_eq!(backoff(u32::MAX, i, m), m);
    }

    #[test]
    fn url_parsing() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.port,
                u.path.as_str(),
                u.authority.as_str()
            ),
            ("127.0.0.1", 8080, "/hook?x=1", "127.0.0.1:8080")
        );
        let u = HttpUrl::parse("http://example.com").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert!(matches!(
            HttpUrl::parse("https://x/"),
            Err(NotifyError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            HttpUrl::parse("http://h:99999/"),
            Err(NotifyError::BadUrl { .. })
        ));
        assert!(matches!(
            HttpUrl::parse("http://u@h/"),
            Err(NotifyError::BadUrl { .. })
        ));
        assert!(matches!(
            HttpUrl::parse("http:///x"),
            Err(NotifyError::BadUrl { .. })
        ));
    }

    #[test]
    fn json_shape() {
        let n = Notification {
            site: "example.com".into(),
            event: Event::PanicRaised {
                round: Round(12),
                server: "c1-s1".into(),
                cluster: "c1".into(),
                reason: "nginx exited".into(),
            },
        };
        let s = serde_json::to_string(&n).unwrap();
        assert_eq!(
            s,
            r#"{"site":"example.com","event":"panic_raised","round":12,"server":"c1-s1","cluster":"c1","reason":"nginx exited"}"#
        );
        let back: Notification = serde_json::from_str(&s).unwrap();
        assert_eq!(back, n);
    }
}
