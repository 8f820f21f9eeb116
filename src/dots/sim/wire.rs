//! Every JSON shape the simulator reads or writes, in one place: the API objects as Dots shows
//! them (`user`, `flow`, `transfer`, transfer batch, list pages, the `{"message", "error_code"}` error), the
//! validated `POST /v2/flows` body, the webhook bodies, and the `/_sim/...` test-hook answers
//! (ledger, clock, fund). The wire types shared with the client live in `dots::types`; this module
//! adds only what the simulator alone renders. It imports no other simulator module.
//!
//! Guarantees: responses follow the spec's `user`, `flow`, `transfer` and `app` schemas (extra fields
//! the real API sends, like `payout_link_id: null` on flows, are added; fields the spec types
//! without `null`, like `default_payout_method`, are left out rather than sent as null);
//! timestamps are RFC 3339 with `Z`.

use crate::dots::types::{Flow, Page, Transfer, TransferBatch, User, Wallet};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// A user as the API shows it, with a minimal `compliance` block.
pub fn user_json(user: &User) -> Value {
    let mut v = serde_json::to_value(user).expect("user serializes");
    v["compliance"] = json!({
        "tax_id_verification": "unsubmitted",
        "date_of_birth_collected": false,
        "must_collect_1099": false,
        "1099_collected": false,
        "w8_ben_collected": false,
        "flagged": false,
        "id_verified": false,
        "has_criminal_activity": false,
        "w9": null,
        "flags": { "ofac": false, "ofac_status": "unflagged" },
    });
    v
}

/// A flow as the API shows it (`payout_link_id` is null for plain flows).
pub fn flow_json(flow: &Flow) -> Value {
    let mut v = serde_json::to_value(flow).expect("flow serializes");
    v["payout_link_id"] = Value::Null;
    v
}

/// A transfer as the API shows it; `amount` is a string when `as_string` is set.
pub fn transfer_json(t: &Transfer, as_string: bool) -> Value {
    let mut v = serde_json::to_value(t).expect("transfer serializes");
    v["external_data"] = json!({});
    v["transactions"] = json!([]);
    if as_string {
        v["amount"] = Value::String(t.amount.to_string());
    }
    v
}

/// A transfer batch as the API shows it (the spec's create/get answer: `id`, `status`,
/// `metadata`, `items` of `transfer-batch-item`). Absent values are left out, not sent as null
/// (the spec types `transfer_id`, `error` and `metadata` without null): an item has either
/// `transfer_id` or `error`. Each item also carries its `idempotency_key`, which the spec's
/// item does not list (a lenient extension; items answer in request order too). Item amounts
/// are strings when `as_string` is set.
pub fn transfer_batch_json(b: &TransferBatch, as_string: bool) -> Value {
    let mut v = serde_json::to_value(b).expect("transfer batch serializes");
    drop_nulls(&mut v);
    if let Some(items) = v["items"].as_array_mut() {
        for (item, it) in items.iter_mut().zip(&b.items) {
            drop_nulls(item);
            if as_string {
                item["amount"] = Value::String(it.amount.to_string());
            }
        }
    }
    v
}

fn drop_nulls(v: &mut Value) {
    if let Value::Object(map) = v {
        map.retain(|_, field| !field.is_null());
    }
}

/// The App's figures the simulator holds (cents), rendered by [`app_json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppFigures {
    pub wallet_cents: i64,
    pub money_out_cents: i64,
    pub users: i64,
}

/// An App as `GET /v2/apps/{app_id}` shows it (the spec's `app` schema). `wallet_balance` and
/// `money_out` are decimal strings in **dollars** (`"500.00"`): the spec says only "decimal",
/// and dollars is how Dots most likely answers (see README, "Holds, pause and funding").
pub fn app_json(id: Uuid, f: AppFigures) -> Value {
    json!({
        "id": id,
        "name": "payrun simulator",
        "status": "approved",
        "metrics": {
            "wallet_balance": dollars(f.wallet_cents),
            "money_out": dollars(f.money_out_cents),
            "connected_users": f.users,
        },
        "metadata": {},
    })
}

/// Cents as a decimal dollar string: `50000` -> `"500.00"`, `-5` -> `"-0.05"`.
fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// `POST /_sim/fund`'s answer: the App wallet after the deposit, in cents.
pub fn fund_json(wallet_cents: i64) -> Value {
    json!({ "app_wallet": wallet_cents })
}

/// A list page as the API shows it: `{"data": [...], "has_more"}`.
pub fn page_json<T>(page: Page<T>, render: impl Fn(&T) -> Value) -> Value {
    let data: Vec<Value> = page.data.iter().map(render).collect();
    json!({ "data": data, "has_more": page.has_more })
}

/// The error body every 4xx/5xx answer carries.
pub fn error_json(message: &str, code: &str) -> Value {
    json!({ "message": message, "error_code": code })
}

/// A validated `POST /v2/flows` body.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRequest {
    pub steps: Vec<String>,
    pub user_id: Option<Uuid>,
    pub metadata: Option<Value>,
}

/// The metadata of a user the simulator made for a payee who onboarded through a flow.
pub fn onboarded_metadata(flow_id: Uuid) -> Value {
    json!({ "onboarded_via_flow": flow_id.to_string() })
}

/// The `flow.updated` webhook body.
pub fn flow_updated_webhook(flow_id: Uuid) -> Value {
    json!({ "event": "flow.updated", "flow_id": flow_id })
}

/// The `transfer.updated` webhook body.
pub fn transfer_updated_webhook(transfer_id: Uuid) -> Value {
    json!({ "event": "transfer.updated", "transfer_id": transfer_id })
}

/// The `transfer.completed` / `transfer.failed` webhook body (no `event` field, as documented).
pub fn transfer_terminal_webhook(t: &Transfer, as_string: bool) -> Value {
    json!({ "transfer": transfer_json(t, as_string), "transfer_id": t.id })
}

/// `POST /_sim/clock/advance`'s answer.
pub fn clock_json(now: DateTime<Utc>) -> Value {
    json!({ "now": now })
}

/// One transfer as `GET /_sim/ledger` shows it (amount always a number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerTransfer {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub idempotency_key: Option<Uuid>,
    pub metadata: Option<serde_json::Value>,
    pub status: String,
    pub created: DateTime<Utc>,
}

/// One user's wallet as `GET /_sim/ledger` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerUser {
    pub id: Uuid,
    pub wallet: Wallet,
}

/// Everything money-related the simulator holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub transfers: Vec<LedgerTransfer>,
    pub users: Vec<LedgerUser>,
    pub app_wallet: i64,
}

impl Ledger {
    /// The wallet of user `id`, if the simulator knows the user.
    pub fn wallet(&self, id: Uuid) -> Option<&Wallet> {
        self.users.iter().find(|u| u.id == id).map(|u| &u.wallet)
    }
}
