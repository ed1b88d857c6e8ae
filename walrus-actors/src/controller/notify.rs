//! Notifications for a human: the two real channels ([`Notifier`]) that carry the
//! incidents the rules emit ([`Incident`], defined beside the rules in [`super::incident`]).
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
//! - **webhook**: an HTTP/1.1 POST to an `http://` or `https://` URL (verified against the
//!   system CA bundle or `webhook_ca`), with the operator's headers (e.g. an
//!   `Authorization` token) and the same JSON as body, or a body made from a template so
//!   that Slack (`{"text": "{summary}"}`), PagerDuty Events v2 or Alertmanager-style
//!   receivers take it as it is ([`BodyTemplate`]); a 2xx status is success. It goes
//!   through the crate's one small HTTP client ([`crate::reporter::http::Page`]), not an
//!   HTTP client crate: one request shape, no second TLS stack.
//!
//! A failed delivery is logged and retried with exponential backoff ([`backoff`]) up to
//! `attempts` times, then dropped with an error log line.
//!
//! JSON shape: `{"site":"example.com","event":"panic_raised","round":12,
//! "server":"c1-s1","cluster":"c1","reason":"nginx exited"}`.

pub use super::incident::Incident;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The JSON object a channel delivers: the incident (its kind in the `"event"` field) plus
/// the site it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The site's name (from the configuration).
    pub site: String,
    /// What happened.
    #[serde(flatten)]
    pub incident: Incident,
}

/// The `notify` section of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// The site's name, put in every notification.
    pub site: String,
    /// Program and arguments to run per event (no shell); the JSON is on its stdin.
    /// Default: none.
    pub command: Option<Vec<String>>,
    /// `http://` or `https://` URL to POST each event to. Default: none.
    pub webhook: Option<String>,
    /// Extra headers of every webhook request (name, value), e.g. `Authorization`.
    /// `Content-Type` defaults to `application/json`.
    pub webhook_headers: Vec<(String, String)>,
    /// The webhook's body as a template ([`BodyTemplate`]); None: the event's JSON.
    pub webhook_body: Option<String>,
    /// PEM file of the CAs an `https://` webhook is verified against. Default: the system
    /// bundle.
    pub webhook_ca: Option<std::path::PathBuf>,
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
            webhook_headers: Vec::new(),
            webhook_body: None,
            webhook_ca: None,
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
    /// The webhook cannot be set up: bad URL, header or CA file.
    #[error("webhook {url:?}: {why}")]
    BadWebhook {
        /// The URL as configured.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The body template names a field no event has.
    #[error("webhook body template: {0}")]
    BadTemplate(String),
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
    /// The body template could not be filled.
    #[error("webhook body: {0}")]
    Template(String),
    /// The webhook could not be reached or did not answer HTTP.
    #[error("webhook: {0}")]
    Http(#[from] crate::reporter::http::HttpError),
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

/// A webhook body made from a template: `{name}` is replaced by the notification's field
/// `name` (`site`, `event`, `round`, `server`, `cluster`, `reason`, `silent_secs`, ... —
/// empty when the event has no such field), JSON-escaped so that it can stand inside a
/// JSON string; `{summary}` by one human line of the whole event; `{json}` by the event's
/// JSON object itself. Any other `{` is kept as written, so JSON templates need no
/// escaping: `{"text": "Walrus {site}: {summary}"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

/// The fields a template may name (every field of every event, and the two made ones).
const TEMPLATE_FIELDS: &[&str] = &[
    "site",
    "event",
    "round",
    "server",
    "cluster",
    "reason",
    "silent_secs",
    "areas",
    "summary",
    "json",
];

impl BodyTemplate {
    /// Parses `template`; a `{word}` that is not a known field is an error (a typo would
    /// otherwise send an empty value forever).
    pub fn parse(template: &str) -> Result<Self, NotifyError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let word_len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(after.len());
            if word_len > 0 && after[word_len..].starts_with('}') {
                let word = &after[..word_len];
                if !TEMPLATE_FIELDS.contains(&word) {
                    return Err(NotifyError::BadTemplate(format!(
                        "{{{word}}} is not a field; known: {}",
                        TEMPLATE_FIELDS.join(", ")
                    )));
                }
                text.push_str(&rest[..open]);
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Field(word.to_owned()));
                rest = &after[word_len + 1..];
            } else {
                text.push_str(&rest[..=open]);
                rest = after;
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// The body for `n`.
    pub fn render(&self, n: &Notification) -> Result<String, NotifyError> {
        let value = serde_json::to_value(n)?;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) if f == "json" => out.push_str(&value.to_string()),
                Part::Field(f) if f == "summary" => out.push_str(&json_escaped(&summary(&value))),
                Part::Field(f) => out.push_str(&json_escaped(&plain(value.get(f)))),
            }
        }
        Ok(out)
    }
}

/// A field's value as text (strings without quotes; absent: empty).
fn plain(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// One line for a human: `example.com: panic_raised server=c1-s1 cluster=c1 round=12
/// reason=nginx exited`.
fn summary(value: &serde_json::Value) -> String {
    let mut line = format!(
        "{}: {}",
        plain(value.get("site")),
        plain(value.get("event"))
    );
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            if k != "site" && k != "event" {
                line.push_str(&format!(" {k}={}", plain(Some(v))));
            }
        }
    }
    line
}

/// `s` escaped for the inside of a JSON string (no surrounding quotes).
fn json_escaped(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// A webhook: where, how, and with what body.
#[derive(Debug, Clone)]
struct Webhook {
    page: crate::reporter::http::Page,
    body: Option<BodyTemplate>,
}

impl Webhook {
    fn new(config: &NotifyConfig, url: &str) -> Result<Self, NotifyError> {
        use crate::reporter::http::{Page, TlsOptions};
        let bad = |why: String| NotifyError::BadWebhook {
            url: url.to_owned(),
            why,
        };
        let tls = TlsOptions {
            ca_file: config.webhook_ca.clone(),
            server_name: None,
            client_cert: None,
        };
        let mut page = Page::new(url, config.timeout, &tls).map_err(|e| bad(e.to_string()))?;
        let has_type = config
            .webhook_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        let default_type = ("Content-Type".to_owned(), "application/json".to_owned());
        for (name, value) in config
            .webhook_headers
            .iter()
            .chain((!has_type).then_some(&default_type))
        {
            page = page
                .with_header(name, value)
                .map_err(|e| bad(format!("header {name}: {e}")))?;
        }
        let body = config
            .webhook_body
            .as_deref()
            .map(BodyTemplate::parse)
            .transpose()?;
        Ok(Self { page, body })
    }

    async fn post(&self, n: &Notification, json: &[u8]) -> Result<(), DeliveryError> {
        let code = match &self.body {
            None => self.page.post(json).await?,
            Some(t) => {
                let body = t
                    .render(n)
                    .map_err(|e| DeliveryError::Template(e.to_string()))?;
                self.page.post(body.as_bytes()).await?
            }
        };
        if (200..300).contains(&code) {
            Ok(())
        } else {
            Err(DeliveryError::Status(code))
        }
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
    Webhook(Box<Webhook>),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Channel::Command(_) => "command",
            Channel::Webhook(_) => "webhook",
        }
    }

    async fn deliver_once(&self, n: &Queued, timeout: Duration) -> Result<(), DeliveryError> {
        let attempt = async {
            match self {
                Channel::Command(argv) => run_command(argv, &n.json).await,
                Channel::Webhook(w) => w.post(&n.notification, &n.json).await,
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

/// A notification waiting on a channel: the event and its JSON, encoded once.
#[derive(Debug, Clone)]
struct Queued {
    notification: Notification,
    json: Vec<u8>,
}

async fn channel_task(channel: Channel, retry: Retry, mut rx: mpsc::Receiver<Queued>) {
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
    channels: Vec<(&'static str, mpsc::Sender<Queued>)>,
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
            list.push(Channel::Webhook(Box::new(Webhook::new(config, url)?)));
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

    /// Queues the incident on every channel without waiting. An error means at least one
    /// channel's queue was full (that channel drops this one; the others still got it).
    pub fn notify(&self, incident: Incident) -> Result<(), NotifyError> {
        let notification = Notification {
            site: self.site.clone(),
            incident,
        };
        let body = Queued {
            json: serde_json::to_vec(&notification)?,
            notification,
        };
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

    fn panic_raised() -> Notification {
        Notification {
            site: "example.com".into(),
            incident: Incident::PanicRaised {
                round: Round(12),
                server: "c1-s1".into(),
                cluster: "c1".into(),
                reason: "nginx \"exited\"".into(),
            },
        }
    }

    #[test]
    fn templates_fill_fields_json_escaped_and_keep_other_braces() {
        let t = BodyTemplate::parse(
            r#"{"text": "Walrus {site}: {event} on {server} ({reason})", "round": {round}}"#,
        )
        .unwrap();
        let body = t.render(&panic_raised()).unwrap();
        assert_eq!(
            body,
            r#"{"text": "Walrus example.com: panic_raised on c1-s1 (nginx \"exited\")", "round": 12}"#
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["round"], 12);
        let s = BodyTemplate::parse("{summary}")
            .unwrap()
            .render(&panic_raised())
            .unwrap();
        assert!(s.starts_with("example.com: panic_raised"), "{s}");
        assert!(s.contains("server=c1-s1") && s.contains("round=12"), "{s}");
        let j = BodyTemplate::parse(r#"{"walrus": {json}}"#)
            .unwrap()
            .render(&panic_raised())
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["walrus"]["cluster"], "c1");
        // A field the event lacks is empty; a typo is refused at start.
        let e = BodyTemplate::parse("{silent_secs}")
            .unwrap()
            .render(&panic_raised())
            .unwrap();
        assert_eq!(e, "");
        assert!(matches!(
            BodyTemplate::parse("{sumary}"),
            Err(NotifyError::BadTemplate(_))
        ));
    }

    #[test]
    fn a_bad_webhook_is_refused_at_start_with_its_url() {
        for (url, headers) in [
            ("ftp://x/", vec![]),
            ("http://h:99999/", vec![]),
            ("http://h/", vec![("Bad Name".to_owned(), "v".to_owned())]),
            (
                "http://h/",
                vec![("X-Token".to_owned(), "a\r\nb".to_owned())],
            ),
        ] {
            let config = NotifyConfig {
                webhook: Some(url.into()),
                webhook_headers: headers,
                ..NotifyConfig::default()
            };
            let e = Webhook::new(&config, url).unwrap_err();
            assert!(matches!(e, NotifyError::BadWebhook { .. }), "{url}: {e}");
        }
    }

    #[test]
    fn json_shape() {
        let n = Notification {
            site: "example.com".into(),
            incident: Incident::PanicRaised {
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
