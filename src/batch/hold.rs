//! Why a batch is held: a condition shared by its items (the App wallet is short, Dots refuses
//! our credentials, is unreachable or throttles every call) that stops new money calls for the
//! batch without charging its items an attempt. Stored in `batches.hold_*` (the CHECK constraint
//! on `hold_reason` lists exactly [`HoldReason::ALL`]); parsed when a batch record is read.
//!
//! A hold is not a batch status: the batch stays `approved`, its items stay workable, and the
//! hold is lifted by whoever decides the condition is over (see `jobs::circuit`). `payrun status`
//! shows a held batch as `"held"`, with the hold.

use std::fmt;
use std::str::FromStr;

/// The shared condition a batch waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// The App wallet cannot cover the batch (a funding pre-flight, or Dots answered
    /// `transaction-insufficient-funds`). Lifted when the balance suffices.
    InsufficientFunds,
    /// Dots refuses the API key (401/403). Lifted when a probe is accepted (a right key).
    Credentials,
    /// Dots cannot be reached, times out, or answers 5xx, for longer than a blip.
    DotsUnavailable,
    /// Dots answers 429 to call after call.
    RateLimited,
}

impl HoldReason {
    pub const ALL: [HoldReason; 4] = [
        HoldReason::InsufficientFunds,
        HoldReason::Credentials,
        HoldReason::DotsUnavailable,
        HoldReason::RateLimited,
    ];

    /// The stored text, also the `"reason"` of `payrun status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::InsufficientFunds => "insufficient_funds",
            HoldReason::Credentials => "credentials",
            HoldReason::DotsUnavailable => "dots_unavailable",
            HoldReason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a hold reason (expected insufficient_funds, credentials, dots_unavailable or rate_limited)"
)]
pub struct HoldReasonError(String);

impl FromStr for HoldReason {
    type Err = HoldReasonError;
    fn from_str(s: &str) -> Result<Self, HoldReasonError> {
        HoldReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| HoldReasonError(s.to_string()))
    }
}

impl TryFrom<String> for HoldReason {
    type Error = HoldReasonError;
    fn try_from(s: String) -> Result<Self, HoldReasonError> {
        s.parse()
    }
}

/// A batch's hold, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    pub reason: HoldReason,
    /// For an operator, e.g. "App wallet $500.00, batch needs $2,000.00". No secrets.
    pub detail: String,
    /// When the hold began (unix ms).
    pub since: i64,
    /// With [`HoldReason::InsufficientFunds`]: how much more the App wallet needs, in cents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funds_needed_cents: Option<i64>,
    /// Only items at or after this line of the file are held (the funding policy "pay what
    /// fits in file order"); `None`: every item not yet transferred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_line: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_reasons_round_trip_through_their_stored_text() {
        for r in HoldReason::ALL {
            assert_eq!(r.as_str().parse::<HoldReason>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert!("funds".parse::<HoldReason>().is_err());
    }
}
