//! Phase 3 of a chunk: `Store::close_chunk`, every item's outcome and the chunk's in one
//! transaction.

use super::*;

impl Store {
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
}
