//! The item job's side of funding: the batch's pre-flight, the gate before a transfer call,
//! and the hold written when Dots refuses a transfer for funds.

use tracing::{info, warn};

use super::{Decision, FundingConfig, Funds, PARK_MS, short_detail, verdict};
use crate::batch::BatchId;
use crate::dots::client::{DotsError, ErrorClass};
use crate::jobs::{Engine, JobError, Next, Step};
use crate::money::format_cents;
use crate::store::{FundingVerdict, ItemRecord, StoreError};

impl Engine {
    /// Replaces the engine's funding settings (the app id, policy and probe backoff).
    pub fn with_funding(mut self, config: FundingConfig) -> Engine {
        self.funds = std::sync::Arc::new(Funds::new(config));
        self
    }

    /// Before an item's transfer call: the batch's pre-flight (once, with an app id), then
    /// whether a funds hold covers this item. `Some(step)`: the item waits (no attempt
    /// counted) and the job ends with that step.
    pub(in crate::jobs) async fn funds_gate(
        &self,
        item: &ItemRecord,
    ) -> Result<Option<Step>, JobError> {
        let unchecked = self.funds.config.app_id.is_some()
            && !self.funds.lock_checked().contains(&item.batch_id);
        if unchecked {
            if let Err(e) = self.preflight(item.batch_id).await {
                // The balance could not be read: look again later, without an attempt counted.
                let at = self.next_attempt_at(3, Some(&e));
                warn!(batch_id = %item.batch_id, error = %e, "funding pre-flight could not read the App balance");
                self.store.defer_item(item.id, at).await?;
                return Ok(Some(Step::done(Next::RetryAt(at))));
            }
            // The pre-flight may just have written a hold: the gate must see it now, not
            // after its cache's feed interval.
            self.refresh_gate().await;
        }
        // A funds hold covering this item (`jobs::gate`, cached per feed interval): the job
        // ends and the item stays due; the feeder hands it over again once the hold is lifted.
        if let super::super::gate::Gate::Stop(_) = self.gate(item).await? {
            return Ok(Some(Step::done(Next::Idle)));
        }
        Ok(None)
    }

    /// Before the chunker's first chunk of `batch`: the batch's pre-flight, as
    /// [`Engine::funds_gate`] runs it before a single transfer. `false`: it could not be
    /// decided now (the balance unreadable); the batch is skipped this turn. A hold it writes
    /// is in the batch row, which the chunk's intent reads.
    pub(in crate::jobs) async fn funds_decided_for_chunk(
        &self,
        batch: BatchId,
    ) -> Result<bool, JobError> {
        if self.funds.config.app_id.is_none() || self.funds.lock_checked().contains(&batch) {
            return Ok(true);
        }
        if let Err(e) = self.preflight(batch).await {
            warn!(batch_id = %batch, error = %e, "funding pre-flight could not read the App balance");
            return Ok(false);
        }
        self.refresh_gate().await;
        Ok(true)
    }

    /// Decides the batch's pre-flight if no worker has (see the module doc).
    async fn preflight(&self, batch: BatchId) -> Result<(), DotsError> {
        let store_err = |e: StoreError| DotsError::Retryable {
            status: None,
            retry_after: None,
            message: format!("store: {e}"),
        };
        if self.store.funding_checked(batch).await.map_err(store_err)? {
            self.funds.lock_checked().insert(batch);
            return Ok(());
        }
        let verdict = match self.read_balance().await {
            Ok(balance) => self.verdict_for(batch, balance).await.map_err(store_err)?,
            Err(e) if e.class() == ErrorClass::Permanent => {
                // A wrong app id or unit: nothing to compare with. Go on (a refusal still holds).
                warn!(batch_id = %batch, error = %e, "funding pre-flight skipped: the App balance cannot be read");
                FundingVerdict::Covered
            }
            Err(e) => return Err(e),
        };
        let now = self.now();
        let decided = self
            .store
            .decide_funding(batch, now, &verdict)
            .await
            .map_err(store_err)?;
        match (&verdict, decided) {
            (
                FundingVerdict::Short {
                    detail,
                    needed_cents,
                    from_line,
                },
                true,
            ) => {
                warn!(batch_id = %batch, funds_needed_cents = needed_cents, from_line = ?from_line, "batch held for funds before its first transfer: {detail}");
                crate::metrics::funds_hold("held", 1);
            }
            (FundingVerdict::Covered, true) => {
                info!(batch_id = %batch, "funding pre-flight: the App wallet covers the batch");
            }
            _ => {} // another worker decided
        }
        self.funds.lock_checked().insert(batch);
        Ok(())
    }

    /// The App balance in cents (needs an app id).
    pub(super) async fn read_balance(&self) -> Result<i64, DotsError> {
        let Some(app_id) = self.funds.config.app_id else {
            return Err(DotsError::Permanent {
                status: 0,
                code: None,
                message: "no DOTS_APP_ID".into(),
            });
        };
        let app = self.dots.get_app(app_id).await?;
        app.metrics
            .wallet_cents(self.funds.config.unit)
            .map_err(|message| DotsError::Permanent {
                status: 200,
                code: None,
                message: format!("metrics.wallet_balance: {message}"),
            })
    }

    /// The verdict for `batch` with `balance` in the wallet (store reads only).
    pub(super) async fn verdict_for(
        &self,
        batch: BatchId,
        balance: i64,
    ) -> Result<FundingVerdict, StoreError> {
        let unpaid = self.store.unpaid_cents(batch).await?;
        let committed = self.store.committed_elsewhere(batch).await?;
        Ok(
            match verdict(self.funds.config.policy, balance, committed, unpaid) {
                Decision::Covered => FundingVerdict::Covered,
                Decision::Short {
                    needed_cents,
                    fits_cents,
                } => FundingVerdict::Short {
                    detail: short_detail(balance, committed, unpaid, needed_cents),
                    needed_cents,
                    from_line: match fits_cents {
                        Some(fits) => self.store.first_line_beyond(batch, fits).await?,
                        None => None,
                    },
                },
            },
        )
    }

    /// Dots refused the item's transfer for funds: close the call with no attempt counted,
    /// let the item wait, and hold every batch still to pay.
    pub(in crate::jobs) async fn hold_for_funds(
        &self,
        item: &ItemRecord,
        msg: &str,
    ) -> Result<Step, JobError> {
        let at = self.funds_park_until();
        self.store
            .record_transfer_refused_for_funds(item.id, msg, at)
            .await?;
        self.funds_refused(item.batch_id, item.amount.get(), msg)
            .await?;
        Ok(Step::done(Next::RetryAt(at)))
    }

    /// When an item refused for funds looks again by itself (lifting the hold makes it due).
    pub(in crate::jobs) fn funds_park_until(&self) -> i64 {
        self.now() + PARK_MS
    }

    /// Dots refused `cents` of transfers of `batch` for funds (their calls closed already):
    /// every batch still to pay is held, the probe backs off, this process sees the hold.
    pub(in crate::jobs) async fn funds_refused(
        &self,
        batch: BatchId,
        cents: i64,
        msg: &str,
    ) -> Result<(), JobError> {
        let now = self.now();
        let unknown = if self.funds.config.app_id.is_none() {
            "; App balance unknown (set DOTS_APP_ID to see it)"
        } else {
            ""
        };
        let detail = format!(
            "Dots refused a ${} transfer: the App wallet is short{unknown}",
            format_cents(cents)
        );
        let held = self.store.hold_all_for_funds(now, &detail).await?;
        {
            let mut p = self.funds.lock_probe();
            p.last_refusal_at = now;
            p.next_at = p
                .next_at
                .max(now + self.probe_delay(p.tries).as_millis() as i64);
        }
        // Later items of this process must see the hold at once.
        self.refresh_gate().await;
        warn!(batch_id = %batch, batches_held = held, "App wallet short: {detail}; batches held for funds ({msg})");
        crate::metrics::funds_hold("held", held);
        Ok(())
    }
}
