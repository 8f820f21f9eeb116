//! Outbound events: what payrun tells the marketplace, in the Standard Webhooks format.
//!
//! What it owns: the event types ([`EventType`]), which events a write to an item implies
//! ([`item_events`], a pure function), the JSON an event carries ([`Envelope`], [`ItemData`],
//! [`BatchData`]) and the derived event ids. It does no I/O: the store writes the events in the
//! transaction of the change they report (`store::outbox`), and the deliverer signs and sends
//! them (`webhook::verify::Verifier::sign`: one implementation signs and verifies).
//!
//! Guarantees:
//! - an event's id is derived from its subject and version, so an event written again by a
//!   retried transaction can never pass for a different one, and a replay keeps its id;
//! - `version` only grows per subject (item or batch): it is the subject's `event_version`
//!   counter, bumped in the statement that writes the change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::item::ItemState;

/// The types of event payrun sends. `ALL` is mirrored by the CHECK on `outbox_events.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    BatchCreated,
    BatchApproved,
    BatchHeld,
    BatchResumed,
    BatchSettled,
    BatchCompleted,
    BatchCanceled,
    ItemOnboardingLink,
    ItemPayoutLink,
    ItemCompleted,
    ItemFailed,
    ItemCanceled,
    ItemReminder,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        EventType::BatchCreated,
        EventType::BatchApproved,
        EventType::BatchHeld,
        EventType::BatchResumed,
        EventType::BatchSettled,
        EventType::BatchCompleted,
        EventType::BatchCanceled,
        EventType::ItemOnboardingLink,
        EventType::ItemPayoutLink,
        EventType::ItemCompleted,
        EventType::ItemFailed,
        EventType::ItemCanceled,
        EventType::ItemReminder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BatchCreated => "batch.created",
            EventType::BatchApproved => "batch.approved",
            EventType::BatchHeld => "batch.held",
            EventType::BatchResumed => "batch.resumed",
            EventType::BatchSettled => "batch.settled",
            EventType::BatchCompleted => "batch.completed",
            EventType::BatchCanceled => "batch.canceled",
            EventType::ItemOnboardingLink => "item.onboarding_link",
            EventType::ItemPayoutLink => "item.payout_link",
            EventType::ItemCompleted => "item.completed",
            EventType::ItemFailed => "item.failed",
            EventType::ItemCanceled => "item.canceled",
            EventType::ItemReminder => "item.reminder",
        }
    }

    /// Whether the event is about a batch (else about one item).
    pub fn is_batch(self) -> bool {
        self.as_str().starts_with("batch.")
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event type {0:?} (known: batch.created, batch.approved, batch.held, batch.resumed, batch.settled, batch.completed, batch.canceled, item.onboarding_link, item.payout_link, item.completed, item.failed, item.canceled, item.reminder)"
)]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Where one event's delivery to one endpoint stands. `ALL` is mirrored by the CHECK on
/// `outbox_deliveries.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not acknowledged yet; tried again at its `next_attempt_at`.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// The last try of the retry schedule failed too (a replay makes it pending again).
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}

/// One write to an item, as far as events go: the state it moved to (`None`: no state
/// change), which links it set, and whether the payout link it sets is a reminder's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemWrite {
    pub to: Option<ItemState>,
    pub sets_onboarding_link: bool,
    pub sets_payout_link: bool,
    /// The payout link is the fresh one of this reminder (1, 2, …): `item.reminder` instead
    /// of `item.payout_link`.
    pub reminder: Option<i64>,
}

/// The events a write to an item implies, in the order they are versioned. A link comes
/// before the state it leads to (a payout flow made in the write that moves the item to
/// `awaiting_payout`: `item.payout_link`; a reminder's fresh flow: `item.reminder`).
pub fn item_events(w: ItemWrite) -> Vec<EventType> {
    let mut out = Vec::new();
    if w.sets_onboarding_link {
        out.push(EventType::ItemOnboardingLink);
    }
    if w.sets_payout_link {
        out.push(match w.reminder {
            Some(_) => EventType::ItemReminder,
            None => EventType::ItemPayoutLink,
        });
    }
    match w.to {
        Some(ItemState::Completed) => out.push(EventType::ItemCompleted),
        Some(ItemState::Failed) => out.push(EventType::ItemFailed),
        Some(ItemState::Canceled) => out.push(EventType::ItemCanceled),
        _ => {}
    }
    out
}

/// The id of the `version`th event about `subject` (an item or batch id): derived, never
/// random (`evt_` and a UUIDv5 of both).
pub fn event_id(subject: &str, version: i64) -> String {
    const NS: Uuid = Uuid::from_u128(0x7061_7972_756e_4576_8000_0000_0000_0001);
    let u = Uuid::new_v5(&NS, format!("{subject}/{version}").as_bytes());
    format!("evt_{}", u.simple())
}

/// Whether `payrun rerun` can help an item that failed with `reason`: yes when it gave up on
/// a failure that may pass (time ran out on errors, timeouts), no when Dots refused the request
/// itself (a rerun sends the same request; the data must change first).
pub fn rerun_can_help(reason: &str) -> bool {
    !reason.contains("refused")
}

/// A payout flow's link is pre-authenticated for this long after the flow is made (Dots).
pub const PAYOUT_LINK_WINDOW_MS: i64 = 15 * 60 * 1000;

/// What an item event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemData {
    pub batch_id: String,
    pub item_id: String,
    pub payee_id: String,
    pub amount_cents: i64,
    /// The amount in dollars, as text ("25.00").
    pub amount: String,
    pub state: String,
    pub version: i64,
    /// `item.onboarding_link`, `item.payout_link`, `item.reminder`: the flow's link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `item.payout_link`, `item.reminder`: when the link's pre-authenticated window ends
    /// (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_expires_at: Option<String>,
    /// `item.failed`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `item.failed`: whether `payrun rerun` can help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerunnable: Option<bool>,
    /// `item.reminder`: which reminder this is (1, 2, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminder: Option<i64>,
}

/// What a batch event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchData {
    pub batch_id: String,
    pub status: String,
    pub version: i64,
    pub items: i64,
    pub total_cents: i64,
    /// `batch.held`: the reason (a hold reason, or `paused`) and its detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An event as delivered: `{"id", "type", "created", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub data: serde_json::Value,
}

impl Envelope {
    pub fn new(id: String, kind: EventType, created_ms: i64, data: serde_json::Value) -> Self {
        Envelope {
            id,
            kind: kind.as_str().to_owned(),
            created: rfc3339(created_ms),
            data,
        }
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_parses_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!("item.paid".parse::<EventType>().is_err());
    }

    #[test]
    fn a_write_implies_its_events_in_order() {
        use EventType::*;
        use ItemState::*;
        let w = |to, o, p| ItemWrite {
            to,
            sets_onboarding_link: o,
            sets_payout_link: p,
            reminder: None,
        };
        let r = |to, p, n| ItemWrite {
            to,
            sets_onboarding_link: false,
            sets_payout_link: p,
            reminder: Some(n),
        };
        let table: &[(ItemWrite, &[EventType])] = &[
            (w(Some(Onboarding), true, false), &[ItemOnboardingLink]),
            (w(None, true, false), &[ItemOnboardingLink]),
            (w(Some(AwaitingPayout), false, true), &[ItemPayoutLink]),
            (w(None, false, true), &[ItemPayoutLink]),
            (w(Some(Completed), false, false), &[ItemCompleted]),
            (w(Some(Failed), false, false), &[ItemFailed]),
            (w(Some(Canceled), false, false), &[ItemCanceled]),
            (w(Some(Transferring), false, false), &[]),
            (w(Some(Transferred), false, false), &[]),
            (w(Some(Pending), false, false), &[]),
            (w(None, false, false), &[]),
            (r(Some(AwaitingPayout), true, 1), &[ItemReminder]),
            (r(Some(AwaitingPayout), true, 3), &[ItemReminder]),
            (r(None, true, 2), &[ItemReminder]),
            // A reminder's number with no link set (the step back before its flow): nothing.
            (r(Some(Transferred), false, 1), &[]),
        ];
        for (write, want) in table {
            assert_eq!(item_events(*write), *want, "{write:?}");
        }
    }

    #[test]
    fn event_ids_are_derived_from_subject_and_version() {
        assert_eq!(event_id("a", 1), event_id("a", 1));
        assert_ne!(event_id("a", 1), event_id("a", 2));
        assert_ne!(event_id("a", 1), event_id("b", 1));
        assert!(event_id("a", 1).starts_with("evt_"));
    }
}
