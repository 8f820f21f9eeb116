//! What a bad configuration says: the file or the environment variable, the key, and why.
//! Composed here from figment's error parts rather than taken from its `Display`, so that no
//! message shows a database password: a value of `database.url` is shown redacted, and any
//! URL-like word in a message (a TOML syntax error quotes the offending line) is redacted
//! (`secret::redact_url`). Secrets proper never reach figment at all.

use figment::error::{Actual, Kind};

use super::layers::{Layer, Origin, origin_of};
use crate::secret::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A file that is not TOML, or holds a key payrun does not know or a value it cannot take.
    #[error("invalid config in {path}: {reason}")]
    File { path: String, reason: String },
    /// An environment variable whose value its key cannot take.
    #[error("invalid value for {var}: {reason}")]
    Env { var: String, reason: String },
    /// `[events]` or its endpoints' secrets are unusable (the message never holds a secret).
    #[error("invalid events config: {reason}")]
    Events { reason: String },
}

/// Keys whose values are never shown as typed (they may hold a password).
const REDACTED_KEYS: &[&str] = &["database.url"];

impl ConfigError {
    pub(super) fn syntax(origin: &Origin, message: &str) -> ConfigError {
        ConfigError::File {
            path: origin.to_string(),
            reason: scrub_urls(message.trim_end()),
        }
    }

    pub(super) fn from_figment(e: &figment::Error, layers: &[Layer]) -> ConfigError {
        let reason = reason(e);
        match origin_of(layers, &e.path) {
            Some(Origin::Env(var)) => ConfigError::Env {
                var: var.clone(),
                reason: if matches!(&e.kind, Kind::InvalidType(_, want) if want.contains("sequence"))
                {
                    format!("{reason} (write a list as [a,b])")
                } else {
                    reason
                },
            },
            Some(origin) => ConfigError::File {
                path: origin.to_string(),
                reason,
            },
            // A key no layer sets (missing everywhere): the merged configuration's fault.
            None => ConfigError::File {
                path: "the merged configuration".into(),
                reason,
            },
        }
    }
}

fn reason(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let redacted = REDACTED_KEYS.contains(&key.as_str());
    match &e.kind {
        Kind::UnknownField(field, known) => match e.path.len() {
            0 | 1 => format!("unknown section [{field}] (known: {})", known.join(", ")),
            n => format!(
                "unknown key `{key}` ([{}] has: {})",
                e.path[..n - 1].join("."),
                known.join(", ")
            ),
        },
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "`{key}` must be {expected}, not {}",
                shown(actual, redacted)
            )
        }
        Kind::MissingField(field) if key.is_empty() => format!("missing `{field}`"),
        Kind::MissingField(field) => format!("missing `{key}.{field}`"),
        other if key.is_empty() => scrub_urls(&other.to_string()),
        other => format!("`{key}`: {}", scrub_urls(&other.to_string())),
    }
}

fn shown(actual: &Actual, redacted: bool) -> String {
    match actual {
        Actual::Str(s) if redacted => format!("string {:?}", redact_url(s)),
        Actual::Str(s) => format!("string {s:?}"),
        other => scrub_urls(&other.to_string()),
    }
}

/// `text` with every word that could be a URL with credentials (it has `://` or `@`)
/// redacted. Words are split at whitespace and quotes.
pub(super) fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains("://") || word.contains('@') {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || c == '"' || c == '\'' || c == '`' {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}
