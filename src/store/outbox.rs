//! The transactional outbox's write side: the event rows a change to an item (or batch)
//! implies, written by the caller in the transaction of that change (see `transitions.rs`), so
//! no change goes unreported and no event reports a change that rolled back.
//!
//! Guarantees: an item event's `version` is the item's `event_version` as bumped by the same
//! `UPDATE` that wrote the change (so versions only grow, per item, in commit order); its id is
//! derived from the item id and version (`events::event_id`), and writing it twice is a no-op.

use serde::Serialize;

use super::ItemRecord;
use crate::events::{self, EventType, ItemData};

/// Appends one event (`$1` id, `$2` type, `$3` batch, `$4` item or NULL, `$5` version,
/// `$6` created, `$7` body). An id already there is left alone: the same event.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO outbox_events (id, type, batch_id, item_id, version, created_at, body)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";

/// One outbox row, ready to bind to [`INSERT_EVENT`].
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OutboxRow {
    pub id: String,
    pub kind: EventType,
    pub batch_id: String,
    pub item_id: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub body: String,
}

impl OutboxRow {
    pub(super) fn new<D: Serialize>(
        kind: EventType,
        batch_id: String,
        item_id: Option<String>,
        version: i64,
        created_at: i64,
        data: &D,
    ) -> OutboxRow {
        let subject = item_id.clone().unwrap_or_else(|| batch_id.clone());
        let id = events::event_id(&subject, version);
        let data = serde_json::to_value(data).unwrap_or(serde_json::Value::Null);
        let body =
            serde_json::to_string(&events::Envelope::new(id.clone(), kind, created_at, data))
                .unwrap_or_default();
        OutboxRow {
            id,
            kind,
            batch_id,
            item_id,
            version,
            created_at,
            body,
        }
    }
}

/// Binds an [`OutboxRow`] to [`INSERT_EVENT`] and runs it on `$tx` (either backend).
macro_rules! insert_outbox_row {
    ($tx:expr, $row:expr) => {{
        let r = $row;
        sqlx::query(super::outbox::INSERT_EVENT)
            .bind(&r.id)
            .bind(r.kind.as_str())
            .bind(&r.batch_id)
            .bind(&r.item_id)
            .bind(r.version)
            .bind(r.created_at)
            .bind(&r.body)
            .execute($tx)
            .await?;
    }};
}
pub(super) use insert_outbox_row;

/// The rows for `kinds`, about `item` as written (its `event_version` already bumped by
/// `kinds.len()`): versions `event_version - len + 1 ..= event_version`, in order.
pub(super) fn item_event_rows(item: &ItemRecord, kinds: &[EventType], now: i64) -> Vec<OutboxRow> {
    let first = item.event_version - kinds.len() as i64 + 1;
    kinds
        .iter()
        .enumerate()
        .map(|(k, kind)| {
            let version = first + k as i64;
            OutboxRow::new(
                *kind,
                item.batch_id.to_string(),
                Some(item.id.to_string()),
                version,
                now,
                &item_data(item, *kind, version, now),
            )
        })
        .collect()
}

/// What an item event about `item` carries.
pub(super) fn item_data(item: &ItemRecord, kind: EventType, version: i64, now: i64) -> ItemData {
    let mut d = ItemData {
        batch_id: item.batch_id.to_string(),
        item_id: item.id.to_string(),
        payee_id: item.payee_id.clone(),
        amount_cents: item.amount.get(),
        amount: crate::money::format_cents(item.amount.get()),
        state: item.state.to_string(),
        version,
        link: None,
        link_expires_at: None,
        reason: None,
        rerunnable: None,
        reminder: None,
    };
    match kind {
        EventType::ItemOnboardingLink => d.link = item.onboarding_link.clone(),
        EventType::ItemPayoutLink | EventType::ItemReminder => {
            d.link = item.payout_link.clone();
            d.link_expires_at = Some(events::rfc3339(now + events::PAYOUT_LINK_WINDOW_MS));
            if kind == EventType::ItemReminder {
                // The write that records a reminder's flow counts it.
                d.reminder = Some(item.reminders);
            }
        }
        EventType::ItemFailed => {
            let reason = item.last_error.clone().unwrap_or_default();
            d.rerunnable = Some(events::rerun_can_help(&reason));
            d.reason = Some(reason);
        }
        _ => {}
    }
    d
}

/// An event as stored in the outbox, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: String,
    pub kind: EventType,
    pub batch_id: crate::batch::BatchId,
    pub item_id: Option<crate::batch::ItemId>,
    pub version: i64,
    pub created_at: i64,
    /// The envelope exactly as delivered.
    pub body: String,
}

type EventTuple = (String, String, String, Option<String>, i64, i64, String);

fn parse_event(t: EventTuple) -> Result<OutboxEvent, super::StoreError> {
    let corrupt =
        |c: &str, e: String| super::StoreError::Corrupt(format!("outbox_events.{c}: {e}"));
    Ok(OutboxEvent {
        kind: t
            .1
            .parse()
            .map_err(|e: events::UnknownEventType| corrupt("type", e.to_string()))?,
        batch_id: t
            .2
            .parse()
            .map_err(|e| corrupt("batch_id", format!("{e}")))?,
        item_id: t
            .3
            .as_deref()
            .map(|s| s.parse().map_err(|e| corrupt("item_id", format!("{e}"))))
            .transpose()?,
        id: t.0,
        version: t.4,
        created_at: t.5,
        body: t.6,
    })
}

impl super::Store {
    /// The outbox's events, of one batch or all, oldest first (by creation, then version).
    pub async fn outbox_events(
        &self,
        batch: Option<crate::batch::BatchId>,
    ) -> Result<Vec<OutboxEvent>, super::StoreError> {
        let rows: Vec<EventTuple> = super::on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT id, type, batch_id, item_id, version, created_at, body FROM outbox_events
             WHERE $1 IS NULL OR batch_id = $1 ORDER BY created_at, item_id, version")
            .bind(batch.map(|b| b.to_string())).fetch_all(p).await?);
        rows.into_iter().map(parse_event).collect()
    }
}
