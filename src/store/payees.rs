//! What the store remembers about a payee's Dots user for the payee-friendly route
//! (`worker.payout_flow = "unless_auto_payout"`): whether `GET /v2/users/{id}` last said the user
//! is paid out automatically, about which user, and when. Every worker reads and writes the same
//! row, so one read serves all of them for `worker.user_cache_secs`; trusting it is decided in
//! `jobs::plan::route`, not here. (The item writes of that route, `complete_without_flow` and
//! `wait_for_transfer`, are in `writes.rs` with every other item write.)
//!
//! Guarantees: an answer is stored with the user it is about, so a payee whose Dots user changed
//! never reuses another user's answer; the write is a plain `UPDATE` of an existing payee row
//! (payees are remembered by `begin_transfer`), so it cannot create a payee.

use uuid::Uuid;

use super::{Store, StoreError, on_pool};

/// The last auto-payout answer stored for a payee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayeeRoute {
    /// The Dots user the answer is about.
    pub user: Uuid,
    /// Auto payout enabled with a default payout method.
    pub auto_payout: bool,
    /// When it was read from Dots (unix ms).
    pub read_at: i64,
}

type RouteRow = (String, Option<i64>, Option<String>, Option<i64>);
/// A [`RouteRow`] and the payee's Dots user.
type KnownRow = (String, Option<i64>, Option<String>, Option<i64>, String);

fn route_of(row: RouteRow) -> Result<(String, Option<PayeeRoute>), StoreError> {
    let (payee, auto, user, read_at) = row;
    let route = match (auto, user, read_at) {
        (Some(auto), Some(user), Some(read_at)) => Some(PayeeRoute {
            user: Uuid::parse_str(&user).map_err(|e| corrupt("payees.auto_payout_user", e))?,
            auto_payout: auto != 0,
            read_at,
        }),
        _ => None,
    };
    Ok((payee, route))
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {e}"))
}

impl Store {
    /// The stored auto-payout answer for `payee_id`, if one was ever read.
    pub async fn payee_route(&self, payee_id: &str) -> Result<Option<PayeeRoute>, StoreError> {
        let row: Option<RouteRow> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT payee_id, auto_payout, auto_payout_user, auto_payout_read_at
             FROM payees WHERE payee_id = $1")
            .bind(payee_id).fetch_optional(p).await?);
        Ok(row.map(route_of).transpose()?.and_then(|(_, r)| r))
    }

    /// Stores what Dots said about `user`, the Dots user of `payee_id`, at `read_at`.
    pub async fn remember_payee_route(
        &self,
        payee_id: &str,
        route: PayeeRoute,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE payees SET auto_payout = $1, auto_payout_user = $2, auto_payout_read_at = $3
             WHERE payee_id = $4")
            .bind(i64::from(route.auto_payout)).bind(route.user.to_string())
            .bind(route.read_at).bind(payee_id).execute(p).await?; });
        Ok(())
    }

    /// The known payees among `payee_ids`: their Dots user and stored auto-payout answer.
    pub async fn known_payee_routes(
        &self,
        payee_ids: &[String],
    ) -> Result<Vec<(String, Uuid, Option<PayeeRoute>)>, StoreError> {
        let mut out = Vec::new();
        for chunk in payee_ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT payee_id, auto_payout, auto_payout_user, auto_payout_read_at, dots_user_id
                 FROM payees WHERE payee_id IN ({})",
                marks.join(", ")
            );
            let rows: Vec<KnownRow> = on_pool!(&self.pool, p => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for id in chunk {
                    q = q.bind(id);
                }
                q.fetch_all(p).await?
            });
            for (payee, auto, user, read_at, dots_user) in rows {
                let dots_user =
                    Uuid::parse_str(&dots_user).map_err(|e| corrupt("payees.dots_user_id", e))?;
                let (payee, route) = route_of((payee, auto, user, read_at))?;
                out.push((payee, dots_user, route));
            }
        }
        Ok(out)
    }
}
