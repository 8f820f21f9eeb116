//! Auditing a batch against what Dots reports: every item that should be paid has exactly one
//! transfer, of its amount, to its user; every transfer naming the batch belongs to an item.
//! The demo and the chaos test run the same comparison on the simulator's ledger.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use crate::batch::BatchId;
use crate::dots::client::{DotsClient, DotsError};
use crate::store::{ItemRecord, Store};

/// A transfer as the auditor sees it, from Dots or from the simulator's ledger.
#[derive(Debug, Clone)]
pub struct SeenTransfer {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub status: String,
    pub metadata: Option<serde_json::Value>,
}

impl SeenTransfer {
    fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub items: usize,
    pub transfers: usize,
    /// Items payrun recorded as paid (or that should be) with no transfer at Dots.
    pub missing: Vec<String>,
    /// Items with more than one transfer.
    pub duplicated: Vec<String>,
    /// Items whose transfer has another amount or user.
    pub mismatched: Vec<String>,
    /// Items with a transfer at Dots that payrun has not recorded.
    pub unrecorded: Vec<String>,
    /// Transfers naming this batch but no item of it.
    pub orphans: Vec<String>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.mismatched.is_empty()
            && self.unrecorded.is_empty()
            && self.orphans.is_empty()
    }
}

/// Compares items with the transfers seen for their users. Transfers that name another batch
/// (or none) are ignored: a user may be paid by several batches and by other systems.
pub fn compare(batch: BatchId, items: &[ItemRecord], transfers: &[SeenTransfer]) -> AuditReport {
    let batch_s = batch.to_string();
    let mut by_item: HashMap<&str, Vec<&SeenTransfer>> = HashMap::new();
    let mut report = AuditReport {
        items: items.len(),
        ..Default::default()
    };
    for t in transfers
        .iter()
        .filter(|t| t.meta("payrun_batch_id") == Some(batch_s.as_str()))
    {
        report.transfers += 1;
        match t.meta("payrun_item_id") {
            Some(id) if items.iter().any(|i| i.id.to_string() == id) => {
                by_item.entry(id).or_default().push(t)
            }
            _ => report.orphans.push(t.id.to_string()),
        }
    }
    for i in items {
        let ts = by_item
            .get(i.id.to_string().as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let live: Vec<_> = ts
            .iter()
            .filter(|t| !matches!(t.status.as_str(), "failed" | "canceled" | "reversed"))
            .collect();
        let recorded = i.transfer_id.is_some();
        match (live.len(), recorded) {
            (0, true) => report.missing.push(i.payee_id.clone()),
            (0, false) => {}
            (1, _) => {
                let t = live[0];
                let right_user = i.dots_user_id == Some(t.user_id);
                if t.amount != i.amount.as_credit() || !right_user {
                    report.mismatched.push(i.payee_id.clone());
                } else if !recorded {
                    report.unrecorded.push(i.payee_id.clone());
                } else if i.transfer_id != Some(t.id) {
                    report.mismatched.push(i.payee_id.clone());
                }
            }
            _ => report.duplicated.push(i.payee_id.clone()),
        }
    }
    report
}

/// `payrun audit BATCH`: lists every transfer Dots has for the batch's users and compares.
/// Each page is read with the client's retrying read path (`dots::retry`): 429s, 5xx and lost
/// answers are asked again with the worker's backoff, so a flaky API slows an audit down
/// instead of failing it.
pub async fn audit_batch(
    store: &Store,
    dots: &DotsClient,
    batch: BatchId,
) -> Result<AuditReport, AuditError> {
    let items = store.batch_items(batch).await?;
    let mut users: Vec<Uuid> = items.iter().filter_map(|i| i.dots_user_id).collect();
    users.sort();
    users.dedup();
    let mut seen = Vec::new();
    for u in users {
        for t in dots.list_all_transfers_retrying(u).await? {
            seen.push(SeenTransfer {
                id: t.id,
                user_id: t.user_id,
                amount: t.amount,
                status: t.status,
                metadata: t.metadata,
            });
        }
    }
    Ok(compare(batch, &items, &seen))
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("reading transfers from Dots: {0}")]
    Dots(#[from] DotsError),
}

impl From<&crate::dots::sim::LedgerTransfer> for SeenTransfer {
    fn from(t: &crate::dots::sim::LedgerTransfer) -> Self {
        SeenTransfer {
            id: t.id,
            user_id: t.user_id,
            amount: t.amount,
            status: t.status.clone(),
            metadata: t.metadata.clone(),
        }
    }
}
