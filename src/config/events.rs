//! `[events]`: outbound event delivery (issue 13). Endpoints come from the environment
//! (`PAYRUN_EVENTS_URL` + `PAYRUN_EVENTS_SECRET`, named `default`) and from
//! `[[events.endpoints]]` (`name`, `url`, `secret_env` naming the variable holding its secret,
//! optional `types`). Secrets are read from the environment only, held as [`Secret`]s, and no
//! error about them shows their value.

use serde::Deserialize;

use crate::secret::Secret;

/// The event type names payrun sends (mirrors `events::EventType::ALL`; config is a leaf, a
/// unit test in `jobs::outbound` keeps the two equal).
pub const EVENT_TYPES: [&str; 13] = [
    "batch.created",
    "batch.approved",
    "batch.held",
    "batch.resumed",
    "batch.settled",
    "batch.completed",
    "batch.canceled",
    "item.onboarding_link",
    "item.payout_link",
    "item.completed",
    "item.failed",
    "item.canceled",
    "item.reminder",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// The delay before each try, in seconds; after the last failed try the delivery is failed.
    pub retry_schedule_secs: Vec<u64>,
    pub timeout_secs: u64,
    pub poll_ms: u64,
    /// A claimed delivery is another worker's to take after this long (longer than a try).
    pub lease_secs: u64,
    #[serde(default)]
    pub endpoints: Vec<EndpointSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    pub name: String,
    pub url: String,
    /// The name of the environment variable holding the `whsec_...` secret.
    #[serde(default)]
    pub secret_env: String,
    /// Event types sent to it; none: all.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Read from `secret_env`.
    #[serde(skip)]
    pub secret: Secret,
}

/// Why `[events]` is unusable (never holds a secret's value).
pub(super) fn resolve(
    ev: &mut EventsSettings,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if let Some(url) = get("PAYRUN_EVENTS_URL").filter(|u| !u.is_empty()) {
        ev.endpoints.insert(
            0,
            EndpointSettings {
                name: "default".into(),
                url,
                secret_env: "PAYRUN_EVENTS_SECRET".into(),
                types: None,
                secret: Secret::default(),
            },
        );
    }
    if ev.retry_schedule_secs.is_empty() {
        return Err("events.retry_schedule_secs must list at least one delay".into());
    }
    if ev.lease_secs <= ev.timeout_secs {
        return Err(format!(
            "events.lease_secs ({}) must be longer than events.timeout_secs ({})",
            ev.lease_secs, ev.timeout_secs
        ));
    }
    let mut names = std::collections::HashSet::new();
    for e in &mut ev.endpoints {
        if e.name.is_empty() || e.name.contains(',') || !names.insert(e.name.clone()) {
            return Err(format!(
                "events endpoint name {:?} is empty or repeated",
                e.name
            ));
        }
        if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
            return Err(format!(
                "events endpoint {}: url must be http(s)://",
                e.name
            ));
        }
        for t in e.types.iter().flatten() {
            if !EVENT_TYPES.contains(&t.as_str()) {
                return Err(format!(
                    "events endpoint {}: unknown event type {t:?} (known: {})",
                    e.name,
                    EVENT_TYPES.join(", ")
                ));
            }
        }
        if e.secret_env.is_empty() {
            return Err(format!("events endpoint {}: secret_env is missing", e.name));
        }
        let Some(s) = get(&e.secret_env).filter(|s| !s.is_empty()) else {
            return Err(format!(
                "events endpoint {}: the environment variable {} (its secret) is not set",
                e.name, e.secret_env
            ));
        };
        if !secret_looks_right(&s) {
            return Err(format!(
                "events endpoint {}: {} must be whsec_ followed by base64 of at least 16 bytes",
                e.name, e.secret_env
            ));
        }
        e.secret = Secret::new(s);
    }
    Ok(())
}

fn secret_looks_right(s: &str) -> bool {
    use base64::Engine;
    s.trim()
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| k.len() >= 16)
}
