//! Which Dots failures are systemic — not the item's fault but Dots' or ours as a whole — and
//! the hook through which a client reports every call's outcome ([`CallObserver`]). The jobs'
//! circuits (`jobs::circuit`) decide what to do about them; this module only says what they are.

use super::client::DotsError;

/// A failure that is not the item's: the jobs hold work instead of charging it to items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Systemic {
    /// Dots refuses our credentials (HTTP 401 or 403).
    Credentials,
    /// The App wallet cannot cover a transfer (`transaction-insufficient-funds`).
    Funds,
    /// Dots cannot be reached, did not answer in time, or answered 5xx.
    Unavailable,
    /// Dots throttles us (HTTP 429).
    RateLimited,
}

/// Told the outcome of every call a client makes (`Ok(())` for a success), right after it,
/// before the caller sees the result.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    fn observed(&self, endpoint: &'static str, outcome: Result<(), &DotsError>);
}

impl DotsError {
    /// Whether the failure is systemic (not the item's), and which condition it shows.
    /// Item-level otherwise: invalid input, unknown user, a duplicate key, a 404.
    pub fn systemic(&self) -> Option<Systemic> {
        match self {
            DotsError::Permanent {
                status: 401 | 403, ..
            } => Some(Systemic::Credentials),
            DotsError::Permanent {
                code: Some(code), ..
            } if code == "transaction-insufficient-funds" => Some(Systemic::Funds),
            DotsError::Permanent { .. } | DotsError::DuplicateKey(_) => None,
            DotsError::Retryable {
                status: Some(429), ..
            } => Some(Systemic::RateLimited),
            DotsError::Retryable {
                status: Some(s), ..
            } if *s >= 500 => Some(Systemic::Unavailable),
            // 408 and 409 (resource busy) are about the one request.
            DotsError::Retryable {
                status: Some(_), ..
            } => None,
            // Could not connect, or sent with the answer lost (timeout, dropped connection).
            DotsError::Retryable { status: None, .. } | DotsError::Ambiguous(_) => {
                Some(Systemic::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dots::client::classify_status;
    use reqwest::StatusCode;

    #[test]
    fn failures_are_classified_as_systemic_or_the_items() {
        let status = |s: u16, body: &str| {
            classify_status(StatusCode::from_u16(s).unwrap(), None, body.as_bytes()).systemic()
        };
        use Systemic::*;
        let rows: [(u16, &str, Option<Systemic>); 13] = [
            (401, r#"{"error_code":"unauthorized"}"#, Some(Credentials)),
            (403, "forbidden", Some(Credentials)),
            (
                400,
                r#"{"error_code":"transaction-insufficient-funds"}"#,
                Some(Funds),
            ),
            (
                422,
                r#"{"error_code":"transaction-insufficient-funds"}"#,
                Some(Funds),
            ),
            (400, r#"{"error_code":"invalid-input"}"#, None),
            (404, r#"{"error_code":"user-not-found"}"#, None),
            (422, "unprocessable", None),
            (409, r#"{"error_code":"duplicate-idempotency-key"}"#, None),
            (409, r#"{"error_code":"resource-busy"}"#, None),
            (408, "request timeout", None),
            (429, "slow down", Some(RateLimited)),
            (500, "oops", Some(Unavailable)),
            (503, "maintenance", Some(Unavailable)),
        ];
        for (s, body, expected) in rows {
            assert_eq!(status(s, body), expected, "{s} {body}");
        }
        let connect = DotsError::Retryable {
            status: None,
            retry_after: None,
            message: "cannot connect".into(),
        };
        assert_eq!(connect.systemic(), Some(Unavailable));
        assert_eq!(
            DotsError::Ambiguous("timed out".into()).systemic(),
            Some(Unavailable)
        );
        assert_eq!(DotsError::DuplicateKey("k".into()).systemic(), None);
    }
}
