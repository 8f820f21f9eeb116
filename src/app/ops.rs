//! Operator controls: approve, cancel, rerun, new flow links, and an item's history. Every
//! command is safe to run twice: each acts through a guarded state transition, and reports
//! what it did and what it could not do (with the reason), rather than failing half-way.

use serde::Serialize;

use crate::batch::{BatchId, ItemId};
use crate::item::ItemState;
use crate::jobs::Queue;
use crate::jobs::feed::{FeedError, Window, top_up};
use crate::store::{ItemEvent, ItemRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("no batch {0}; `payrun status` lists batches")]
    NoBatch(BatchId),
    #[error("no item {0} (in that batch); `payrun report BATCH` lists items")]
    NoItem(ItemId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Feed(#[from] FeedError),
}

impl OpsError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, OpsError::NoBatch(_) | OpsError::NoItem(_))
    }
}

/// What a control command did to each item it looked at.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OpsReport {
    /// Items changed (item id, payee).
    pub done: Vec<(String, String)>,
    /// Items left alone, with why.
    pub skipped: Vec<(String, String, String)>,
}

async fn items_of(
    store: &Store,
    batch: BatchId,
    item: Option<ItemId>,
) -> Result<Vec<ItemRecord>, OpsError> {
    if store.batch(batch).await?.is_none() {
        return Err(OpsError::NoBatch(batch));
    }
    let all = store.batch_items(batch).await?;
    match item {
        None => Ok(all),
        Some(id) => {
            let one: Vec<_> = all.into_iter().filter(|i| i.id == id).collect();
            if one.is_empty() {
                return Err(OpsError::NoItem(id));
            }
            Ok(one)
        }
    }
}

/// `payrun approve BATCH`: lets a batch over the approval threshold run. `Ok(false)` if it was
/// not awaiting approval (already approved: nothing to do).
pub async fn approve(store: &Store, queue: &mut Queue, batch: BatchId) -> Result<bool, OpsError> {
    if store.batch(batch).await?.is_none() {
        return Err(OpsError::NoBatch(batch));
    }
    let approved = store.approve_batch(batch).await?;
    if approved {
        top_up(store, queue, Window::default()).await?;
    }
    Ok(approved)
}

/// `payrun cancel BATCH [--item ID]`: stops items that have not transferred yet.
pub async fn cancel(
    store: &Store,
    batch: BatchId,
    item: Option<ItemId>,
) -> Result<OpsReport, OpsError> {
    let items = items_of(store, batch, item).await?;
    let mut r = OpsReport::default();
    for i in items {
        let (state, id) = (i.state, i.id);
        let why_not = match state {
            ItemState::Canceled => Some("already canceled"),
            ItemState::Completed | ItemState::Transferred | ItemState::AwaitingPayout => {
                Some("already paid: the transfer was made")
            }
            ItemState::Transferring => {
                Some("a transfer is in progress; it may already have moved money")
            }
            ItemState::Failed if i.transfer_id.is_some() => {
                Some("already paid: the transfer was made")
            }
            _ => None,
        };
        match why_not {
            Some(why) => r
                .skipped
                .push((i.id.to_string(), i.payee_id.clone(), why.to_string())),
            None if store.cancel_item(id, state).await?.is_some() => {
                r.done.push((i.id.to_string(), i.payee_id.clone()))
            }
            // The store's guard refuses a failed item that may have been paid.
            None if state == ItemState::Failed && i.transfer_key.is_some() => r.skipped.push((
                i.id.to_string(),
                i.payee_id.clone(),
                "an earlier transfer attempt may have reached Dots: run `payrun audit` or `payrun rerun` first".into(),
            )),
            None => r.skipped.push((
                i.id.to_string(),
                i.payee_id.clone(),
                "its state changed meanwhile; look again".into(),
            )),
        }
    }
    if item.is_none() && r.skipped.is_empty() {
        store.cancel_batch_record(batch).await?;
    }
    Ok(r)
}

/// `payrun rerun BATCH [--item ID] [--failed]`: puts failed items back through the safety
/// protocol. Only failed items are rerun (`--failed` says so explicitly; other states are
/// reported as skipped).
pub async fn rerun(
    store: &Store,
    queue: &mut Queue,
    batch: BatchId,
    item: Option<ItemId>,
) -> Result<OpsReport, OpsError> {
    let items = items_of(store, batch, item).await?;
    let mut r = OpsReport::default();
    for i in items {
        let id = i.id;
        if i.state != ItemState::Failed {
            r.skipped.push((
                i.id.to_string(),
                i.payee_id.clone(),
                format!("not failed (it is {})", i.state),
            ));
            continue;
        }
        if store
            .rerun_item(id, i.transfer_id.is_some())
            .await?
            .is_some()
        {
            r.done.push((i.id.to_string(), i.payee_id.clone()));
        } else {
            r.skipped.push((
                i.id.to_string(),
                i.payee_id.clone(),
                "its state changed meanwhile; look again".into(),
            ));
        }
    }
    top_up(store, queue, Window::default()).await?;
    Ok(r)
}

/// `payrun retry-flow ITEM`: a new flow link for a payee whose link went stale.
pub async fn retry_flow(
    store: &Store,
    queue: &mut Queue,
    item: ItemId,
) -> Result<Result<ItemState, String>, OpsError> {
    let Some(i) = store.item(item).await? else {
        return Err(OpsError::NoItem(item));
    };
    let state = i.state;
    if !state.is_waiting_on_payee() {
        return Ok(Err(format!(
            "the item is {state}, not waiting on a flow; nothing to renew"
        )));
    }
    if store.renew_flow(item, state).await?.is_none() {
        return Ok(Err("its state changed meanwhile; look again".into()));
    }
    top_up(store, queue, Window::default()).await?;
    Ok(Ok(state))
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    pub id: String,
    pub batch_id: String,
    pub payee_id: String,
    pub amount_cents: i64,
    pub state: String,
    pub dots_user_id: Option<String>,
    pub transfer_id: Option<String>,
    pub flow_link: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// Reminders sent with a fresh link (`[reminders]`).
    pub reminders: i64,
    /// Still awaiting payout after its last reminder: when it was marked (unix ms).
    pub unclaimed_at: Option<i64>,
    pub events: Vec<ItemEvent>,
}

/// `payrun show ITEM`: the item and its whole event history.
pub async fn show(store: &Store, item: ItemId) -> Result<ItemView, OpsError> {
    let Some(i) = store.item(item).await? else {
        return Err(OpsError::NoItem(item));
    };
    let events = store.item_events(item).await?;
    Ok(ItemView {
        flow_link: i.payout_link.clone().or(i.onboarding_link.clone()),
        id: i.id.to_string(),
        batch_id: i.batch_id.to_string(),
        payee_id: i.payee_id,
        amount_cents: i.amount.get(),
        state: i.state.to_string(),
        dots_user_id: i.dots_user_id.map(|u| u.to_string()),
        transfer_id: i.transfer_id.map(|t| t.to_string()),
        attempts: i.transfer_attempts,
        last_error: i.last_error,
        reminders: i.reminders,
        unclaimed_at: i
            .unclaimed_at
            .filter(|_| i.state == ItemState::AwaitingPayout),
        events,
    })
}
