//! Phase 1 of a chunk: the batches with work, and `Store::open_chunk` (the chunk's row, every
//! item's intent and key, the feed cursor walked), one transaction.

use super::*;

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
}
