//! The App wallet beside a batch: what `submit --dry-run`, `status BATCH` and the dashboard's
//! batch page show when `DOTS_APP_ID` is set — the balance (`GET /v2/apps/{app_id}`), what
//! other batches were already cleared to pay from it, what this batch still has to pay, and
//! whether the rest covers it. Read-only: one Dots read and two store reads.

use serde::Serialize;

use crate::batch::BatchId;
use crate::dots::client::DotsClient;
use crate::jobs::funds::FundingConfig;
use crate::money::format_cents;
use crate::store::{Store, StoreError};

/// Where the wallet is read from: the Dots client and the funding settings (the app id).
#[derive(Debug, Clone)]
pub struct WalletSource {
    pub dots: DotsClient,
    pub funding: FundingConfig,
}

/// The wallet against one batch (`"wallet"` in `payrun status BATCH --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalletView {
    pub app_id: String,
    /// The App balance in cents; `None` when it could not be read (see `error`).
    pub balance_cents: Option<i64>,
    /// What other batches were already cleared to pay from it and have not paid yet.
    pub committed_cents: i64,
    /// What this batch still has to pay (its total, for a file not yet stored).
    pub batch_cents: i64,
    /// Whether the balance less `committed_cents` covers `batch_cents`.
    pub covers: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl WalletView {
    /// One line for a terminal or the dashboard.
    pub fn line(&self) -> String {
        let Some(balance) = self.balance_cents else {
            return format!(
                "App wallet: cannot read it ({})",
                self.error.as_deref().unwrap_or("unknown error")
            );
        };
        let elsewhere = if self.committed_cents > 0 {
            format!(
                " (${} of it cleared for other batches)",
                format_cents(self.committed_cents)
            )
        } else {
            String::new()
        };
        let verdict = match self.covers {
            Some(true) => "covers it".to_string(),
            _ => format!(
                "short by ${}",
                format_cents(self.batch_cents - (balance - self.committed_cents))
            ),
        };
        format!(
            "App wallet ${}{elsewhere} against ${} to pay: {verdict}",
            format_cents(balance),
            format_cents(self.batch_cents)
        )
    }
}

impl WalletSource {
    /// The wallet against `batch` (a stored batch: what it still has to pay), or against
    /// `total_cents` of a file not stored (`batch` = `None`). `Ok(None)` without an app id.
    pub async fn view(
        &self,
        store: &Store,
        batch: Option<BatchId>,
        total_cents: i64,
    ) -> Result<Option<WalletView>, StoreError> {
        let Some(app_id) = self.funding.app_id else {
            return Ok(None);
        };
        let (batch_cents, committed_cents) = match batch {
            Some(b) => (
                store.unpaid_cents(b).await?,
                store.committed_elsewhere(b).await?,
            ),
            // A batch id no batch has: everything cleared counts as committed elsewhere.
            None => (
                total_cents,
                store.committed_elsewhere(BatchId::new_random()).await?,
            ),
        };
        let read = match self.dots.get_app(app_id).await {
            Ok(app) => app.metrics.wallet_cents(self.funding.unit),
            Err(e) => Err(e.to_string()),
        };
        let (balance_cents, error) = match read {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(e)),
        };
        Ok(Some(WalletView {
            app_id: app_id.to_string(),
            balance_cents,
            committed_cents,
            batch_cents,
            covers: balance_cents.map(|b| b - committed_cents >= batch_cents),
            error,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(balance: Option<i64>, committed: i64, batch: i64) -> WalletView {
        WalletView {
            app_id: "a".into(),
            balance_cents: balance,
            committed_cents: committed,
            batch_cents: batch,
            covers: balance.map(|b| b - committed >= batch),
            error: balance.is_none().then(|| "HTTP 404".into()),
        }
    }

    #[test]
    fn the_wallet_line_says_whether_the_balance_covers_the_batch() {
        assert_eq!(
            view(Some(50_000), 0, 20_000).line(),
            "App wallet $500.00 against $200.00 to pay: covers it"
        );
        assert_eq!(
            view(Some(50_000), 40_000, 20_000).line(),
            "App wallet $500.00 ($400.00 of it cleared for other batches) against $200.00 to pay: short by $100.00"
        );
        assert!(
            view(None, 0, 1)
                .line()
                .contains("cannot read it (HTTP 404)")
        );
    }
}
