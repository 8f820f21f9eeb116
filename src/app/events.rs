//! `payrun events list` and `payrun events replay`: read the outbox with each endpoint's
//! delivery, and make chosen deliveries pending again. Parsing of the operator's input
//! (event id, `--since` time) lives here; a bad one is a `EventsError::BadInput` (exit 2).

use crate::store::{EventDeliveries, ReplaySelector, Store, StoreError};

/// Why an events command did not run.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventsError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, EventsError::BadInput(_))
    }
}

/// What `replay` is asked for, as typed.
pub enum ReplayArg<'a> {
    Event(&'a str),
    Batch(&'a str),
    Since(&'a str),
}

/// Events (oldest first) with their deliveries; at most `limit`.
pub async fn list(
    store: &Store,
    batch: Option<&str>,
    failed_only: bool,
    limit: i64,
) -> Result<Vec<EventDeliveries>, EventsError> {
    Ok(store
        .events_with_deliveries(batch, failed_only, limit)
        .await?)
}

/// Parses `--since`: RFC 3339 or unix milliseconds.
pub fn parse_since(raw: &str) -> Result<i64, EventsError> {
    if let Ok(ms) = raw.trim().parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            EventsError::BadInput(format!(
                "--since {raw:?} is not a time ({e}); give RFC 3339 (2026-12-02T07:00:00Z) or unix ms"
            ))
        })
}

/// Makes the selected events' deliveries pending again; returns how many events were selected.
pub async fn replay(store: &Store, which: ReplayArg<'_>, now: i64) -> Result<u64, EventsError> {
    let sel = match which {
        ReplayArg::Event(id) => {
            if !store.outbox_event_exists(id).await? {
                return Err(EventsError::BadInput(format!(
                    "no event {id:?}; `payrun events list` shows them"
                )));
            }
            ReplaySelector::Event(id.to_string())
        }
        ReplayArg::Batch(b) => ReplaySelector::Batch(b.to_string()),
        ReplayArg::Since(t) => ReplaySelector::Since(parse_since(t)?),
    };
    Ok(store.replay_events(&sel, now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_and_unix_ms_and_refuses_the_rest() {
        assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_since("1234").unwrap(), 1234);
        assert!(parse_since("yesterday").unwrap_err().is_bad_input());
    }
}
