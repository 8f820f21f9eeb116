//! A guarded item transition (`from -> to`, see `transitions.rs`) put together once as SQL
//! ([`Prepared`]) and run in a transaction: alone ([`Store::transition_with`], the path of
//! every step of the state diagram) or several in one ([`Store::transitions_with`]).
//!
//! Guarantees, for each item alike, alone or in a group:
//! - the `UPDATE` is guarded by the item's state (and the write's own guard); a miss writes
//!   nothing for that item and returns `None` for it, the others go on;
//! - its `item_events` rows, its outbox rows (versioned by the same `UPDATE`) and the payee it
//!   remembers commit with it, in the same transaction;
//! - moving an item back to work clears its batch's settled/completed markers in that
//!   transaction (the batch row locked first on PostgreSQL); settling is checked after the
//!   commit, once per batch of the group ([`Store::report_if_settled`]).
//!
//! Why a group: the chunker records the payout flows of the items a chunk paid in one
//! transaction instead of one each — one commit (one WAL flush) for many items.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::outbox::{insert_outbox_row, item_event_rows};
use super::outbox_batch;
use super::record::{ITEM_COLUMNS, ItemRow, typed};
use super::transitions::{
    Binds, Change, REMEMBER_PAYEE, STATE_AND_DETAIL_EVENTS, STATE_EVENT, Set, bind_all,
};
use super::{ItemRecord, Store, StoreError, now_ms, on_pool};
use crate::batch::ItemId;
use crate::events::{self, EventType, ItemWrite};
use crate::item::ItemState;

/// One item's guarded transition, ready to run.
pub(super) struct Prepared {
    id: ItemId,
    from: ItemState,
    to: ItemState,
    sql: String,
    binds: Binds,
    kinds: Vec<EventType>,
    detail: String,
    payee: Option<(String, Uuid)>,
    also: Option<(String, String)>,
    unsettles: bool,
}

impl Prepared {
    /// `id`'s move `from -> to` with `c`, at `now`.
    pub(super) fn new(
        id: ItemId,
        from: ItemState,
        to: ItemState,
        c: Change<'_>,
        now: i64,
    ) -> Result<Prepared, StoreError> {
        if !from.can_become(to) {
            return Err(StoreError::IllegalTransition { from, to });
        }
        let mut b = Binds::default();
        let mut set = Set::new().val("state", to.as_str()).val("updated_at", now);
        if to != ItemState::Failed {
            // A new step: its attempts and its time budget start over. (A failed item keeps
            // its history for the report.)
            set = set.raw("attempts = 0, step_since = NULL, step_first_error = NULL");
        }
        // The outbound events this write implies, versioned by the same statement.
        let kinds = events::item_events(ItemWrite {
            to: Some(to),
            sets_onboarding_link: c.set.sets("onboarding_link"),
            sets_payout_link: c.set.sets("payout_link"),
            reminder: c.reminder,
        });
        if !kinds.is_empty() {
            set = set.add("event_version", kinds.len() as i64);
        }
        let set = set.and(c.set).render(&mut b);
        let release = match c.release {
            // As `release_lease`, in this statement: only this owner's lease. (SET expressions
            // read the row as it was, so both CASEs see the old owner.)
            Some(owner) => {
                let k = b.push(owner);
                format!(
                    ", lease_owner = CASE WHEN lease_owner = {k} THEN NULL ELSE lease_owner END,
                     lease_until = CASE WHEN lease_owner = {k} THEN 0 ELSE lease_until END,
                     queued_until = CASE WHEN lease_owner = {k} THEN 0 ELSE queued_until END"
                )
            }
            None => String::new(),
        };
        let guard = c.guard.map(|g| format!(" AND ({g})")).unwrap_or_default();
        let sql = format!(
            "UPDATE items SET {set}{release} WHERE id = {} AND state = {}{guard}
             RETURNING {ITEM_COLUMNS}",
            b.push(id.to_string()),
            b.push(from.as_str()),
        );
        Ok(Prepared {
            id,
            from,
            to,
            sql,
            binds: b,
            kinds,
            detail: c.detail.to_owned(),
            payee: c.payee.map(|(p, u)| (p.to_owned(), u)),
            also: c.also.map(|(k, d)| (k.to_owned(), d.to_owned())),
            unsettles: outbox_batch::unsettles(from, to),
        })
    }
}

/// Runs `$p` (a [`Prepared`]) on `$tx` at `$now` and evaluates to the row as written
/// (`Option<ItemRow>`), with its events, outbox rows and payee.
macro_rules! apply_prepared {
    ($tx:expr, $p:expr, $now:expr, $lock:expr) => {{
        let p: Prepared = $p;
        let now: i64 = $now;
        if $lock && p.unsettles {
            sqlx::query(outbox_batch::LOCK_BATCH_OF_ITEM)
                .bind(p.id.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        let q = bind_all!(sqlx::query_as::<_, ItemRow>(AssertSqlSafe(p.sql)), p.binds);
        let row = q.fetch_optional(&mut *$tx).await?;
        if let Some(r) = &row {
            if p.unsettles {
                sqlx::query(outbox_batch::UNSETTLE)
                    .bind(&r.batch_id)
                    .execute(&mut *$tx)
                    .await?;
            }
            if let Some((payee_id, user_id)) = &p.payee {
                sqlx::query(REMEMBER_PAYEE)
                    .bind(payee_id)
                    .bind(user_id.to_string())
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
            }
            let events = sqlx::query(if p.also.is_some() {
                STATE_AND_DETAIL_EVENTS
            } else {
                STATE_EVENT
            })
            .bind(p.id.to_string())
            .bind(now)
            .bind(p.from.as_str())
            .bind(p.to.as_str())
            .bind(&p.detail);
            match &p.also {
                Some((kind, detail)) => events.bind(kind).bind(detail),
                None => events,
            }
            .execute(&mut *$tx)
            .await?;
            if !p.kinds.is_empty() {
                let written = ItemRecord::try_from(r.clone())?;
                for e in item_event_rows(&written, &p.kinds, now) {
                    insert_outbox_row!(&mut *$tx, e);
                }
            }
        }
        row
    }};
}

impl Store {
    /// [`Store::transition`] with what else goes in its transaction (see [`Change`]).
    pub(super) async fn transition_with(
        &self,
        id: ItemId,
        from: ItemState,
        to: ItemState,
        c: Change<'_>,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let now = now_ms();
        let p = Prepared::new(id, from, to, c, now)?;
        let mut written = self.transitions_with(vec![p], now).await?;
        Ok(written.pop().flatten())
    }

    /// Several items' transitions in one transaction, each as [`Store::transition_with`] would
    /// write it alone; returns each one's row as written (`None`: its guard missed), in order.
    pub(super) async fn transitions_with(
        &self,
        many: Vec<Prepared>,
        now: i64,
    ) -> Result<Vec<Option<ItemRecord>>, StoreError> {
        let lock = matches!(self.pool, super::Pool::Postgres(_));
        let settling: Vec<bool> = many.iter().map(|p| outbox_batch::settles(p.to)).collect();
        let rows: Vec<Option<ItemRow>> = on_pool!(&self.pool, pool => {
            let mut tx = pool.begin().await?;
            let mut rows = Vec::with_capacity(many.len());
            for p in many {
                rows.push(apply_prepared!(tx, p, now, lock));
            }
            tx.commit().await?;
            rows
        });
        let mut batches: Vec<&str> = rows
            .iter()
            .zip(&settling)
            .filter_map(|(r, settles)| r.as_ref().filter(|_| *settles))
            .map(|r| r.batch_id.as_str())
            .collect();
        batches.sort_unstable();
        batches.dedup();
        for batch in batches {
            if let Err(e) = self.report_if_settled(batch).await {
                // The items' writes stand; the worker's sweep reports the batch later.
                tracing::warn!(batch_id = %batch, error = %e, "the batch's settle check failed");
            }
        }
        rows.into_iter().map(typed).collect()
    }
}
