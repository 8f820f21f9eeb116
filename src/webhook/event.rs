//! Webhook bodies, parsed leniently into the events payrun acts on.
//!
//! What it owns: the mapping from Dots' documented bodies (shared/dots/README.md, A9) to
//! [`WebhookEvent`]. Dots' bodies are thin and not uniform: `flow.updated` and
//! `transfer.updated` carry `event` plus an id; `transfer.completed` / `transfer.failed` carry
//! `{"transfer": {...}, "transfer_id": ...}` and may lack `event`.
//!
//! Guarantees: parsing never fails: anything unrecognised (unknown event, missing or malformed
//! id, not JSON) becomes `Other`. An event is only a hint to re-fetch the resource by id; no
//! state is taken from the body.

use serde_json::Value;
use uuid::Uuid;

/// What a webhook asks payrun to look at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// `flow.updated`: a payee completed steps of this flow.
    FlowUpdated { flow_id: Uuid },
    /// `transfer.updated`, `transfer.completed`, `transfer.failed` (or any body naming a
    /// `transfer_id`): this transfer changed.
    TransferUpdated { transfer_id: Uuid },
    /// Anything else; `event` is the body's `event` field, if it had one.
    Other { event: Option<String> },
}

fn uuid_at(v: &Value, key: &str) -> Option<Uuid> {
    v.get(key)?.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

impl WebhookEvent {
    /// Parse a raw webhook body; never fails (unrecognised bodies are `Other`).
    pub fn parse(body: &[u8]) -> WebhookEvent {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return WebhookEvent::Other { event: None };
        };
        let event = v.get("event").and_then(Value::as_str).map(str::to_string);
        if event.as_deref() == Some("flow.updated")
            && let Some(flow_id) = uuid_at(&v, "flow_id")
        {
            return WebhookEvent::FlowUpdated { flow_id };
        }
        let transfer_like = match event.as_deref() {
            None => true,
            Some(e) => e.starts_with("transfer."),
        };
        let transfer_id = uuid_at(&v, "transfer_id").or_else(|| {
            // A terminal transfer event without `transfer_id`: fall back to the embedded object.
            transfer_like
                .then(|| v.get("transfer").and_then(|t| uuid_at(t, "id")))
                .flatten()
        });
        match transfer_id {
            Some(transfer_id) => WebhookEvent::TransferUpdated { transfer_id },
            None => WebhookEvent::Other { event },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_updated_body_without_a_valid_id_is_other() {
        let body = br#"{"event":"flow.updated","flow_id":"not-a-uuid"}"#;
        assert_eq!(
            WebhookEvent::parse(body),
            WebhookEvent::Other {
                event: Some("flow.updated".into())
            }
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_other_without_an_event() {
        assert_eq!(
            WebhookEvent::parse(b"<html>"),
            WebhookEvent::Other { event: None }
        );
        assert_eq!(
            WebhookEvent::parse(b"[1,2]"),
            WebhookEvent::Other { event: None }
        );
    }
}
