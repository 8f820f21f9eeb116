//! Secrets held in memory: [`Secret`], a string whose `Debug` and `Display` print `***`, so
//! a secret inside any settings struct stays out of logs and error messages however the
//! struct is printed. Read it only where it is used (`expose`). It has no `Serialize`: a
//! secret is never written out by accident. Also database URLs made safe to print
//! ([`redact_url`], [`scrub`]): a URL may hold a password, but is shown with it masked.
//!
//! A leaf: it imports no other payrun module.

use std::fmt;

use serde::Deserialize;

mod url;

pub use url::{redact_url, scrub};

/// A secret string (API key, webhook secret, dashboard token): shown as `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_or_display() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(s.clone())),
            "*** *** Some(***)"
        );
        assert_eq!(s.expose(), "hunter2-hunter2");
        let d: Secret = toml::from_str::<toml::Table>("k = \"x1\"").unwrap()["k"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(d.expose(), "x1");
    }
}
