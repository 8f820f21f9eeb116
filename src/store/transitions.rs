//! The machinery every guarded write to an item goes through, and the item event log. The
//! writes themselves, one per step of the state diagram, are in `writes.rs`.
//!
//! Every method that changes `state` does so with `WHERE state = <expected>` and writes the
//! event in the same transaction. It returns the row as written (`RETURNING`), so the job goes
//! on from there without reading it again, or `Ok(None)` when the item was no longer in the
//! expected state (another worker got there first), never a silent overwrite.
//!
//! A write names its columns and values with [`Set`]; the statement's placeholders (`$1`,
//! `$2`, …) are numbered by [`Binds`] as the SQL text is put together, never by hand.

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::outbox::{insert_outbox_row, item_event_rows};
use super::record::{ITEM_COLUMNS, ItemRow, typed};
use super::{ItemRecord, Store, StoreError, now_ms, on_pool};
use crate::batch::ItemId;
use crate::events::{self, ItemWrite};
use crate::item::ItemState;

/// Binds every value of `$binds` (a [`Binds`]) to the query `$q`, in order.
macro_rules! bind_all {
    ($q:expr, $binds:expr) => {{
        let mut q = $q;
        for v in $binds.0 {
            q = match v {
                $crate::store::transitions::Bind::I(v) => q.bind(v),
                $crate::store::transitions::Bind::S(v) => q.bind(v),
                $crate::store::transitions::Bind::Null => q.bind(None::<String>),
            };
        }
        q
    }};
}
pub(super) use bind_all;

impl Store {
    /// Appends an event that is not a state change (an API call outcome, an error, a poll).
    pub async fn record_event(
        &self,
        id: ItemId,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "INSERT INTO item_events (item_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(id.to_string()).bind(now_ms()).bind(kind).bind(detail).execute(p).await?; });
        Ok(())
    }

    /// Moves the item `from` -> `to`, applying `set` in the same statement, and logs the
    /// event. Returns the row as written; `Ok(None)`: not in `from` any more.
    pub(super) async fn transition(
        &self,
        id: ItemId,
        from: ItemState,
        to: ItemState,
        set: Set,
        detail: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        self.transition_with(id, from, to, Change::new(set, detail))
            .await
    }

    /// Updates columns without a state change, guarded by the current state, with an event.
    /// Returns the row as written; `Ok(None)`: not in `state`.
    pub(super) async fn update_in_state(
        &self,
        id: ItemId,
        state: ItemState,
        set: Set,
        kind: &str,
        detail: &str,
    ) -> Result<Option<ItemRecord>, StoreError> {
        let now = now_ms();
        let mut b = Binds::default();
        let kinds = events::item_events(ItemWrite {
            to: None,
            sets_onboarding_link: set.sets("onboarding_link"),
            sets_payout_link: set.sets("payout_link"),
            reminder: None,
        });
        let mut head = Set::new().val("updated_at", now);
        if !kinds.is_empty() {
            head = head.add("event_version", kinds.len() as i64);
        }
        let set = head.and(set).render(&mut b);
        let sql = format!(
            "UPDATE items SET {set} WHERE id = {} AND state = {}
             RETURNING {ITEM_COLUMNS}",
            b.push(id.to_string()),
            b.push(state.as_str()),
        );
        let row = on_pool!(&self.pool, p => {
            let mut tx = p.begin().await?;
            let q = bind_all!(sqlx::query_as::<_, ItemRow>(AssertSqlSafe(sql.clone())), b);
            let row = q.fetch_optional(&mut *tx).await?;
            if row.is_some() {
                sqlx::query("INSERT INTO item_events (item_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
                    .bind(id.to_string()).bind(now).bind(kind).bind(detail)
                    .execute(&mut *tx).await?;
                if !kinds.is_empty() {
                    let written = ItemRecord::try_from(row.clone().expect("checked"))?;
                    for r in item_event_rows(&written, &kinds, now) {
                        insert_outbox_row!(&mut *tx, r);
                    }
                }
            }
            tx.commit().await?;
            row
        });
        typed(row)
    }

    pub async fn remember_payee(&self, payee_id: &str, user_id: Uuid) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(REMEMBER_PAYEE)
            .bind(payee_id).bind(user_id.to_string()).bind(now_ms()).execute(p).await?; });
        Ok(())
    }
}

/// A bind value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bind {
    I(i64),
    S(String),
    /// SQL NULL, typed as text.
    Null,
}

impl From<i64> for Bind {
    fn from(v: i64) -> Bind {
        Bind::I(v)
    }
}

impl From<String> for Bind {
    fn from(v: String) -> Bind {
        Bind::S(v)
    }
}

impl From<Option<String>> for Bind {
    /// `None` binds SQL NULL (as text).
    fn from(v: Option<String>) -> Bind {
        match v {
            Some(s) => Bind::S(s),
            None => Bind::Null,
        }
    }
}

impl From<&str> for Bind {
    fn from(v: &str) -> Bind {
        Bind::S(v.to_owned())
    }
}

/// A statement's bind values in placeholder order: [`Binds::push`] hands out the next `$n`.
#[derive(Debug, Default)]
pub(super) struct Binds(pub(super) Vec<Bind>);

impl Binds {
    /// Adds a value; answers its placeholder.
    pub(super) fn push(&mut self, v: impl Into<Bind>) -> String {
        self.0.push(v.into());
        format!("${}", self.0.len())
    }
}

/// One piece of a `SET` list.
#[derive(Debug, Clone)]
enum Part {
    /// `column = <value>`.
    Val(&'static str, Bind),
    /// `column = column + <value>`.
    Add(&'static str, Bind),
    /// SQL with no values (`polls = 0`, `api_calls = api_calls + 1`).
    Raw(&'static str),
    /// `column = COALESCE(column, <value>)`: the value unless one is on record.
    First(&'static str, Bind),
}

/// The columns a write sets, with their values; numbered only when rendered.
#[derive(Debug, Clone, Default)]
pub(super) struct Set(Vec<Part>);

impl Set {
    pub(super) fn new() -> Set {
        Set::default()
    }
    /// `column = value`.
    pub(super) fn val(mut self, column: &'static str, v: impl Into<Bind>) -> Set {
        self.0.push(Part::Val(column, v.into()));
        self
    }
    /// `column = column + value`.
    pub(super) fn add(mut self, column: &'static str, v: impl Into<Bind>) -> Set {
        self.0.push(Part::Add(column, v.into()));
        self
    }
    /// `column = value` unless the column holds one already (NULL only).
    pub(super) fn first(mut self, column: &'static str, v: impl Into<Bind>) -> Set {
        self.0.push(Part::First(column, v.into()));
        self
    }
    /// Assignments with no values, as SQL.
    pub(super) fn raw(mut self, sql: &'static str) -> Set {
        self.0.push(Part::Raw(sql));
        self
    }
    /// Whether this set gives `column` a value (outright or unless one is on record).
    pub(super) fn sets(&self, column: &str) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, Part::Val(c, _) | Part::First(c, _) if *c == column))
    }
    /// This set, then `other`'s.
    pub(super) fn and(mut self, other: Set) -> Set {
        self.0.extend(other.0);
        self
    }
    /// The `SET` list's SQL, its values pushed onto `b` in order.
    pub(super) fn render(self, b: &mut Binds) -> String {
        let parts: Vec<String> = self
            .0
            .into_iter()
            .map(|p| match p {
                Part::Val(c, v) => format!("{c} = {}", b.push(v)),
                Part::Add(c, v) => format!("{c} = {c} + {}", b.push(v)),
                Part::Raw(sql) => sql.to_owned(),
                Part::First(c, v) => format!("{c} = COALESCE({c}, {})", b.push(v)),
            })
            .collect();
        parts.join(", ")
    }
}

/// One guarded write: its `SET`, its event's detail, and what else goes in the same
/// transaction when (and only when) the guard matches.
pub(super) struct Change<'a> {
    pub(super) set: Set,
    pub(super) detail: &'a str,
    /// Remember the payee's Dots user for later batches.
    pub(super) payee: Option<(&'a str, Uuid)>,
    /// A second event (kind, detail) after the state change's: the intent of the call that
    /// follows, committed with the state change before it.
    pub(super) also: Option<(&'a str, &'a str)>,
    /// Release this owner's lease in the same `UPDATE`: the job's last write to the item.
    pub(super) release: Option<&'a str>,
    /// A further condition (no binds) the row must meet besides its state.
    pub(super) guard: Option<&'a str>,
    /// The payout link this write sets is reminder `n`'s (`events::ItemWrite::reminder`).
    pub(super) reminder: Option<i64>,
}

impl<'a> Change<'a> {
    pub(super) fn new(set: Set, detail: &'a str) -> Change<'a> {
        Change {
            set,
            detail,
            payee: None,
            also: None,
            release: None,
            guard: None,
            reminder: None,
        }
    }
}

pub(super) const STATE_EVENT: &str =
    "INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail)
     VALUES ($1, $2, 'state', $3, $4, $5)";

/// A state change's event and a second one (`$6` kind, `$7` detail), in this order.
pub(super) const STATE_AND_DETAIL_EVENTS: &str =
    "INSERT INTO item_events (item_id, at, kind, from_state, to_state, detail)
     VALUES ($1, $2, 'state', $3, $4, $5), ($1, $2, $6, NULL, NULL, $7)";

/// payee_id -> Dots user, written only when it is new or changed (a payee paid again is
/// usually known already: no row write, no WAL).
pub(super) const REMEMBER_PAYEE: &str = "INSERT INTO payees (payee_id, dots_user_id, updated_at) VALUES ($1, $2, $3)
     ON CONFLICT (payee_id) DO UPDATE SET dots_user_id = excluded.dots_user_id, updated_at = excluded.updated_at
     WHERE payees.dots_user_id <> excluded.dots_user_id";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_the_order_values_are_added() {
        let mut b = Binds::default();
        let set = Set::new()
            .val("state", "transferring")
            .raw("polls = 0")
            .add("api_calls", 2)
            .val("dots_user_id", "u".to_string())
            .first("step_since", 9)
            .render(&mut b);
        assert_eq!(
            set,
            "state = $1, polls = 0, api_calls = api_calls + $2, dots_user_id = $3, \
             step_since = COALESCE(step_since, $4)"
        );
        assert_eq!(b.push(ItemState::Pending.as_str()), "$5");
        assert_eq!(
            b.0,
            vec![
                Bind::S("transferring".into()),
                Bind::I(2),
                Bind::S("u".into()),
                Bind::I(9),
                Bind::S("pending".into())
            ]
        );
    }
}
