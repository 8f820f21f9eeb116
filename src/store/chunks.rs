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

/// The pending items of a batch whose payee has a Dots user (on the item, or remembered from an
/// earlier batch): `i` is `items`, `p` its payee's row (LEFT JOIN).
const USER_KNOWN: &str = "(i.dots_user_id IS NOT NULL OR p.dots_user_id IS NOT NULL)";

/// PostgreSQL: the batch row, locked for the chunk's transaction (SQLite's `BEGIN IMMEDIATE`
/// already holds the database).
const BATCH_FOR_CHUNK_PG: &str =
    "SELECT chunk_seq, fed_line, hold_reason, hold_from_line FROM batches
     WHERE id = $1 AND status = 'approved' AND paused_at IS NULL FOR NO KEY UPDATE";
const BATCH_FOR_CHUNK_SQLITE: &str =
    "SELECT chunk_seq, fed_line, hold_reason, hold_from_line FROM batches
     WHERE id = $1 AND status = 'approved' AND paused_at IS NULL";

/// Items already handed to the feed, waiting for a chunk (index `items_chunkable`).
fn fed_candidates_sql(lock: bool) -> String {
    format!(
        "SELECT i.id, i.transfer_key_gen FROM items i
           LEFT JOIN payees p ON p.payee_id = i.payee_id
         WHERE i.batch_id = $1 AND i.state = 'pending' AND i.transfer_key IS NULL
           AND i.next_attempt_at > 0 AND i.transfer_id IS NULL
           AND (i.lease_owner IS NULL OR i.lease_until < $2)
           AND i.line < $3 AND {USER_KNOWN}
         ORDER BY i.id LIMIT $4{}",
        if lock {
            " FOR UPDATE OF i SKIP LOCKED"
        } else {
            ""
        }
    )
}

/// The next lines past the cursor: id, whether it may go in a chunk now, whether it is an
/// untouched pending item the feed must hand over.
const WALK_SQL: &str = "SELECT i.id, i.transfer_key_gen,
        CAST(CASE WHEN i.state = 'pending' AND i.next_attempt_at = 0 AND i.transfer_key IS NULL
                   AND i.transfer_id IS NULL AND (i.lease_owner IS NULL OR i.lease_until < $3)
                   AND (i.dots_user_id IS NOT NULL OR p.dots_user_id IS NOT NULL)
              THEN 1 ELSE 0 END AS BIGINT),
        CAST(CASE WHEN i.state = 'pending' AND i.next_attempt_at = 0 THEN 1 ELSE 0 END AS BIGINT)
     FROM items i LEFT JOIN payees p ON p.payee_id = i.payee_id
     WHERE i.id > $1 AND i.id <= $2 ORDER BY i.id LIMIT $4";

impl Store {
    /// Batches a chunker may find work in, oldest first: approved and not paused, with lines
    /// past their feed cursor (not held back by a funds hold), or with items handed to the feed
    /// and waiting for a chunk.
    pub async fn chunk_batches(&self, limit: i64) -> Result<Vec<BatchId>, StoreError> {
        let walk: Vec<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT id FROM batches WHERE status = 'approved' AND fed_line < $1 AND paused_at IS NULL
               AND (hold_reason IS NULL OR hold_reason <> 'insufficient_funds'
                    OR fed_line < COALESCE(hold_from_line, 0) - 1)
             ORDER BY created_at LIMIT $2")
            .bind(FED_ALL).bind(limit).fetch_all(p).await?);
        let mut ids = walk;
        // The distinct batches of `items_chunkable` with an item a chunk can take (its payee's
        // Dots user known), approved and not paused: one probe of the index each.
        let mut after = String::new();
        for _ in 0..limit {
            let next: Option<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
                "SELECT i.batch_id FROM items i
                   JOIN batches b ON b.id = i.batch_id
                   LEFT JOIN payees p ON p.payee_id = i.payee_id
                 WHERE i.state = 'pending' AND i.transfer_key IS NULL AND i.next_attempt_at > 0
                   AND i.batch_id > $1 AND b.status = 'approved' AND b.paused_at IS NULL
                   AND (i.dots_user_id IS NOT NULL OR p.dots_user_id IS NOT NULL)
                 ORDER BY i.batch_id LIMIT 1")
                .bind(&after).fetch_optional(p).await?);
            let Some(b) = next else { break };
            if !ids.contains(&b) {
                ids.push(b.clone());
            }
            after = b;
        }
        ids.iter()
            .map(|s| {
                s.parse()
                    .map_err(|e| StoreError::Corrupt(format!("batch id: {e}")))
            })
            .collect()
    }

    /// Phase 1 of a chunk of `batch` (see the module doc): up to `max` items, leased to `owner`
    /// until `lease_until`; `now` is the engine's clock (the keys' birth time), `db_now` the
    /// store's (leases, the feed). Walks at most `walk` lines past the feed cursor.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_chunk(
        &self,
        batch: BatchId,
        owner: &str,
        now: i64,
        db_now: i64,
        lease_until: i64,
        max: usize,
        walk: usize,
    ) -> Result<Opened, StoreError> {
        let is_pg = matches!(self.pool, Pool::Postgres(_));
        let lock_batch = if is_pg {
            BATCH_FOR_CHUNK_PG
        } else {
            BATCH_FOR_CHUNK_SQLITE
        };
        let fed_sql = fed_candidates_sql(is_pg);
        let b = batch.to_string();
        on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            let row: Option<(i64, i64, Option<String>, Option<i64>)> = sqlx::query_as(lock_batch)
                .bind(&b).fetch_optional(&mut *tx).await?;
            let Some((seq, fed_line, hold, hold_from)) = row else {
                tx.rollback().await?;
                return Ok(Opened::default());
            };
            // A funds hold keeps back its lines (all of them without a first line).
            let held_from = match hold.as_deref() {
                Some("insufficient_funds") => hold_from.unwrap_or(0),
                _ => i64::MAX,
            };
            // Items handed to the feed earlier (e.g. by `submit`) that wait for a chunk.
            let mut take: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(fed_sql.clone()))
                .bind(&b).bind(db_now).bind(held_from).bind(max as i64)
                .fetch_all(&mut *tx).await?;
            // Then the lines past the cursor, up to the hold.
            let mut fed: Vec<String> = Vec::new();
            let upto = (held_from != i64::MAX).then(|| held_from - 1);
            if take.len() < max && fed_line < FED_ALL && upto.is_none_or(|u| u > fed_line) {
                let lo = ItemId::for_line(batch, fed_line.max(0) as u64).to_string();
                let hi = ItemId::for_line(batch, upto.map_or(u64::MAX, |u| u as u64)).to_string();
                let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(WALK_SQL)
                    .bind(&lo).bind(&hi).bind(db_now).bind(walk.max(1) as i64)
                    .fetch_all(&mut *tx).await?;
                let mut last_taken: Option<usize> = None;
                for (k, (id, generation, chunkable, untouched)) in rows.iter().enumerate() {
                    if take.len() >= max {
                        break;
                    }
                    if *chunkable == 1 {
                        take.push((id.clone(), *generation));
                    } else if *untouched == 1 {
                        fed.push(id.clone());
                    }
                    last_taken = Some(k);
                }
                // Every line up to the hold (or the end) read and taken: the cursor goes there.
                let read_all = rows.len() < walk.max(1) && last_taken == rows.len().checked_sub(1);
                let next_line = match last_taken {
                    _ if read_all => upto.unwrap_or(FED_ALL),
                    Some(k) => line_of(&rows[k].0, batch)?,
                    None => fed_line,
                };
                if next_line != fed_line {
                    sqlx::query("UPDATE batches SET fed_line = $1 WHERE id = $2 AND fed_line = $3")
                        .bind(next_line).bind(&b).bind(fed_line).execute(&mut *tx).await?;
                }
                for part in fed.chunks(ROWS_PER_STATEMENT) {
                    let mut binds = Binds::default();
                    let at = binds.push(db_now.max(1));
                    let list = part.iter().map(|id| binds.push(id.as_str())).collect::<Vec<_>>().join(", ");
                    let sql = format!(
                        "UPDATE items SET next_attempt_at = {at}, queued_until = 0
                         WHERE id IN ({list}) AND state = 'pending' AND next_attempt_at = 0");
                    bind_all!(sqlx::query(AssertSqlSafe(sql)), binds).execute(&mut *tx).await?;
                }
            }
            if take.is_empty() {
                tx.commit().await?;
                return Ok(Opened { chunk: None, fed: fed.len() as u64 });
            }
            let seq = seq + 1;
            let chunk = ChunkId::derive(batch, seq);
            let key = chunk.call_key();
            let c = chunk.to_string();
            let mut items: Vec<ItemRow> = Vec::with_capacity(take.len());
            for part in take.chunks(ROWS_PER_STATEMENT) {
                let mut binds = Binds::default();
                let mut values: Vec<String> = Vec::with_capacity(part.len());
                for (id, generation) in part {
                    // The key the item would have had alone (`plan`'s `KeyUse`).
                    let item: ItemId = id.parse().map_err(|e| StoreError::Corrupt(format!("item id: {e}")))?;
                    let generation = u32::try_from(*generation).map_err(|e| StoreError::Corrupt(format!("items.transfer_key_gen: {e}")))?;
                    let k = IdempotencyKey::derive(item, generation);
                    values.push(format!("({}, {})", binds.push(id.as_str()), binds.push(k.to_string())));
                }
                let (at, lease, db_at, owner_p, chunk_p) = (
                    binds.push(now), binds.push(lease_until), binds.push(db_now),
                    binds.push(owner), binds.push(c.as_str()));
                let sql = format!(
                    "UPDATE items SET state = 'transferring', updated_at = {db_at},
                        attempts = 0, step_since = NULL, step_first_error = NULL,
                        dots_user_id = COALESCE(items.dots_user_id,
                            (SELECT p.dots_user_id FROM payees p WHERE p.payee_id = items.payee_id)),
                        next_poll_at = NULL, next_attempt_at = {lease},
                        transfer_key = v.column2, transfer_key_at = {at}, transfer_call_open = 1,
                        transfer_attempts = transfer_attempts + 1, api_calls = api_calls + 1,
                        chunk_id = {chunk_p}, lease_owner = {owner_p}, lease_until = {lease},
                        queued_until = 0
                     FROM (VALUES {}) AS v
                     WHERE items.id = v.column1 AND items.state = 'pending'
                       AND items.transfer_key IS NULL AND items.transfer_id IS NULL
                       AND (items.lease_owner IS NULL OR items.lease_until < {db_at})
                     RETURNING {}",
                    values.join(", "),
                    item_columns_of("items"),
                );
                let q = bind_all!(sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql)), binds);
                items.extend(q.fetch_all(&mut *tx).await?);
            }
            if items.is_empty() {
                // Every candidate moved under us: nothing to send (the cursor's move stands).
                tx.commit().await?;
                return Ok(Opened { chunk: None, fed: fed.len() as u64 });
            }
            let written = typed_all(items)?;
            let total: i64 = written.iter().map(|i| i.amount.get()).sum();
            sqlx::query(
                "INSERT INTO transfer_chunks (id, batch_id, seq, idempotency_key, state, owner, items,
                     total_cents, sends, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'open', $5, $6, $7, 1, $8, $8)")
                .bind(&c).bind(&b).bind(seq).bind(key.to_string()).bind(owner)
                .bind(written.len() as i64).bind(total).bind(db_now)
                .execute(&mut *tx).await?;
            sqlx::query("UPDATE batches SET chunk_seq = $1 WHERE id = $2")
                .bind(seq).bind(&b).execute(&mut *tx).await?;
            // The events a first transfer writes alone: the state change, then the intent.
            for part in written.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<EventRow> = part.iter().map(|i| EventRow {
                    item: i.id.to_string(),
                    kind: "state",
                    from: Some("pending"),
                    to: Some("transferring"),
                    detail: format!("payee is Dots user {}", i.dots_user_id.map(|u| u.to_string()).unwrap_or_default()),
                }).collect();
                insert_events!(&mut *tx, db_now, rows);
                let rows: Vec<EventRow> = part.iter().map(|i| EventRow {
                    item: i.id.to_string(),
                    kind: "transfer_intent",
                    from: None,
                    to: None,
                    detail: format!(
                        "POST /v2/transfer-batches (chunk {c}) with idempotency_key {} (generation {})",
                        i.transfer_key.map(|k| k.to_string()).unwrap_or_default(),
                        i.transfer_key_gen
                    ),
                }).collect();
                insert_events!(&mut *tx, db_now, rows);
                // payee_id -> Dots user for later batches, written only when new or changed.
                let mut binds = Binds::default();
                let at = binds.push(db_now);
                let values: Vec<String> = part.iter().filter_map(|i| {
                    let user = i.dots_user_id?;
                    Some(format!("({}, {}, {at})", binds.push(i.payee_id.as_str()), binds.push(user.to_string())))
                }).collect();
                if !values.is_empty() {
                    let sql = format!(
                        "INSERT INTO payees (payee_id, dots_user_id, updated_at) VALUES {}
                         ON CONFLICT (payee_id) DO UPDATE SET dots_user_id = excluded.dots_user_id,
                             updated_at = excluded.updated_at
                         WHERE payees.dots_user_id <> excluded.dots_user_id",
                        values.join(", "));
                    bind_all!(sqlx::query(AssertSqlSafe(sql)), binds).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(Opened {
                chunk: Some(OpenChunk { id: chunk, batch_id: batch, key, items: written, lease_until }),
                fed: fed.len() as u64,
            })
        })
    }

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

    /// Phase 3 of a chunk (see the module doc), with the chunker's lease `owner`.
    pub async fn close_chunk(
        &self,
        chunk: ChunkId,
        owner: &str,
        out: &ChunkOutcome,
        db_now: i64,
    ) -> Result<ChunkWritten, StoreError> {
        let c = chunk.to_string();
        let mut written = ChunkWritten::default();
        on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            for part in out.made.chunks(ROWS_PER_STATEMENT) {
                let mut binds = Binds::default();
                let values: Vec<String> = part.iter().map(|(id, t)| {
                    format!("({}, {})", binds.push(id.to_string()), binds.push(t.to_string()))
                }).collect();
                let (at, chunk_p, o) = (binds.push(db_now), binds.push(c.as_str()), binds.push(owner));
                let (to, until, intent) = match &out.handover {
                    Some(h) => (
                        binds.push(h.owner.as_str()),
                        binds.push(h.lease_until),
                        binds.push(i64::from(h.payout_intent)),
                    ),
                    None => (binds.push(None::<String>), binds.push(0_i64), binds.push(0_i64)),
                };
                // Only the chunker's own lease is handed over (or released): a job that took a
                // lapsed lease finds the item transferred at its next guarded write.
                let mine = format!("items.lease_owner = {o}");
                let sql = format!(
                    "UPDATE items SET state = 'transferred', updated_at = {at},
                        attempts = 0, step_since = NULL, step_first_error = NULL,
                        transfer_id = v.column2, transfer_call_open = 0, transfer_outcome = 'ok',
                        next_attempt_at = {at}, last_error = NULL,
                        payout_call_open = CASE WHEN {mine} THEN {intent} ELSE items.payout_call_open END,
                        api_calls = items.api_calls + CASE WHEN {mine} THEN {intent} ELSE 0 END,
                        lease_owner = CASE WHEN {mine} THEN {to} ELSE items.lease_owner END,
                        lease_until = CASE WHEN {mine} THEN {until} ELSE items.lease_until END,
                        queued_until = CASE WHEN {mine} THEN 0 ELSE items.queued_until END
                     FROM (VALUES {}) AS v
                     WHERE items.id = v.column1 AND items.state = 'transferring'
                       AND items.chunk_id = {chunk_p}
                     RETURNING {}",
                    values.join(", "),
                    item_columns_of("items"));
                let rows: Vec<ItemRow> =
                    bind_all!(sqlx::query_as(AssertSqlSafe(sql)), binds).fetch_all(&mut *tx).await?;
                let rows = typed_all(rows)?;
                let events: Vec<EventRow> = rows.iter().map(|r| EventRow {
                    item: r.id.to_string(),
                    kind: "state",
                    from: Some("transferring"),
                    to: Some("transferred"),
                    detail: format!("transfer {} made in transfer batch (chunk {c})",
                        r.transfer_id.map(|t| t.to_string()).unwrap_or_default()),
                }).collect();
                insert_events!(&mut *tx, db_now, events);
                let handed: Vec<ItemRecord> = match &out.handover {
                    Some(h) => rows.iter().filter(|r| r.lease_owner.as_deref() == Some(h.owner.as_str())).cloned().collect(),
                    None => Vec::new(),
                };
                if out.handover.as_ref().is_some_and(|h| h.payout_intent) {
                    let events: Vec<EventRow> = handed.iter().map(|r| EventRow {
                        item: r.id.to_string(),
                        kind: "payout_intent",
                        from: None,
                        to: None,
                        detail: PAYOUT_INTENT_DETAIL.to_string(),
                    }).collect();
                    insert_events!(&mut *tx, db_now, events);
                }
                written.made.extend(rows.iter().map(|r| r.id));
                written.handed.extend(handed);
            }
            for (ids, close) in &out.closed {
                for part in ids.chunks(ROWS_PER_STATEMENT) {
                    let mut binds = Binds::default();
                    let (outcome, error, next, open) = (
                        binds.push(close.outcome.as_str()), binds.push(close.error.as_str()),
                        binds.push(close.next_attempt_at.max(1)), binds.push(i64::from(close.keep_open)));
                    let charge = match close.failed_at {
                        Some(t) => {
                            let t = binds.push(t);
                            format!(", attempts = attempts + 1, step_since = COALESCE(step_since, {t}),
                                     step_first_error = COALESCE(step_first_error, {error})")
                        }
                        None => String::new(),
                    };
                    let (at, chunk_p, owner_p) = (binds.push(db_now), binds.push(c.as_str()), binds.push(owner));
                    let list: Vec<String> = part.iter().map(|id| binds.push(id.to_string())).collect();
                    let sql = format!(
                        "UPDATE items SET transfer_call_open = {open}, transfer_outcome = {outcome},
                            last_error = {error}, next_attempt_at = {next}, updated_at = {at},
                            lease_owner = NULL, lease_until = 0, queued_until = 0{charge}
                         WHERE id IN ({}) AND state = 'transferring' AND chunk_id = {chunk_p}
                           AND lease_owner = {owner_p}
                         RETURNING id",
                        list.join(", "));
                    let rows: Vec<String> =
                        bind_all!(sqlx::query_scalar(AssertSqlSafe(sql)), binds).fetch_all(&mut *tx).await?;
                    let events: Vec<EventRow> = rows.iter().map(|id| EventRow {
                        item: id.clone(),
                        kind: close.kind,
                        from: None,
                        to: None,
                        detail: close.detail.clone(),
                    }).collect();
                    insert_events!(&mut *tx, db_now, events);
                    for id in rows {
                        written.closed.push(id.parse().map_err(|e| StoreError::Corrupt(format!("item id: {e}")))?);
                    }
                }
            }
            let state = if out.released { ChunkState::Released } else { ChunkState::Done };
            sqlx::query(
                "UPDATE transfer_chunks SET state = $1, dots_batch_id = COALESCE($2, dots_batch_id),
                     detail = $3, updated_at = $4 WHERE id = $5")
                .bind(state.as_str()).bind(out.dots_batch_id.map(|u| u.to_string()))
                .bind(&out.detail).bind(db_now).bind(&c)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(written)
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
