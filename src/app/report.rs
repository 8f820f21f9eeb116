//! Read-only views: batch status (counts and totals per state) and the per-item CSV report.

use std::io::Write;

use serde::Serialize;

use crate::batch::{BatchId, BatchState};
use crate::item::ItemState;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct StateLine {
    pub state: String,
    pub items: i64,
    pub cents: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    pub batch_id: String,
    /// approved | awaiting_approval | canceled | paused | held (see [`shown_status`]).
    pub status: String,
    /// Whether it waits for `payrun approve` (also while it shows as paused or held).
    pub awaiting_approval: bool,
    /// When an operator paused it (unix ms); `null` when not paused.
    pub paused_at: Option<i64>,
    /// The shared condition holding it (`reason`, `detail`, `since`; `funds_needed_cents`
    /// and `from_line` when they apply); `null` when not held.
    pub hold: Option<crate::batch::Hold>,
    /// With a hold for insufficient funds: how much more the App wallet needs (cents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funds_needed_cents: Option<i64>,
    pub source: String,
    pub created_at: i64,
    pub items: i64,
    pub total_cents: i64,
    pub settled: bool,
    pub states: Vec<StateLine>,
    /// The App wallet against what the batch still has to pay (`status BATCH` and the
    /// dashboard's batch page, with `DOTS_APP_ID` set; see `app::wallet`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallet: Option<crate::app::wallet::WalletView>,
    /// Items still awaiting payout after their last reminder (`[reminders]`): their money is
    /// in the payee's Dots wallet, nothing is reversed.
    pub unclaimed: i64,
    pub unclaimed_cents: i64,
    pub unclaimed_items: Vec<UnclaimedItem>,
}

/// An item reported unclaimed.
#[derive(Debug, Clone, Serialize)]
pub struct UnclaimedItem {
    pub item_id: String,
    pub payee_id: String,
    pub amount_cents: i64,
    pub reminders: i64,
    pub unclaimed_at: i64,
    pub payout_link: Option<String>,
}

/// The status `payrun status` and the dashboard show: a canceled batch is `canceled`; else
/// `paused` while an operator paused it, else `held` while a shared condition holds it, else
/// its stored status (`approved`, `awaiting_approval`).
pub fn shown_status(stored: BatchState, paused: bool, held: bool) -> &'static str {
    match (stored, paused, held) {
        (BatchState::Canceled, _, _) => stored.as_str(),
        (_, true, _) => "paused",
        (_, false, true) => "held",
        _ => stored.as_str(),
    }
}

pub async fn batch_status(
    store: &Store,
    batch: BatchId,
) -> Result<Option<BatchStatus>, StoreError> {
    let Some(b) = store.batch(batch).await? else {
        return Ok(None);
    };
    let counts = store.batch_counts(batch).await?;
    let mut states: Vec<StateLine> = ItemState::ALL
        .iter()
        .filter_map(|s| {
            counts.iter().find(|c| c.state == *s).map(|c| StateLine {
                state: s.to_string(),
                items: c.count,
                cents: c.cents,
            })
        })
        .collect();
    states.sort_by_key(|l| ItemState::ALL.iter().position(|s| s.as_str() == l.state));
    let unclaimed_items: Vec<UnclaimedItem> = store
        .unclaimed_items(batch)
        .await?
        .into_iter()
        .map(|i| UnclaimedItem {
            item_id: i.id.to_string(),
            amount_cents: i.amount.get(),
            reminders: i.reminders,
            unclaimed_at: i.unclaimed_at.unwrap_or_default(),
            payout_link: i.payout_link,
            payee_id: i.payee_id,
        })
        .collect();
    Ok(Some(BatchStatus {
        unclaimed: unclaimed_items.len() as i64,
        unclaimed_cents: unclaimed_items.iter().map(|i| i.amount_cents).sum(),
        unclaimed_items,
        status: shown_status(b.status, b.paused_at.is_some(), b.hold.is_some()).to_string(),
        awaiting_approval: b.status == BatchState::AwaitingApproval,
        paused_at: b.paused_at,
        funds_needed_cents: b
            .hold
            .as_ref()
            .filter(|h| h.reason == crate::batch::HoldReason::InsufficientFunds)
            .and_then(|h| h.funds_needed_cents),
        hold: b.hold,
        batch_id: b.id,
        source: b.source,
        created_at: b.created_at,
        items: b.item_count,
        total_cents: b.total_cents,
        settled: counts.iter().all(|c| c.state.is_settled()),
        states,
        wallet: None,
    }))
}

pub async fn list_status(store: &Store, limit: i64) -> Result<Vec<BatchStatus>, StoreError> {
    let mut out = Vec::new();
    for b in store.list_batches(limit).await? {
        let id =
            b.id.parse()
                .map_err(|e| StoreError::Corrupt(format!("batch id: {e}")))?;
        if let Some(s) = batch_status(store, id).await? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Writes the per-item CSV: payee, amount, state, Dots user, transfer, flow link, attempts,
/// last error. Returns the number of rows written. Cells that a spreadsheet would read as a
/// formula get a leading `'` (OWASP's advice on CSV injection).
pub async fn write_report<W: Write>(
    store: &Store,
    batch: BatchId,
    out: W,
) -> anyhow::Result<usize> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "payee_id",
        "amount",
        "state",
        "dots_user_id",
        "transfer_id",
        "flow_link",
        "attempts",
        "last_error",
    ])?;
    let items = store.batch_items(batch).await?;
    for i in &items {
        let link = i.payout_link.as_deref().or(i.onboarding_link.as_deref());
        // Every text cell is defused against spreadsheet formulas (`text::csv_cell`): a payee
        // id such as `=HYPERLINK(..)` is stored as given, but must not run when opened.
        let cell = crate::text::csv_cell;
        w.write_record([
            &*cell(&i.payee_id),
            &crate::money::format_cents(i.amount.get()),
            i.state.as_str(),
            &i.dots_user_id.map(|u| u.to_string()).unwrap_or_default(),
            &i.transfer_id.map(|t| t.to_string()).unwrap_or_default(),
            &cell(link.unwrap_or("")),
            &i.transfer_attempts.to_string(),
            &cell(i.last_error.as_deref().unwrap_or("")),
        ])?;
    }
    w.flush()?;
    Ok(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_shows_over_a_hold_and_a_cancel_over_both() {
        use BatchState::*;
        #[rustfmt::skip]
        let rows = [
            // stored, paused, held, shown
            (Approved, false, false, "approved"),
            (AwaitingApproval, false, false, "awaiting_approval"),
            (Canceled, false, false, "canceled"),
            (Approved, true, false, "paused"),
            (Approved, false, true, "held"),
            (Approved, true, true, "paused"),
            (AwaitingApproval, true, false, "paused"),
            (AwaitingApproval, false, true, "held"),
            (Canceled, true, true, "canceled"),
        ];
        for (stored, paused, held, want) in rows {
            assert_eq!(
                shown_status(stored, paused, held),
                want,
                "{stored:?} {paused} {held}"
            );
        }
    }
}
