//! The dashboard's credentials: the operator's token (at least [`MIN_TOKEN_CHARS`] characters,
//! checked once at start-up by [`DashboardToken::new`]), the session cookie's value derived
//! from it, and the CSRF value forms carry. Nothing here keeps or shows the token itself.
//!
//! - The cookie never holds the token: it holds hex HMAC-SHA256(token,
//!   "payrun-dashboard-session"), so a cookie that leaks (a log, a shared browser profile) is
//!   not the token that opens the API with a bearer header, and it stops working when the
//!   token changes.
//! - Every comparison (token, session, CSRF) MACs the presented value under a random
//!   per-process key and checks it with `verify_slice`: constant time whatever the lengths.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The shortest `PAYRUN_DASHBOARD_TOKEN` accepted (characters).
pub const MIN_TOKEN_CHARS: usize = 32;

/// A dashboard token long enough to be one. `Debug` never shows it (a [`Secret`]).
#[derive(Debug, Clone)]
pub struct DashboardToken(Secret);

/// Why a token was refused (never includes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "PAYRUN_DASHBOARD_TOKEN is too short: use at least {MIN_TOKEN_CHARS} random characters (e.g. `openssl rand -hex 32`)"
    )]
    TooShort,
}

impl DashboardToken {
    pub fn new(token: &str) -> Result<DashboardToken, TokenError> {
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(TokenError::TooShort);
        }
        Ok(DashboardToken(Secret::new(token)))
    }

    pub(super) fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// The token, kept only as MACs so that checking a guess takes the same time however much of
/// it is right.
pub(super) struct Auth {
    /// Random per process: the key presented values are MACed under.
    key: [u8; 32],
    /// MAC of the real token under `key`.
    token_mac: Vec<u8>,
    /// The session cookie's value: hex HMAC(token, "payrun-dashboard-session").
    pub(super) session: String,
    /// What forms carry as `csrf`: hex HMAC(token, "payrun-dashboard-csrf").
    pub(super) csrf: String,
}

impl Auth {
    pub(super) fn new(token: &DashboardToken) -> Auth {
        let token = token.expose().as_bytes();
        let key: [u8; 32] = rand::random();
        Auth {
            key,
            token_mac: mac(&key, token),
            session: hex::encode(mac(token, b"payrun-dashboard-session")),
            csrf: hex::encode(mac(token, b"payrun-dashboard-csrf")),
        }
    }

    /// Whether `presented` MACs (under the process key) to `expected_mac`.
    fn same(&self, presented: &str, expected_mac: &[u8]) -> bool {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key");
        m.update(presented.as_bytes());
        m.verify_slice(expected_mac).is_ok()
    }

    pub(super) fn token_ok(&self, presented: &str) -> bool {
        self.same(presented, &self.token_mac)
    }

    pub(super) fn session_ok(&self, presented: &str) -> bool {
        self.same(presented, &mac(&self.key, self.session.as_bytes()))
    }

    pub(super) fn csrf_ok(&self, presented: &str) -> bool {
        self.same(presented, &mac(&self.key, self.csrf.as_bytes()))
    }
}

fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret-token-0123456789abcdefghijk";

    fn auth(t: &str) -> Auth {
        Auth::new(&DashboardToken::new(t).unwrap())
    }

    #[test]
    fn tokens_shorter_than_32_characters_are_refused_without_being_shown() {
        for short in ["", "x", "s3cret-token", &TOKEN[..31]] {
            let e = DashboardToken::new(short).unwrap_err();
            assert!(short.len() < 8 || !e.to_string().contains(short), "{e}");
        }
        assert!(DashboardToken::new(&TOKEN[..32]).is_ok());
        let shown = format!("{:?}", DashboardToken::new(TOKEN).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn only_the_exact_token_passes() {
        let a = auth(TOKEN);
        assert!(a.token_ok(TOKEN));
        let near = [
            &TOKEN[1..],
            &format!("{TOKEN} "),
            &TOKEN.to_uppercase(),
            "x",
            "",
        ];
        for wrong in near {
            assert!(!a.token_ok(wrong), "{wrong:?} passed");
        }
    }

    #[test]
    fn the_session_value_is_derived_not_the_token_and_checked_exactly() {
        let a = auth(TOKEN);
        assert_ne!(a.session, TOKEN);
        assert!(!a.session.contains(TOKEN));
        assert_eq!(a.session.len(), 64, "hex of 32 bytes");
        assert!(a.session_ok(&a.session.clone()));
        assert!(!a.session_ok(TOKEN), "the raw token is no session");
        assert!(!a.session_ok(&a.csrf), "nor is the CSRF value");
        assert!(!a.session_ok(""));
        assert_eq!(a.session, auth(TOKEN).session, "stable across restarts");
    }

    #[test]
    fn the_csrf_value_depends_on_the_token_and_is_checked_exactly() {
        let a = auth(&format!("one-{TOKEN}"));
        let b = auth(&format!("two-{TOKEN}"));
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.csrf, auth(&format!("one-{TOKEN}")).csrf);
        assert!(a.csrf_ok(&a.csrf.clone()));
        assert!(!a.csrf_ok(&b.csrf));
        assert!(!a.csrf_ok(""));
    }
}
