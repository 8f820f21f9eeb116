//! Retrying reads: the one place a read-only caller (the audit, any report reading Dots) gets
//! the same classified retries the worker uses for its item steps.
//!
//! Why reads may be retried here and writes may not: a GET changes nothing at Dots, so a
//! *retryable* (429, 5xx, no connection) or even an *ambiguous* failure (answer lost) is simply
//! asked again. Writes stay with the jobs, whose retries go through the store (same idempotency
//! key, reconciliation) — this module never sends one.
//!
//! Guarantees: a read is tried at most `attempts` times and never waits past `budget` in all;
//! the delay between tries is the worker's ([`backoff`]: exponential, full jitter, capped, never
//! below `Retry-After`); every try is an ordinary client call, so it waits for the client's
//! rate limiter like any other. A permanent failure (4xx) is returned at once.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use uuid::Uuid;

use super::client::{DotsClient, DotsError, ErrorClass};
use super::types::Transfer;

/// How hard a read is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRetry {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Backoff base: retry `n` (0-based) waits about `base * 2^n`, jittered.
    pub base: Duration,
    /// Longest single wait (a longer `Retry-After` is still honoured, within `budget`).
    pub cap: Duration,
    /// Longest time one read may spend waiting to retry, in all.
    pub budget: Duration,
}

/// The longest a read waits between its tries, in all, with the worker's settings.
pub const READ_RETRY_BUDGET: Duration = Duration::from_secs(120);

impl Default for ReadRetry {
    /// The built-in worker settings (`worker.max_attempts`, `backoff_base_ms`,
    /// `backoff_max_secs`) and [`READ_RETRY_BUDGET`].
    fn default() -> Self {
        ReadRetry::from(&crate::config::Settings::builtin().worker)
    }
}

impl From<&crate::config::WorkerSettings> for ReadRetry {
    fn from(w: &crate::config::WorkerSettings) -> Self {
        ReadRetry {
            attempts: w.max_attempts.max(1),
            base: Duration::from_millis(w.backoff_base_ms),
            cap: Duration::from_secs(w.backoff_max_secs),
            budget: READ_RETRY_BUDGET,
        }
    }
}

/// Delay before retry number `attempt` (0-based): `base * 2^attempt` capped at `cap`, with
/// full jitter (uniform in its upper half), and never shorter than what Dots asked for.
/// The worker's item retries and the retrying reads both use it.
pub fn backoff(
    base: Duration,
    cap: Duration,
    attempt: i64,
    retry_after: Option<Duration>,
) -> Duration {
    let base = (base.as_millis() as f64).max(1.0);
    let cap = cap.as_millis() as f64;
    let exp = (base * 2f64.powi(attempt.clamp(0, 30) as i32)).min(cap);
    let jittered = rand::rng().random_range(exp / 2.0..=exp);
    Duration::from_millis(jittered as u64).max(retry_after.unwrap_or_default())
}

/// Whether a failed read may be asked again.
fn worth_retrying(e: &DotsError) -> bool {
    matches!(e.class(), ErrorClass::Retryable | ErrorClass::Ambiguous)
}

impl DotsClient {
    /// Runs the read `call` until it succeeds, fails permanently, or the client's
    /// [`ReadRetry`] is spent (then the last error is returned). Only for calls that change
    /// nothing at Dots.
    pub async fn read_retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, DotsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DotsError>>,
    {
        let policy = *self.read_retry();
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if worth_retrying(&e) && attempt + 1 < policy.attempts.max(1) => {
                    let wait = backoff(policy.base, policy.cap, attempt as i64, e.retry_after());
                    if started.elapsed() + wait > policy.budget {
                        return Err(e);
                    }
                    tracing::info!(read = what, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying a Dots read");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every transfer of a user, each page read with [`DotsClient::read_retrying`].
    pub async fn list_all_transfers_retrying(
        &self,
        user_id: Uuid,
    ) -> Result<Vec<Transfer>, DotsError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .read_retrying("GET /v2/transfers", || {
                    self.list_transfers_page(user_id, cursor)
                })
                .await?;
            let last = page.data.last().map(|t| t.id);
            all.extend(page.data);
            match (page.has_more, last) {
                (true, Some(id)) => cursor = Some(id),
                _ => return Ok(all),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_jittered_and_never_below_retry_after() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let first = backoff(base, cap, 0, None);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let late = backoff(base, cap, 20, None);
            assert!(late >= cap / 2 && late <= cap, "{late:?}");
        }
        let asked = Duration::from_secs(3);
        assert_eq!(backoff(base, cap, 0, Some(asked)), asked);
    }

    #[test]
    fn permanent_failures_are_not_retried_and_unclear_reads_are() {
        let permanent = DotsError::Permanent {
            status: 404,
            code: None,
            message: "no such user".into(),
        };
        assert!(!worth_retrying(&permanent));
        assert!(worth_retrying(&DotsError::Ambiguous("timeout".into())));
        assert!(worth_retrying(&DotsError::Retryable {
            status: Some(429),
            retry_after: Some(Duration::from_secs(1)),
            message: "slow down".into(),
        }));
    }
}
