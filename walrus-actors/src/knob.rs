//! A knob of the configuration file out of its range: which knob and why. Each role's
//! knobs type checks its own ranges (`validate()`) and names the field; the binary's
//! config adds the file, the line and the section.

/// A knob out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KnobError {
    field: &'static str,
    message: String,
}

impl KnobError {
    /// `field` is `message` (e.g. "must be at least 1").
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// The knob's name in its section, e.g. `panic_after`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}
