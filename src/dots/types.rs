//! Wire types of the Dots v2 API, shared by the client (`dots::client`) and the simulator
//! (`dots::sim`) and nothing else.
//!
//! Field names follow `../shared/dots/openapi-v2.yaml`. Decoding is lenient where the real API
//! is loose (see `shared/dots/README.md`, section B): `amount` may be a number or a string
//! (`"-1000"`, `"1000.0000000000"`), timestamps may carry a zone or not. Encoding is strict:
//! what we send is exactly what the spec asks for.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// A flow step name, as the spec's enum spells it.
pub const STEP_NAMES: &[&str] = &[
    "compliance",
    "id-verification",
    "background-check",
    "manage-payments",
    "manage-payouts",
    "payout",
    "redirect",
    "pdf-form-fill",
];

/// `POST /v2/flows` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateFlow {
    /// Step names or `{name, ...options}` objects.
    pub steps: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_auth: Option<bool>,
}

/// A flow. It has no status: it is done when `completed_steps` covers `steps`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flow {
    pub id: Uuid,
    #[serde(deserialize_with = "lenient_time")]
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub user_id: Option<Uuid>,
    #[serde(default)]
    pub steps: Vec<String>,
    #[serde(default)]
    pub completed_steps: Vec<String>,
    pub link: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

impl Flow {
    /// Every step the flow asked for has been completed.
    pub fn is_complete(&self) -> bool {
        self.steps.iter().all(|s| self.completed_steps.contains(s))
    }
}

/// `POST /v2/transfers` body. Negative `amount` credits the user from the App wallet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateTransfer {
    pub amount: i64,
    pub user_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A transfer as Dots reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transfer {
    pub id: Uuid,
    #[serde(deserialize_with = "lenient_time")]
    pub created: DateTime<Utc>,
    pub user_id: Uuid,
    pub status: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Cents, signed as sent (negative = credit to the user).
    #[serde(deserialize_with = "lenient_cents")]
    pub amount: i64,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// A transfer's `status`, as the spec's `transfer` schema lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStatus {
    Created,
    Pending,
    Failed,
    Completed,
    Reversed,
    Canceled,
    Flagged,
    /// A value the spec does not list.
    Unknown,
}

impl TransferStatus {
    pub fn parse(s: &str) -> TransferStatus {
        match s {
            "created" => TransferStatus::Created,
            "pending" => TransferStatus::Pending,
            "failed" => TransferStatus::Failed,
            "completed" => TransferStatus::Completed,
            "reversed" => TransferStatus::Reversed,
            "canceled" => TransferStatus::Canceled,
            "flagged" => TransferStatus::Flagged,
            _ => TransferStatus::Unknown,
        }
    }
}

impl Transfer {
    pub fn status_kind(&self) -> TransferStatus {
        TransferStatus::parse(&self.status)
    }

    /// The string value of a metadata key, if metadata is an object holding it.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }
}

/// `POST /v2/transfer-batches` body: many App→user transfers in one call, each item with its
/// own idempotency key (shared with single transfers: a key used in either is a duplicate in the
/// other), and an optional key for the batch as a whole.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateTransferBatch {
    pub items: Vec<TransferBatchItemRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// One item of a [`CreateTransferBatch`]: what a [`CreateTransfer`] would carry, the key
/// required.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferBatchItemRequest {
    pub amount: i64,
    pub user_id: Uuid,
    pub idempotency_key: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_exempt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A transfer batch as Dots reports it (create, get and list answer the same shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferBatch {
    pub id: Uuid,
    /// `pending` or `completed` (see [`TransferBatchStatus`]).
    pub status: String,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub items: Vec<TransferBatchItem>,
}

impl TransferBatch {
    pub fn status_kind(&self) -> TransferBatchStatus {
        TransferBatchStatus::parse(&self.status)
    }
}

/// One item of a [`TransferBatch`]: the transfer it made (`transfer_id`), or why it made none
/// (`error`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferBatchItem {
    #[serde(default)]
    pub transfer_id: Option<Uuid>,
    #[serde(deserialize_with = "lenient_cents")]
    pub amount: i64,
    pub user_id: Uuid,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// The item's key. Not in the spec's `transfer-batch-item`: read if present (the simulator
    /// sends it), never relied on — items also answer in request order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<Uuid>,
}

/// A transfer batch's `status`, as the spec lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferBatchStatus {
    Pending,
    Completed,
    /// A value the spec does not list.
    Unknown,
}

impl TransferBatchStatus {
    pub fn parse(s: &str) -> TransferBatchStatus {
        match s {
            "pending" => TransferBatchStatus::Pending,
            "completed" => TransferBatchStatus::Completed,
            _ => TransferBatchStatus::Unknown,
        }
    }
}

/// `POST /v2/users` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub country_code: String,
    pub phone_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhoneNumber {
    pub country_code: String,
    pub phone_number: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Wallet {
    #[serde(default, deserialize_with = "lenient_cents")]
    pub amount: i64,
    #[serde(default, deserialize_with = "lenient_cents")]
    pub withdrawable_amount: i64,
    #[serde(default, deserialize_with = "lenient_cents")]
    pub credit_balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub id: Uuid,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone_number: Option<PhoneNumber>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub wallet: Wallet,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// The spec's `rail` the user is paid out to by default (`paypal`, `ach`, ...); absent (or
    /// null) when they have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_payout_method: Option<String>,
    /// Whether Dots pays the user's wallet out to their default method by itself. Set through
    /// `PATCH /v2/users/{id}` or a `payout` / `manage-payouts` flow step; the spec's `user`
    /// schema does not list it, so an answer without it means "not known to be on".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_payout_enabled: Option<bool>,
}

impl User {
    /// Dots pays this user out by itself: auto payout on and a default payout method set.
    pub fn pays_out_automatically(&self) -> bool {
        self.auto_payout_enabled == Some(true)
            && self
                .default_payout_method
                .as_deref()
                .is_some_and(|m| !m.is_empty())
    }
}

/// An App (`GET /v2/apps/{app_id}`, the spec's `app` schema).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct App {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    /// `created`, `in_review` or `approved`.
    #[serde(default)]
    pub status: Option<String>,
    pub metrics: AppMetrics,
}

/// An App's figures. The money fields are decimal strings whose unit the spec does not name
/// (see [`BalanceUnit`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppMetrics {
    #[serde(deserialize_with = "decimal_text")]
    pub wallet_balance: String,
    #[serde(default, deserialize_with = "decimal_text")]
    pub money_out: String,
    #[serde(default)]
    pub connected_users: i64,
}

/// The unit of `app.metrics.wallet_balance`: the spec says "decimal string" only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceUnit {
    /// `"500.00"` is $500 (the simulator's answer, and most likely Dots').
    #[default]
    Dollars,
    /// `"50000"` is $500.
    Cents,
}

impl AppMetrics {
    /// The wallet balance in whole cents, read in `unit`. A fraction of a cent is dropped
    /// (rounded toward minus infinity), so the balance is never overstated.
    pub fn wallet_cents(&self, unit: BalanceUnit) -> Result<i64, String> {
        decimal_to_cents(&self.wallet_balance, unit)
    }
}

/// A decimal string (`"500"`, `"500.5"`, `"-0.05"`, `"1000.0000000000"`) in `unit`, as whole
/// cents rounded down.
pub fn decimal_to_cents(s: &str, unit: BalanceUnit) -> Result<i64, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a decimal number");
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let shift = match unit {
        BalanceUnit::Dollars => 2,
        BalanceUnit::Cents => 0,
    };
    let kept: String = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(shift)
        .collect();
    let dropped_nonzero = frac.chars().skip(shift).any(|c| c != '0');
    let whole: i64 = format!("{}{kept}", if int.is_empty() { "0" } else { int })
        .parse()
        .map_err(|_| bad())?;
    Ok(match (neg, dropped_nonzero) {
        (false, _) => whole,
        (true, false) => -whole,
        (true, true) => -whole - 1,
    })
}

/// A decimal field sent as a string (the spec) or, leniently, as a JSON number.
fn decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Null => Ok("0".into()),
        other => Err(serde::de::Error::custom(format!(
            "expected a decimal string, got {other}"
        ))),
    }
}

/// A page of a list endpoint: `{"data": [...], "has_more": bool}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// The error body Dots sends (v1 shape; v2 is undocumented, so every field is optional and the
/// raw text is kept by the client).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
}

/// Decode cents from a JSON number or string: `-1000`, `"-1000"`, `"1000.0000000000"`, `12.0`.
/// A fractional part other than zeros is rejected: cents are whole.
pub fn lenient_cents<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    parse_cents_value(&v).map_err(serde::de::Error::custom)
}

fn parse_cents_value(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                parse_cents_str(&n.to_string())
            }
        }
        serde_json::Value::String(s) => parse_cents_str(s.trim()),
        serde_json::Value::Null => Ok(0),
        other => Err(format!("amount is neither number nor string: {other}")),
    }
}

fn parse_cents_str(s: &str) -> Result<i64, String> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.chars().all(|c| c == '0') {
        return Err(format!("amount {s:?} is not a whole number of cents"));
    }
    int.parse::<i64>()
        .map_err(|e| format!("amount {s:?} is not an integer: {e}"))
}

/// Decode a timestamp with a zone (`...Z`, `+00:00`) or without one (taken as UTC).
pub fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    parse_time(&s).map_err(serde::de::Error::custom)
}

pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(format!("unrecognised timestamp {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_decode_from_numbers_and_strings() {
        for (raw, want) in [
            ("-1000", -1000),
            ("\"-1000\"", -1000),
            ("\"1000.0000000000\"", 1000),
            ("12.0", 12),
        ] {
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert_eq!(parse_cents_value(&v).unwrap(), want, "{raw}");
        }
        assert!(parse_cents_value(&serde_json::json!("10.5")).is_err());
    }

    #[test]
    fn wallet_balances_read_as_cents_in_either_unit_never_rounded_up() {
        use BalanceUnit::*;
        for (raw, unit, want) in [
            ("500.00", Dollars, 50_000),
            ("500", Dollars, 50_000),
            ("0.5", Dollars, 50),
            ("12.349", Dollars, 1234),
            ("-0.05", Dollars, -5),
            ("-0.051", Dollars, -6),
            ("50000", Cents, 50_000),
            ("1000.0000000000", Cents, 1000),
            ("10.5", Cents, 10),
        ] {
            assert_eq!(decimal_to_cents(raw, unit), Ok(want), "{raw} {unit:?}");
        }
        for bad in ["", ".", "abc", "1.2.3", "1e5", "- 1"] {
            assert!(decimal_to_cents(bad, Dollars).is_err(), "{bad:?}");
        }
        let app: App = serde_json::from_value(serde_json::json!({
            "id": "5a5a0000-0000-4000-8000-000000000001", "name": "x",
            "metrics": {"wallet_balance": 12.5, "money_out": "0", "connected_users": 3}
        }))
        .unwrap();
        assert_eq!(app.metrics.wallet_cents(Dollars), Ok(1250));
    }

    #[test]
    fn timestamps_decode_with_and_without_zone() {
        let a = parse_time("2024-07-11T21:17:33.959976").unwrap();
        let b = parse_time("2024-07-11T21:17:33.959976Z").unwrap();
        assert_eq!(a, b);
        assert!(parse_time("Thu, 11 Jul 2024 21:17:33 GMT").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
