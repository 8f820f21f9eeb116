//! Transfer chunks (`dots.transfer_mode = "batch"`, `jobs::chunk`): the writes of a chunk's
//! phases, each one transaction and set-based — a few statements per chunk, not per item.
//!
//! Guarantees:
//! - **Phase 1** ([`Store::open_chunk`]) commits, in one transaction, the chunk's row (id and key
//!   derived from the batch and `batches.chunk_seq`) and every item's move `pending →
//!   transferring` with the key it would have had alone, its birth time, the call marked open,
//!   the chunk id and the chunker's lease, plus their event rows. The per-item guard (pending,
//!   no key, no transfer, lease free) is in the `UPDATE`'s `WHERE`; `RETURNING` says which items
//!   made it, and only those go in the call. The batch must be approved and not paused, and a
//!   funds hold keeps back its lines (the rules of the feed, `store::feed`), read in the same
//!   transaction that locks the batch row (batch, then items: every writer's order).
//! - The chunker also walks the batch's feed cursor (`fed_line`) in that transaction: items
//!   past it that it does not put in the chunk (no Dots user yet) are handed to the feed as due
//!   (`next_attempt_at`), so the feed's invariant holds — every workable item is due or lies
//!   past its batch's cursor, never claimed.
//! - **Phase 3** ([`Store::close_chunk`]) commits every item's outcome and the chunk's in one
//!   transaction: transfers made → `transferred` (guarded by state and chunk only: a transfer
//!   found is always recorded), other calls closed only where the chunker still holds the
//!   item's lease (another worker that took a lapsed lease runs the per-item protocol itself).
//!   Each released item is due at once or at its retry time, so the feed hands it to its job.
//! - A chunker that dies between phases leaves the chunk `open` and its items' calls open:
//!   their leases lapse and each item's job reconciles it alone (the transfer protocol), or a
//!   chunker takes the whole chunk over ([`Store::take_over_chunk`]).

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::feed::{BeginWrite as _, FED_ALL};
use super::record::{ITEM_COLUMNS, ItemRow, typed_all};
use super::transitions::{Binds, bind_all};
use super::writes::PAYOUT_INTENT_DETAIL;
use super::{ItemRecord, Pool, Store, StoreError, on_pool};
use crate::batch::{BatchId, ChunkId, ChunkState, ItemId};
use crate::item::{IdempotencyKey, TransferOutcome};

/// Rows per statement when a statement lists items (bind counts stay far below both backends'
/// limits whatever `dots.transfer_batch_size` is).
const ROWS_PER_STATEMENT: usize = 500;

/// One `item_events` row.
struct EventRow {
    item: String,
    kind: &'static str,
    from: Option<&'static str>,
    to: Option<&'static str>,
    detail: String,
}

/// Inserts `$rows` (a `Vec<EventRow>`, at most [`ROWS_PER_STATEMENT`]) at `$at` in one
/// statement on `$tx`.
macro_rules! insert_events {
    ($tx:expr, $at:expr, $rows:expr) => {{
        let rows: Vec<EventRow> = $rows;
        if !rows.is_empty() {
            let mut binds = Binds::default();
            let at = binds.push($at);
            let values: Vec<String> = rows
                .into_iter()
                .map(|r| {
                    format!(
                        "({}, {at}, {}, {}, {}, {})",
                        binds.push(r.item),
                        binds.push(r.kind),
                        binds.push(r.from.map(str::to_owned)),
                        binds.push(r.to.map(str::to_owned)),
                        binds.push(r.detail)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail) VALUES {}",
                values.join(", ")
            );
            bind_all!(sqlx::query(AssertSqlSafe(sql)), binds)
                .execute($tx)
                .await?;
        }
    }};
}

// After the macro: `macro_rules!` is in scope only below its definition.
mod close;
mod open;

/// A chunk whose phase 1 is committed: the items as written, in file order.
#[derive(Debug, Clone)]
pub struct OpenChunk {
    pub id: ChunkId,
    pub batch_id: BatchId,
    /// The idempotency key of the call as a whole.
    pub key: Uuid,
    pub items: Vec<ItemRecord>,
    /// The chunker's lease on its items ends then (unix ms).
    pub lease_until: i64,
}

/// What [`Store::open_chunk`] did.
#[derive(Debug, Default)]
pub struct Opened {
    /// The chunk, if any item could go.
    pub chunk: Option<OpenChunk>,
    /// Items past the feed cursor handed to the feed as due (they need onboarding first).
    pub fed: u64,
}

/// A chunk as stored, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    pub id: ChunkId,
    pub batch_id: BatchId,
    pub seq: i64,
    pub key: Uuid,
    pub state: ChunkState,
    pub owner: String,
    pub items: i64,
    pub total_cents: i64,
    pub sends: i64,
    pub dots_batch_id: Option<Uuid>,
    pub detail: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

type ChunkRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

const CHUNK_COLUMNS: &str = "id, batch_id, seq, idempotency_key, state, owner, items, total_cents,
    sends, dots_batch_id, detail, created_at, updated_at";

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("transfer_chunks.{column}: {e}"))
}

impl TryFrom<ChunkRow> for ChunkRecord {
    type Error = StoreError;
    fn try_from(r: ChunkRow) -> Result<ChunkRecord, StoreError> {
        Ok(ChunkRecord {
            id: r.0.parse().map_err(|e| corrupt("id", e))?,
            batch_id: r.1.parse().map_err(|e| corrupt("batch_id", e))?,
            seq: r.2,
            key: r.3.parse().map_err(|e| corrupt("idempotency_key", e))?,
            state: r.4.parse().map_err(|e| corrupt("state", e))?,
            owner: r.5,
            items: r.6,
            total_cents: r.7,
            sends: r.8,
            dots_batch_id: r
                .9
                .as_deref()
                .map(|s| s.parse().map_err(|e| corrupt("dots_batch_id", e)))
                .transpose()?,
            detail: r.10,
            created_at: r.11,
            updated_at: r.12,
        })
    }
}

/// How phase 3 closes the calls of some of a chunk's items that made no transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallClose {
    /// What the call is recorded as (`items.transfer_outcome`).
    pub outcome: TransferOutcome,
    /// `items.last_error`.
    pub error: String,
    /// When the item's own job takes it up (always > 0: the feed hands it over then).
    pub next_attempt_at: i64,
    /// The failure is the item's (engine clock): an attempt is counted and the step's time
    /// budget starts; `None`: held, nothing counted.
    pub failed_at: Option<i64>,
    /// The call's outcome is not known: it stays open, so the item's job reconciles it by the
    /// user's transfers before anything is sent again.
    pub keep_open: bool,
    /// The item event written (`transfer_error`, `funds_hold`) and its detail.
    pub kind: &'static str,
    pub detail: String,
}

/// Who takes the items whose transfer a chunk made, straight from its outcome: the worker's
/// item jobs (`owner`), with a fresh lease and — for the payout flow that follows — its intent
/// committed in the same transaction, as a single transfer's success does
/// (`Store::record_transfer_done_with_payout_intent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub owner: String,
    pub lease_until: i64,
    pub payout_intent: bool,
}

/// Phase 3 of a chunk: what to write.
#[derive(Debug, Clone, Default)]
pub struct ChunkOutcome {
    /// Items whose transfer Dots made, with its id.
    pub made: Vec<(ItemId, Uuid)>,
    /// Where the chunker still holds their lease: handed over so (else released).
    pub handover: Option<Handover>,
    /// Items whose call is closed (or left open) without a transfer, by how.
    pub closed: Vec<(Vec<ItemId>, CallClose)>,
    /// The transfer batch Dots made for the chunk, if known.
    pub dots_batch_id: Option<Uuid>,
    /// The chunk's state after: done (every item answered) or released.
    pub released: bool,
    /// A summary for the chunk row.
    pub detail: String,
}

/// What [`Store::close_chunk`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkWritten {
    /// Items recorded transferred.
    pub made: Vec<ItemId>,
    /// Of those, the ones handed over ([`ChunkOutcome::handover`]), as written.
    pub handed: Vec<ItemRecord>,
    /// Items whose call was closed (or released open) as asked.
    pub closed: Vec<ItemId>,
}

impl Store {
    /// Extends the chunker's lease on the chunk's items it still holds (before another call).
    /// Returns how many it holds.
    pub async fn renew_chunk_lease(
        &self,
        chunk: ChunkId,
        owner: &str,
        until: i64,
        db_now: i64,
    ) -> Result<u64, StoreError> {
        let c = chunk.to_string();
        Ok(on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE items SET lease_until = $1, next_attempt_at = $1
                 WHERE chunk_id = $2 AND lease_owner = $3 AND state = 'transferring'
                   AND lease_until >= $4")
                .bind(until).bind(&c).bind(owner).bind(db_now)
                .execute(&mut *tx).await?.rows_affected();
            sqlx::query("UPDATE transfer_chunks SET updated_at = $1 WHERE id = $2 AND state = 'open'")
                .bind(db_now).bind(&c).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        }))
    }

    /// Another call for the chunk is about to leave (the same keys): counted first.
    pub async fn note_chunk_send(&self, chunk: ChunkId, db_now: i64) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE transfer_chunks SET sends = sends + 1, updated_at = $1 WHERE id = $2 AND state = 'open'")
            .bind(db_now).bind(chunk.to_string()).execute(p).await?; });
        Ok(())
    }

    /// The chunk, if it exists.
    pub async fn chunk(&self, id: ChunkId) -> Result<Option<ChunkRecord>, StoreError> {
        let sql = format!("SELECT {CHUNK_COLUMNS} FROM transfer_chunks WHERE id = $1");
        let row: Option<ChunkRow> = on_pool!(&self.pool, p => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(id.to_string()).fetch_optional(p).await?);
        row.map(ChunkRecord::try_from).transpose()
    }

    /// A batch's chunks, in the order they were opened.
    pub async fn batch_chunks(&self, batch: BatchId) -> Result<Vec<ChunkRecord>, StoreError> {
        let sql =
            format!("SELECT {CHUNK_COLUMNS} FROM transfer_chunks WHERE batch_id = $1 ORDER BY seq");
        let rows: Vec<ChunkRow> = on_pool!(&self.pool, p => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(batch.to_string()).fetch_all(p).await?);
        rows.into_iter().map(ChunkRecord::try_from).collect()
    }

    /// The oldest chunk left open by a chunker that stopped renewing it before `stale_before`
    /// (store clock), if any.
    pub async fn stale_open_chunk(
        &self,
        stale_before: i64,
    ) -> Result<Option<ChunkRecord>, StoreError> {
        let sql = format!(
            "SELECT {CHUNK_COLUMNS} FROM transfer_chunks WHERE state = 'open' AND updated_at < $1
             ORDER BY updated_at LIMIT 1"
        );
        let row: Option<ChunkRow> = on_pool!(&self.pool, p => sqlx::query_as(AssertSqlSafe(sql.clone()))
            .bind(stale_before).fetch_optional(p).await?);
        row.map(ChunkRecord::try_from).transpose()
    }

    /// Takes over a chunk left open (its chunker stopped before `stale_before`): the chunk is
    /// `owner`'s, and so is every item of it whose call is still open and whose lease lapsed
    /// (an item another worker's job holds is that job's). Returns those items; `None` when
    /// another chunker took it first.
    pub async fn take_over_chunk(
        &self,
        chunk: ChunkId,
        owner: &str,
        stale_before: i64,
        db_now: i64,
        lease_until: i64,
    ) -> Result<Option<Vec<ItemRecord>>, StoreError> {
        let c = chunk.to_string();
        let sql = format!(
            "UPDATE items SET lease_owner = $1, lease_until = $2, next_attempt_at = $2
             WHERE chunk_id = $3 AND state = 'transferring' AND transfer_call_open = 1
               AND (lease_owner IS NULL OR lease_until < $4)
             RETURNING {ITEM_COLUMNS}"
        );
        let rows = on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            let took = sqlx::query(
                "UPDATE transfer_chunks SET owner = $1, updated_at = $2
                 WHERE id = $3 AND state = 'open' AND updated_at < $4")
                .bind(owner).bind(db_now).bind(&c).bind(stale_before)
                .execute(&mut *tx).await?.rows_affected();
            if took == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let rows: Vec<ItemRow> = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(owner).bind(lease_until).bind(&c).bind(db_now)
                .fetch_all(&mut *tx).await?;
            tx.commit().await?;
            rows
        });
        let mut items = typed_all(rows)?;
        items.sort_by_key(|i| i.id);
        Ok(Some(items))
    }
}

/// [`ITEM_COLUMNS`] qualified by `table` (an `UPDATE … FROM` names both tables' columns).
fn item_columns_of(table: &str) -> String {
    ITEM_COLUMNS
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn line_of(id: &str, batch: BatchId) -> Result<i64, StoreError> {
    let id: ItemId = id
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("item id: {e}")))?;
    id.line_in(batch)
        .map(|l| l as i64)
        .ok_or_else(|| StoreError::Corrupt(format!("item {id} is not of batch {batch}")))
}
