//! Request-body validation for the simulated endpoints, and the JSON error the API answers with.
//!
//! Guarantees: every rejection is a 4xx `ApiError` with `error_code` `invalid-input` whose message
//! names the offending field; nothing here reads or changes simulator state, so a rejected request
//! never leaves a trace.

use super::wire::FlowRequest;
use crate::dots::types::{
    CreateTransfer, CreateTransferBatch, CreateUser, STEP_NAMES, TransferBatchItemRequest,
};
use serde_json::Value;
use uuid::Uuid;

/// An error answer: HTTP status plus the `{"message", "error_code"}` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid-input", message)
    }

    pub fn body(&self) -> Value {
        super::wire::error_json(&self.message, self.code)
    }
}

/// Parse a request body as a JSON object.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

fn required_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &str,
) -> Result<&'a str, ApiError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid(format!("{field} must be a string"))),
        None => Err(ApiError::invalid(format!("{field} is required"))),
    }
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Metadata is a string or an object (null counts as absent).
fn metadata(obj: &serde_json::Map<String, Value>) -> Result<Option<Value>, ApiError> {
    match obj.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ (Value::String(_) | Value::Object(_))) => Ok(Some(v.clone())),
        Some(_) => Err(ApiError::invalid("metadata must be a string or an object")),
    }
}

fn optional_uuid(
    obj: &serde_json::Map<String, Value>,
    field: &str,
) -> Result<Option<Uuid>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("{field} must be a UUID"))),
        Some(_) => Err(ApiError::invalid(format!("{field} must be a UUID string"))),
    }
}

/// Validate a `POST /v2/users` body (required fields, lengths and the spec's patterns).
/// The spec's `rail` values (`default_payout_method` of `PATCH /v2/users/{id}`).
const RAILS: [&str; 8] = [
    "paypal",
    "venmo",
    "cash_app",
    "ach",
    "intl_bank",
    "airtm",
    "payoneer",
    "crypto",
];

/// `PATCH /v2/users/{id}` body: the default payout method and auto payout, each optional (other
/// mutable fields are accepted and ignored).
pub fn user_update(body: &[u8]) -> Result<(Option<String>, Option<bool>), ApiError> {
    let obj = json_object(body)?;
    let method = match obj.get("default_payout_method") {
        None => None,
        Some(Value::String(m)) if RAILS.contains(&m.as_str()) => Some(m.clone()),
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "default_payout_method must be one of {}",
                RAILS.join(", ")
            )));
        }
    };
    let auto = match obj.get("auto_payout_enabled") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::invalid("auto_payout_enabled must be a boolean")),
    };
    Ok((method, auto))
}

pub fn user_request(body: &[u8]) -> Result<CreateUser, ApiError> {
    let obj = json_object(body)?;
    let first_name = required_str(&obj, "first_name")?;
    let last_name = required_str(&obj, "last_name")?;
    let email = required_str(&obj, "email")?;
    let country_code = required_str(&obj, "country_code")?;
    let phone_number = required_str(&obj, "phone_number")?;
    for (field, value) in [("first_name", first_name), ("last_name", last_name)] {
        if !(1..=50).contains(&value.chars().count()) {
            return Err(ApiError::invalid(format!(
                "{field} must be 1 to 50 characters"
            )));
        }
    }
    if !email.contains('@') {
        return Err(ApiError::invalid("email is not a valid email address"));
    }
    if !digits(country_code, 1, 3) {
        return Err(ApiError::invalid("country_code must match ^[0-9]{1,3}$"));
    }
    if !digits(phone_number, 1, 20) {
        return Err(ApiError::invalid("phone_number must match ^[0-9]{1,20}$"));
    }
    Ok(CreateUser {
        first_name: first_name.to_string(),
        last_name: last_name.to_string(),
        email: email.to_string(),
        country_code: country_code.to_string(),
        phone_number: phone_number.to_string(),
        metadata: metadata(&obj)?,
    })
}

/// Validate a `POST /v2/flows` body: `steps` is a non-empty list of unique step names from the
/// spec's enum, each given as a string or as `{name, ...options}`.
pub fn flow_request(body: &[u8]) -> Result<FlowRequest, ApiError> {
    let obj = json_object(body)?;
    let items = match obj.get("steps") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(ApiError::invalid("steps must not be empty")),
        Some(_) => return Err(ApiError::invalid("steps must be an array")),
        None => return Err(ApiError::invalid("steps is required")),
    };
    let mut steps: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let name = match item {
            Value::String(s) => s.as_str(),
            Value::Object(o) => match o.get("name") {
                Some(Value::String(s)) => s.as_str(),
                _ => {
                    return Err(ApiError::invalid(
                        "steps: a step object needs a string name",
                    ));
                }
            },
            _ => return Err(ApiError::invalid("steps: each step is a name or an object")),
        };
        if name == "onboarding" {
            return Err(ApiError::invalid(
                "steps: onboarding is not a valid step (it is added automatically when user_id is absent)",
            ));
        }
        if !STEP_NAMES.contains(&name) {
            return Err(ApiError::invalid(format!("steps: unknown step {name:?}")));
        }
        if steps.iter().any(|s| s == name) {
            return Err(ApiError::invalid(format!("steps: duplicate step {name:?}")));
        }
        steps.push(name.to_string());
    }
    Ok(FlowRequest {
        steps,
        user_id: optional_uuid(&obj, "user_id")?,
        metadata: metadata(&obj)?,
    })
}

/// Validate a `POST /v2/transfers` body: integer `amount` other than 0, UUID `user_id`, optional
/// UUID `idempotency_key`.
pub fn transfer_request(body: &[u8]) -> Result<CreateTransfer, ApiError> {
    let obj = json_object(body)?;
    Ok(CreateTransfer {
        amount: amount(&obj)?,
        user_id: required_uuid(&obj, "user_id")?,
        idempotency_key: optional_uuid(&obj, "idempotency_key")?,
        metadata: metadata(&obj)?,
    })
}

/// The most items one transfer batch may hold.
pub const MAX_BATCH_ITEMS: usize = 5000;

/// Validate a `POST /v2/transfer-batches` body: 1 to [`MAX_BATCH_ITEMS`] items, each checked as
/// a single transfer's body with `idempotency_key` required and `tax_exempt` a boolean if
/// given; no two items with one key; optional batch `idempotency_key` and `metadata`. A
/// rejection names the item: `items[3].amount must not be 0`.
pub fn transfer_batch_request(body: &[u8]) -> Result<CreateTransferBatch, ApiError> {
    let obj = json_object(body)?;
    let raw = match obj.get("items") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid("items must be an array")),
        None => return Err(ApiError::invalid("items is required")),
    };
    if !(1..=MAX_BATCH_ITEMS).contains(&raw.len()) {
        return Err(ApiError::invalid(format!(
            "items must hold 1 to {MAX_BATCH_ITEMS} transfers, not {}",
            raw.len()
        )));
    }
    let mut items = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashMap::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let item =
            batch_item(v).map_err(|e| ApiError::invalid(format!("items[{i}].{}", e.message)))?;
        if let Some(first) = seen.insert(item.idempotency_key, i) {
            return Err(ApiError::invalid(format!(
                "items[{i}].idempotency_key repeats items[{first}].idempotency_key"
            )));
        }
        items.push(item);
    }
    Ok(CreateTransferBatch {
        items,
        idempotency_key: optional_uuid(&obj, "idempotency_key")?,
        metadata: metadata(&obj)?,
    })
}

fn batch_item(v: &Value) -> Result<TransferBatchItemRequest, ApiError> {
    let Value::Object(obj) = v else {
        return Err(ApiError::invalid("item must be an object"));
    };
    let tax_exempt = match obj.get("tax_exempt") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::invalid("tax_exempt must be a boolean")),
    };
    Ok(TransferBatchItemRequest {
        amount: amount(obj)?,
        user_id: required_uuid(obj, "user_id")?,
        idempotency_key: required_uuid(obj, "idempotency_key")?,
        tax_exempt,
        metadata: metadata(obj)?,
    })
}

/// `amount`: an integer number of cents other than 0.
fn amount(obj: &serde_json::Map<String, Value>) -> Result<i64, ApiError> {
    let amount = match obj.get("amount") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::invalid("amount must be an integer number of cents"))?,
        Some(_) => return Err(ApiError::invalid("amount must be an integer")),
        None => return Err(ApiError::invalid("amount is required")),
    };
    if amount == 0 {
        return Err(ApiError::invalid("amount must not be 0"));
    }
    Ok(amount)
}

fn required_uuid(obj: &serde_json::Map<String, Value>, field: &str) -> Result<Uuid, ApiError> {
    optional_uuid(obj, field)?.ok_or_else(|| ApiError::invalid(format!("{field} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_steps_accept_names_and_objects_but_not_onboarding() {
        let ok = flow_request(br#"{"steps":["compliance",{"name":"payout"}]}"#).unwrap();
        assert_eq!(ok.steps, vec!["compliance", "payout"]);
        for bad in [
            r#"{"steps":["onboarding"]}"#,
            r#"{"steps":["payout","payout"]}"#,
            r#"{"steps":[]}"#,
            r#"{"steps":["teleport"]}"#,
            r#"{}"#,
        ] {
            assert_eq!(
                flow_request(bad.as_bytes()).unwrap_err().code,
                "invalid-input",
                "{bad}"
            );
        }
    }

    #[test]
    fn transfer_amount_must_be_a_nonzero_integer() {
        let uid = Uuid::new_v4();
        for bad in ["0", "1.5", "\"-100\""] {
            let body = format!(r#"{{"amount":{bad},"user_id":"{uid}"}}"#);
            assert!(transfer_request(body.as_bytes()).is_err(), "{bad}");
        }
        let body = format!(r#"{{"amount":-5,"user_id":"{uid}","idempotency_key":"nope"}}"#);
        assert!(
            transfer_request(body.as_bytes())
                .unwrap_err()
                .message
                .contains("idempotency_key")
        );
    }

    #[test]
    fn a_transfer_batch_body_names_the_bad_item_and_field() {
        let uid = Uuid::new_v4();
        let (k1, k2) = (Uuid::new_v4(), Uuid::new_v4());
        let item = |amount: &str, key: Uuid| {
            format!(r#"{{"amount":{amount},"user_id":"{uid}","idempotency_key":"{key}"}}"#)
        };
        let body = |items: &[String]| format!(r#"{{"items":[{}]}}"#, items.join(","));
        let ok = transfer_batch_request(body(&[item("-5", k1), item("-6", k2)]).as_bytes());
        assert_eq!(ok.unwrap().items[1].idempotency_key, k2);
        for (bad, says) in [
            (body(&[]), "items must hold 1 to 5000"),
            (
                body(&[item("-5", k1), item("0", k2)]),
                "items[1].amount must not be 0",
            ),
            (
                body(&[item("-5", k1), item("-6", k1)]),
                "items[1].idempotency_key repeats items[0]",
            ),
            (
                format!(r#"{{"items":[{{"amount":-5,"user_id":"{uid}"}}]}}"#),
                "items[0].idempotency_key is required",
            ),
            (
                format!(
                    r#"{{"items":[{{"amount":-5,"user_id":"{uid}","idempotency_key":"{k1}","tax_exempt":"no"}}]}}"#
                ),
                "items[0].tax_exempt",
            ),
            (r#"{"items":{}}"#.to_string(), "items must be an array"),
        ] {
            let err = transfer_batch_request(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code, "invalid-input", "{bad}");
            assert!(err.message.contains(says), "{bad}: {}", err.message);
        }
        let many: Vec<String> = (0..5001).map(|_| item("-1", Uuid::new_v4())).collect();
        assert!(transfer_batch_request(body(&many).as_bytes()).is_err());
    }
}
