//! Svix webhook signatures: verification (receiver side) and signing (the simulator's side).
//!
//! What it owns: the `whsec_<base64>` secret, the signed content `"{id}.{timestamp}.{body}"`,
//! HMAC-SHA256 with the base64-decoded secret as key, and the 5-minute timestamp tolerance.
//!
//! Guarantees: `verify` is pure (the current time is a parameter); signatures are compared in
//! constant time (`hmac::Mac::verify_slice`, built on `subtle`) against every `v1,` entry of the
//! signature header; both header families (`svix-*` and `webhook-*`) are accepted; the secret
//! is never shown by `Debug`.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Timestamps further than this from "now", either way, are refused (seconds).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a webhook request was refused (or a secret was unusable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Neither `svix-<name>` nor `webhook-<name>` is present (or it is not visible ASCII).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp header is not unix seconds")]
    BadTimestamp,
    #[error("timestamp is more than 5 minutes away from now")]
    Stale,
    #[error("no matching v1 signature")]
    BadSignature,
    #[error("webhook secret must be whsec_ followed by base64")]
    BadSecret,
    #[error("webhook secret is too short: its key must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
}

/// The shortest HMAC key (decoded bytes of a `whsec_` secret) accepted: shorter keys can be
/// guessed. Dots and Svix issue 24- and 32-byte keys.
pub const MIN_SECRET_BYTES: usize = 16;

/// Verifies (and, for the simulator, produces) Svix signatures with one secret.
#[derive(Clone)]
pub struct Verifier {
    key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The three Svix headers of one request.
struct Signed<'a> {
    id: &'a str,
    timestamp: &'a str,
    signatures: &'a str,
}

/// `svix-<name>`, else `webhook-<name>` (Svix' unbranded headers).
fn header<'a>(
    headers: &'a HeaderMap,
    svix: &'static str,
    plain: &'static str,
) -> Result<&'a str, WebhookError> {
    headers
        .get(svix)
        .or_else(|| headers.get(plain))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::MissingHeader(svix))
}

/// The message id (`svix-id` or `webhook-id`): the same on every redelivery, so a dedupe key.
pub fn message_id(headers: &HeaderMap) -> Option<&str> {
    header(headers, "svix-id", "webhook-id").ok()
}

impl Verifier {
    /// Build from a `whsec_<base64>` secret (the part after `whsec_` is the HMAC key, at least
    /// [`MIN_SECRET_BYTES`] bytes once decoded).
    pub fn new(secret: &str) -> Result<Verifier, WebhookError> {
        let encoded = secret
            .trim()
            .strip_prefix("whsec_")
            .ok_or(WebhookError::BadSecret)?;
        let key = B64.decode(encoded).map_err(|_| WebhookError::BadSecret)?;
        if key.is_empty() {
            return Err(WebhookError::BadSecret);
        }
        if key.len() < MIN_SECRET_BYTES {
            return Err(WebhookError::ShortSecret);
        }
        Ok(Verifier { key })
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `svix-signature` value for a message: `v1,<base64 HMAC-SHA256>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", B64.encode(tag))
    }

    /// Check the headers and raw body of a delivery received at `now_unix` (seconds).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), WebhookError> {
        let signed = Signed {
            id: header(headers, "svix-id", "webhook-id")?,
            timestamp: header(headers, "svix-timestamp", "webhook-timestamp")?,
            signatures: header(headers, "svix-signature", "webhook-signature")?,
        };
        let ts: i64 = signed
            .timestamp
            .parse()
            .map_err(|_| WebhookError::BadTimestamp)?;
        if now_unix.saturating_sub(ts).abs() > TOLERANCE_SECS {
            return Err(WebhookError::Stale);
        }
        let mac = self.mac(signed.id, signed.timestamp, body);
        let matched = signed
            .signatures
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|sig| B64.decode(sig).ok())
            // `verify_slice` compares in constant time.
            .any(|sig| mac.clone().verify_slice(&sig).is_ok());
        if matched {
            Ok(())
        } else {
            Err(WebhookError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // The example from docs.svix.com/receiving/verifying-payloads/how-manual.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("svix-id", HeaderValue::from_static(ID));
        h.insert("svix-timestamp", HeaderValue::from(TS));
        h.insert("svix-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn signing_reproduces_the_svix_documentation_example() {
        let v = Verifier::new(SECRET).unwrap();
        assert_eq!(v.sign(ID, TS, BODY), SIG);
        assert_eq!(v.verify(&headers(SIG), BODY, TS), Ok(()));
    }

    #[test]
    fn any_v1_entry_of_a_space_separated_list_may_match() {
        let v = Verifier::new(SECRET).unwrap();
        let list = format!("v2,abc v1,AAAA v1,not-base64! {SIG}");
        assert_eq!(v.verify(&headers(&list), BODY, TS), Ok(()));
        let wrong = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(
            v.verify(&headers(wrong), BODY, TS),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn the_tolerance_is_exactly_five_minutes_either_way() {
        let v = Verifier::new(SECRET).unwrap();
        assert_eq!(v.verify(&headers(SIG), BODY, TS + 300), Ok(()));
        assert_eq!(v.verify(&headers(SIG), BODY, TS - 300), Ok(()));
        assert_eq!(
            v.verify(&headers(SIG), BODY, TS + 301),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            v.verify(&headers(SIG), BODY, TS - 301),
            Err(WebhookError::Stale)
        );
    }

    #[test]
    fn secrets_without_the_prefix_or_with_bad_base64_are_refused() {
        assert_eq!(
            Verifier::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            WebhookError::BadSecret
        );
        assert_eq!(
            Verifier::new("whsec_%%%").unwrap_err(),
            WebhookError::BadSecret
        );
        assert_eq!(
            Verifier::new("whsec_").unwrap_err(),
            WebhookError::BadSecret
        );
    }

    #[test]
    fn secrets_whose_key_is_under_16_bytes_are_refused() {
        let with = |n: usize| format!("whsec_{}", B64.encode(vec![7u8; n]));
        for n in [1, 8, 15] {
            assert_eq!(
                Verifier::new(&with(n)).unwrap_err(),
                WebhookError::ShortSecret,
                "{n} bytes"
            );
        }
        assert!(Verifier::new(&with(16)).is_ok());
        assert!(!WebhookError::ShortSecret.to_string().contains("whsec_"));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let shown = format!("{:?}", Verifier::new(SECRET).unwrap());
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("MfKQ"), "{shown}");
    }
}
