//! The `[controller]` section of the configuration file: the assignment's knobs an
//! operator sets ([`ControllerKnobs`]). The file deserializes straight into this type
//! (unknown fields refused, missing ones at their defaults), [`ControllerKnobs::validate`]
//! checks it with the ranges of [`Params::validate`], and [`ControllerKnobs::apply`] puts
//! it into the round configuration. A knob lives here once: its field, its default and
//! one line in `apply`; the binary's config parsing does not name it.

use super::assign::{Params, ParamsError};
use super::load::LoadFormula;
use super::notify::{BodyTemplate, NotifyConfig};
use super::round::RoundConfig;
pub use crate::knob::KnobError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The assignment's knobs (paper §6) as the `[controller]` section gives them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControllerKnobs {
    /// Load (1.0 = at capacity) above which a server gets no new clients except in dire
    /// need. Default 0.8; (0, 10].
    pub threshold: f64,
    /// How much lower a cluster's load must be before phase 4 moves an area to it.
    /// Default 0.2; 0 to 1.
    pub margin: f64,
    /// Most addresses in one answer (keeps it in one UDP datagram). Default 20; 1 to 30.
    pub max_records: usize,
    /// A replica more than this many generations behind is treated as BYPASS. Default 1.
    pub max_generation_lag: u64,
    /// A generation counts for `max_generation_lag` only once announced this long ago: a
    /// deploy in progress is not staleness (issue 18, see
    /// [`super::round::stale_content`]). A human duration in the file ("10m"). Default 10
    /// minutes; "0s": lag counts from the announcement.
    #[serde(deserialize_with = "human_duration")]
    pub generation_grace: Duration,
    /// Count the CPU busy fraction in a server's load (default true). `false` uses the
    /// web-server workers only: for web servers that share one machine (tests, demos),
    /// where the CPU figure says nothing about any one of them.
    pub use_cpu: bool,
    /// Hysteresis: an area away from home returns only when a home server is below
    /// `threshold - return_margin`. Default 0.1; 0 to `threshold`.
    pub return_margin: f64,
}

impl Default for ControllerKnobs {
    fn default() -> Self {
        let p = Params::default();
        Self {
            threshold: p.threshold,
            margin: p.margin,
            max_records: p.max_records,
            max_generation_lag: p.max_generation_lag,
            generation_grace: p.generation_grace,
            use_cpu: LoadFormula::default().use_cpu,
            return_margin: p.return_margin,
        }
    }
}

impl ControllerKnobs {
    /// Puts the knobs into `round` (the other parameters keep theirs).
    pub fn apply(&self, round: &mut RoundConfig) {
        let p = &mut round.params;
        p.threshold = self.threshold;
        p.margin = self.margin;
        p.max_records = self.max_records;
        p.max_generation_lag = self.max_generation_lag;
        p.generation_grace = self.generation_grace;
        round.load.use_cpu = self.use_cpu;
        p.return_margin = self.return_margin;
    }

    /// Checks the knobs with the assignment's own ranges; the error names the field.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let mut round = RoundConfig::default();
        self.apply(&mut round);
        round.params.validate()
    }
}

/// A duration written as a human string ("500ms", "30s", "10m").
pub(crate) fn human_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write e.g. \"500ms\", \"30s\" or \"10m\""
        ))
    })
}

/// The `[notify]` section: where the Controller tells a human (both channels optional)
/// and after how long a silent server is worth it. Deserialized straight from the file
/// like [`ControllerKnobs`]; [`NotifyKnobs::validate`] names the field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyKnobs {
    /// A command run with the event as JSON on stdin (program and arguments).
    pub command: Option<Vec<String>>,
    /// A URL the event is POSTed to (`http://` or `https://`).
    pub webhook: Option<String>,
    /// Headers of every webhook request, e.g. `{ Authorization = "Bearer …" }`.
    #[serde(deserialize_with = "header_map")]
    pub webhook_headers: Vec<(String, String)>,
    /// The webhook's body template (default: the event's JSON); see [`BodyTemplate`].
    pub webhook_body: Option<String>,
    /// CA file an `https://` webhook is verified against (default: the system bundle).
    pub webhook_ca: Option<PathBuf>,
    /// A server dead this long is reported to a human. Default 5 min
    /// ([`Params::dead_after`]).
    #[serde(deserialize_with = "human_duration")]
    pub dead_after: Duration,
}

impl Default for NotifyKnobs {
    fn default() -> Self {
        Self {
            command: None,
            webhook: None,
            webhook_headers: Vec::new(),
            webhook_body: None,
            webhook_ca: None,
            dead_after: Params::default().dead_after,
        }
    }
}

impl NotifyKnobs {
    /// Checks the channels: a command names a program, a webhook is an http(s) URL, header
    /// names are letters, digits and '-' with one-line values, the body template parses,
    /// and the webhook's options come with a webhook.
    pub fn validate(&self) -> Result<(), KnobError> {
        if self.command.as_ref().is_some_and(Vec::is_empty) {
            return Err(KnobError::new(
                "command",
                "is empty; give the program and its arguments, e.g. [\"/usr/local/bin/page\", \"--team\", \"web\"]",
            ));
        }
        if let Some(url) = &self.webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(KnobError::new(
                    "webhook",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        for (name, value) in &self.webhook_headers {
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || value.contains(['\r', '\n'])
            {
                return Err(KnobError::new(
                    "webhook_headers",
                    format!(
                        "`{name}`: a header name is letters, digits and '-', its value one line"
                    ),
                ));
            }
        }
        if let Some(t) = &self.webhook_body {
            BodyTemplate::parse(t).map_err(|e| KnobError::new("webhook_body", e.to_string()))?;
        }
        if self.webhook.is_none()
            && (!self.webhook_headers.is_empty()
                || self.webhook_body.is_some()
                || self.webhook_ca.is_some())
        {
            return Err(KnobError::new(
                "webhook",
                "webhook_headers, webhook_body and webhook_ca need a webhook URL",
            ));
        }
        Ok(())
    }

    /// Puts the knobs into the Controller's notification channels and its round (the
    /// dead-server delay).
    pub fn apply(&self, notify: &mut NotifyConfig, round: &mut RoundConfig) {
        notify.command = self.command.clone();
        notify.webhook = self.webhook.clone();
        notify.webhook_headers = self.webhook_headers.clone();
        notify.webhook_body = self.webhook_body.clone();
        notify.webhook_ca = self.webhook_ca.clone();
        round.params.dead_after = self.dead_after;
    }
}

fn header_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    Ok(BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_assignments_and_valid() {
        let k = ControllerKnobs::default();
        assert!(k.validate().is_ok());
        let mut round = RoundConfig::default();
        k.apply(&mut round);
        assert_eq!(round.params, Params::default());
        assert_eq!(round.load, LoadFormula::default());
    }

    #[test]
    fn out_of_range_knobs_name_their_field() {
        let bad = |k: ControllerKnobs| k.validate().unwrap_err().field();
        let d = ControllerKnobs::default;
        assert_eq!(
            bad(ControllerKnobs {
                threshold: 11.0,
                ..d()
            }),
            "threshold"
        );
        assert_eq!(
            bad(ControllerKnobs {
                threshold: -1.0,
                ..d()
            }),
            "threshold"
        );
        assert_eq!(bad(ControllerKnobs { margin: 1.5, ..d() }), "margin");
        assert_eq!(
            bad(ControllerKnobs {
                max_records: 31,
                ..d()
            }),
            "max_records"
        );
        assert_eq!(
            bad(ControllerKnobs {
                max_records: 0,
                ..d()
            }),
            "max_records"
        );
    }

    #[test]
    fn notify_knobs_default_to_the_assignments_delay_and_name_their_field() {
        let d = NotifyKnobs::default();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.dead_after, Params::default().dead_after);
        let bad = |k: NotifyKnobs| k.validate().unwrap_err().field();
        assert_eq!(
            bad(NotifyKnobs {
                command: Some(vec![]),
                ..NotifyKnobs::default()
            }),
            "command"
        );
        assert_eq!(
            bad(NotifyKnobs {
                webhook: Some("ftp://x".into()),
                ..NotifyKnobs::default()
            }),
            "webhook"
        );
        assert_eq!(
            bad(NotifyKnobs {
                webhook: Some("https://x".into()),
                webhook_body: Some("{nosuch}".into()),
                ..NotifyKnobs::default()
            }),
            "webhook_body"
        );
    }
}
