//! The environment as configuration layers. Every key of every section is
//! `PAYRUN_<SECTION>_<KEY>`, upper case, split at the first `_` after `PAYRUN_` (section names
//! have no `_`; keys may): `PAYRUN_WORKER_BACKOFF_MAX_SECS` is `worker.backoff_max_secs`. The
//! sections and their keys are read off the settings structs themselves (`schema`), so a key
//! or a section added there is settable from the environment with no code here.
//!
//! - The old names ([`ALIASES`]) mean what they always did; when an alias and the canonical
//!   name are both set, the canonical name wins (and a warning says so).
//! - A `PAYRUN_*` variable that names no section (`PAYRUN_ENV`, `PAYRUN_HEALTH_LISTEN`,
//!   `PAYRUN_TEST_PG_URL`, ...) is someone else's and is ignored. One that names a section but
//!   no key of it is ignored with a warning naming the variable (not an error: other programs'
//!   variables may look like ours, and a typo should not stop a worker); [`NOT_CONFIG`] lists
//!   the ones payrun reads elsewhere, which are never config and never warned about.
//! - Values are text, taken as a number or a boolean where the key wants one; a list is
//!   written `[60,300]` (`[a, b]`, items as in TOML but strings may go unquoted).
//! - Secrets are not keys of any section (`DOTS_API_KEY`, `DOTS_WEBHOOK_SECRET` are read by
//!   name by `Settings::load`), so no `PAYRUN_*` variable can put one into the settings.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use figment::error::Kind;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::{Figment, Profile};

use super::Settings;
use super::layers::{Layer, Origin};

/// The old names, kept: (variable, `section.key`). `PAYRUN_DATABASE_URL`,
/// `PAYRUN_DOTS_TIMEOUT_SECS`, `PAYRUN_SCHEDULES_DIR` and `PAYRUN_DASHBOARD_SECURE_COOKIE` were
/// canonical already.
pub const ALIASES: &[(&str, &str)] = &[
    ("DOTS_BASE_URL", "dots.base_url"),
    ("DOTS_CLIENT_ID", "dots.client_id"),
    ("DOTS_APP_ID", "dots.app_id"),
    ("PAYRUN_DOTS_RATE_LIMIT", "dots.rate_limit_rps"),
    ("PAYRUN_CONCURRENCY", "worker.concurrency"),
    ("PAYRUN_POLL_CRON", "worker.poll_cron"),
    ("PAYRUN_MAX_ITEM_CENTS", "limits.max_item_cents"),
    ("PAYRUN_MAX_BATCH_CENTS", "limits.max_batch_cents"),
    (
        "PAYRUN_APPROVAL_THRESHOLD_CENTS",
        "limits.approval_threshold_cents",
    ),
];

/// `PAYRUN_*` variables read elsewhere that look like `<SECTION>_<KEY>`: never config.
/// `PAYRUN_DASHBOARD_TOKEN` is a secret (read by `payrun serve` only).
pub const NOT_CONFIG: &[&str] = &[
    "PAYRUN_DASHBOARD_TOKEN",
    "PAYRUN_EVENTS_URL",
    "PAYRUN_EVENTS_SECRET",
];

const PREFIX: &str = "PAYRUN_";

/// What an environment variable is to the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// It sets `section.key`; `alias` when it is one of the old names.
    Key {
        section: String,
        key: String,
        alias: bool,
    },
    /// `PAYRUN_<SECTION>_<KEY>` for a known section that has no such key.
    UnknownKey { section: String, key: String },
    /// Not configuration.
    NotConfig,
}

/// The sections of [`Settings`] and the keys of each (`None`: a section that does not deny
/// unknown keys, whose keys cannot be listed; a unit test keeps there from being any).
pub(super) struct Schema {
    pub sections: BTreeMap<String, Option<Vec<String>>>,
}

impl Schema {
    /// Read off the structs: a probe key no struct has makes serde's `deny_unknown_fields`
    /// error list the fields it expected.
    fn probe() -> Schema {
        let sections = fields_at(None).unwrap_or_default();
        Schema {
            sections: sections
                .iter()
                .map(|s| (s.clone(), fields_at(Some(s))))
                .collect(),
        }
    }
}

/// The schema of [`Settings`], probed once.
pub(super) fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(Schema::probe)
}

const PROBE: &str = "\u{0}probe";

fn fields_at(section: Option<&str>) -> Option<Vec<String>> {
    let mut dict = Dict::from([(PROBE.to_string(), Value::from(0))]);
    if let Some(s) = section {
        dict = Dict::from([(s.to_string(), Value::from(dict))]);
    }
    let err = Figment::from(Serialized::from(dict, Profile::Default))
        .extract::<Settings>()
        .err()?;
    match err.kind {
        Kind::UnknownField(field, known) if field == PROBE => {
            Some(known.iter().map(|k| k.to_string()).collect())
        }
        _ => None,
    }
}

/// What `var` is to the configuration described by `schema`.
pub(super) fn target(var: &str, schema: &Schema) -> Target {
    if NOT_CONFIG.contains(&var) {
        return Target::NotConfig;
    }
    if let Some((_, path)) = ALIASES.iter().find(|(name, _)| *name == var) {
        let (section, key) = path.split_once('.').expect("aliases name section.key");
        return Target::Key {
            section: section.into(),
            key: key.into(),
            alias: true,
        };
    }
    let Some((section, key)) = var
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
    else {
        return Target::NotConfig;
    };
    let upper = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if !upper(section) || !upper(key) {
        return Target::NotConfig;
    }
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    match schema.sections.get(&section) {
        None => Target::NotConfig,
        Some(Some(keys)) if !keys.contains(&key) => Target::UnknownKey { section, key },
        Some(_) => Target::Key {
            section,
            key,
            alias: false,
        },
    }
}

/// An environment value as configuration: text (extraction converts it where a number or a
/// boolean is wanted), or, written `[..]` (or `{..}`), a list (a table).
pub(super) fn value(raw: &str) -> Value {
    if raw.trim_start().starts_with(['[', '{']) {
        raw.parse().expect("parsing a value is infallible")
    } else {
        Value::from(raw.to_string())
    }
}

/// An environment: a set of variables, each read once.
pub(super) struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Environment {
        Environment {
            vars: vars.into_iter().collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// One layer per variable that sets a key: the aliases first, then the canonical names,
    /// so a canonical name wins over its alias.
    pub fn layers(&self) -> Vec<Layer> {
        let schema = schema();
        let (mut aliases, mut canonical) = (Vec::new(), Vec::new());
        for (var, raw) in &self.vars {
            match target(var, schema) {
                Target::Key {
                    section,
                    key,
                    alias,
                } => {
                    let layer = Layer {
                        origin: Origin::Env(var.clone()),
                        dict: Dict::from([(
                            section.clone(),
                            Value::from(Dict::from([(key.clone(), value(raw))])),
                        )]),
                    };
                    let list = if alias { &mut aliases } else { &mut canonical };
                    list.push((format!("{section}.{key}"), var, layer));
                }
                Target::UnknownKey { section, key } => tracing::warn!(
                    "{var} is not a payrun setting ([{section}] has no key {key:?}); ignored"
                ),
                Target::NotConfig => {}
            }
        }
        for (path, alias, _) in &aliases {
            if let Some((_, name, _)) = canonical.iter().find(|(p, _, _)| p == path) {
                tracing::warn!("{alias} and {name} are both set ({path}): {name} wins");
            }
        }
        aliases
            .into_iter()
            .chain(canonical)
            .map(|(_, _, layer)| layer)
            .collect()
    }
}
