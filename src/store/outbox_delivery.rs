//! The transactional outbox's delivery side: endpoints known to the store, the fan-out of
//! each event into one delivery per matching endpoint, claims with a lease, outcomes, replays
//! and the views operators read (`payrun events list`, the dashboard's backlog).
//!
//! Guarantees:
//! - an event is fanned out once: claiming it sets `fanned_out_at` in the transaction that
//!   writes its deliveries (PostgreSQL skips events another worker has locked; SQLite has one
//!   writer, `BEGIN IMMEDIATE`);
//! - a delivery is claimed by one worker at a time: a claim takes only rows whose lease has
//!   passed and sets `lease_owner`/`lease_until` (PostgreSQL `FOR UPDATE SKIP LOCKED`);
//! - an outcome is written only by the lease's holder, and only while the row is pending;
//! - a replay keeps the event id and the lease: a delivery in flight is not doubled.

use super::feed::BeginWrite;
use super::{Pool, Store, StoreError, on_pool};

/// A delivery claimed for sending: its event's envelope exactly as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub event_id: String,
    pub endpoint: String,
    /// Tries made before this one.
    pub attempts: i64,
    pub body: String,
    pub created_at: i64,
    pub version: i64,
}

/// What one try came to.
#[derive(Debug, Clone, PartialEq)]
pub enum TryOutcome {
    Delivered {
        status: i64,
    },
    /// Retry at `next_attempt_at`, or give up (`None`: the delivery is failed).
    Failed {
        status: Option<i64>,
        error: String,
        next_attempt_at: Option<i64>,
    },
}

/// One event with its deliveries (`payrun events list`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventDeliveries {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub batch_id: String,
    pub item_id: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeliveryView {
    pub endpoint: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// One endpoint's backlog (the dashboard).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EndpointBacklog {
    pub endpoint: String,
    pub pending: i64,
    pub failed: i64,
    /// Creation time of its oldest pending event, unix ms.
    pub oldest_pending_at: Option<i64>,
}

/// Which events a replay sends again.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplaySelector {
    Event(String),
    Batch(String),
    /// Events created at or after this time (unix ms).
    Since(i64),
}

/// `types` matches `$n` (an event type): NULL is every type.
const MATCHES: &str = "(e.types IS NULL OR (',' || e.types || ',') LIKE ('%,' || ev.type || ',%'))";

impl Store {
    /// Registers (or updates) an endpoint and its type filter (`None`: all types).
    pub async fn register_endpoint(
        &self,
        name: &str,
        types: Option<&[String]>,
        now: i64,
    ) -> Result<(), StoreError> {
        let types = types.map(|t| t.join(","));
        on_pool!(&self.pool, p => { sqlx::query(
            "INSERT INTO outbox_endpoints (name, types, registered_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET types = excluded.types")
            .bind(name).bind(&types).bind(now).execute(p).await?; });
        Ok(())
    }

    /// Fans out up to `limit` events not yet fanned out: one pending delivery, due at
    /// `first_at`, per registered endpoint whose filter matches. Returns how many events.
    pub async fn fan_out_events(
        &self,
        now: i64,
        first_at: i64,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let lock = match &self.pool {
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Pool::Sqlite(_) => "",
        };
        let claim = format!(
            "UPDATE outbox_events SET fanned_out_at = $1 WHERE id IN (
               SELECT id FROM outbox_events WHERE fanned_out_at IS NULL
               ORDER BY created_at LIMIT $2{lock}) RETURNING id"
        );
        let insert = format!(
            "INSERT INTO outbox_deliveries (event_id, endpoint, next_attempt_at)
             SELECT ev.id, e.name, $2 FROM outbox_events ev, outbox_endpoints e
             WHERE ev.id = $1 AND {MATCHES}
             ON CONFLICT (event_id, endpoint) DO NOTHING"
        );
        let n = on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(claim.clone()))
                .bind(now).bind(limit).fetch_all(&mut *tx).await?;
            for id in &ids {
                sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                    .bind(id).bind(first_at).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            ids.len()
        });
        Ok(n)
    }

    /// Claims up to `limit` due deliveries to `endpoint` for `owner` until `lease_until`,
    /// oldest event first.
    pub async fn claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let lock = match &self.pool {
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Pool::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE outbox_deliveries SET lease_owner = $1, lease_until = $2
             WHERE endpoint = $3 AND event_id IN (
               SELECT event_id FROM outbox_deliveries
               WHERE endpoint = $3 AND status = 'pending' AND next_attempt_at <= $4
                 AND lease_until < $4
               ORDER BY next_attempt_at LIMIT $5{lock})
             RETURNING event_id, attempts"
        );
        let rows: Vec<(String, i64, String, i64, i64)> = on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            let claimed: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(owner).bind(lease_until).bind(endpoint).bind(now).bind(limit)
                .fetch_all(&mut *tx).await?;
            let mut rows = Vec::with_capacity(claimed.len());
            for (id, attempts) in claimed {
                let (body, created, version): (String, i64, i64) = sqlx::query_as(
                    "SELECT body, created_at, version FROM outbox_events WHERE id = $1")
                    .bind(&id).fetch_one(&mut *tx).await?;
                rows.push((id, attempts, body, created, version));
            }
            tx.commit().await?;
            rows
        });
        let mut out: Vec<ClaimedDelivery> = rows
            .into_iter()
            .map(
                |(event_id, attempts, body, created_at, version)| ClaimedDelivery {
                    event_id,
                    endpoint: endpoint.to_owned(),
                    attempts,
                    body,
                    created_at,
                    version,
                },
            )
            .collect();
        out.sort_by_key(|d| (d.created_at, d.version));
        Ok(out)
    }

    /// Records a try's outcome, if `owner` still holds the lease and the row is pending.
    /// Returns whether it was written.
    pub async fn record_delivery(
        &self,
        d: &ClaimedDelivery,
        owner: &str,
        now: i64,
        outcome: &TryOutcome,
    ) -> Result<bool, StoreError> {
        const GUARD: &str = "WHERE event_id = $1 AND endpoint = $2 AND lease_owner = $3
                             AND status = 'pending'";
        let n = match outcome {
            TryOutcome::Delivered { status } => on_pool!(&self.pool, p => sqlx::query(
                sqlx::AssertSqlSafe(format!(
                "UPDATE outbox_deliveries SET status = 'delivered', delivered_at = $4,
                   attempts = attempts + 1, last_status = $5, last_error = NULL,
                   lease_owner = NULL, lease_until = 0 {GUARD}")))
                .bind(&d.event_id).bind(&d.endpoint).bind(owner).bind(now).bind(status)
                .execute(p).await?.rows_affected()),
            TryOutcome::Failed {
                status,
                error,
                next_attempt_at,
            } => {
                let state = if next_attempt_at.is_some() {
                    "pending"
                } else {
                    "failed"
                };
                on_pool!(&self.pool, p => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE outbox_deliveries SET status = $4, attempts = attempts + 1,
                   last_status = $5, last_error = $6, next_attempt_at = $7,
                   lease_owner = NULL, lease_until = 0 {GUARD}")))
                .bind(&d.event_id).bind(&d.endpoint).bind(owner).bind(state).bind(status)
                .bind(error).bind(next_attempt_at.unwrap_or(now))
                .execute(p).await?.rows_affected())
            }
        };
        Ok(n == 1)
    }

    /// Hands claimed deliveries back untried (a worker out of lease time, or stopping).
    pub async fn release_deliveries(&self, owner: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => { sqlx::query(
            "UPDATE outbox_deliveries SET lease_owner = NULL, lease_until = 0
             WHERE lease_owner = $1 AND status = 'pending'")
            .bind(owner).execute(p).await?; });
        Ok(())
    }

    /// Sends the selected events again, to every registered endpoint whose filter matches:
    /// each delivery is pending, due `now`, with its tries counted from zero, same event id.
    /// Returns how many events were selected.
    pub async fn replay_events(&self, which: &ReplaySelector, now: i64) -> Result<u64, StoreError> {
        let (cond, arg, since): (&str, Option<String>, Option<i64>) = match which {
            ReplaySelector::Event(id) => ("ev.id = $2", Some(id.clone()), None),
            ReplaySelector::Batch(b) => ("ev.batch_id = $2", Some(b.clone()), None),
            ReplaySelector::Since(t) => ("ev.created_at >= $3", None, Some(*t)),
        };
        let upsert = format!(
            "INSERT INTO outbox_deliveries (event_id, endpoint, next_attempt_at)
             SELECT ev.id, e.name, $1 FROM outbox_events ev, outbox_endpoints e
             WHERE ({cond}) AND ($2 IS NOT NULL OR $3 IS NOT NULL) AND {MATCHES}
             ON CONFLICT (event_id, endpoint) DO UPDATE SET status = 'pending', attempts = 0,
               next_attempt_at = excluded.next_attempt_at, last_error = NULL,
               last_status = NULL, delivered_at = NULL"
        );
        let count = format!(
            "SELECT COUNT(*) FROM outbox_events ev WHERE ({cond})
               AND ($2 IS NOT NULL OR $3 IS NOT NULL) AND $1 = $1"
        );
        let n: i64 = on_pool!(&self.pool, p => {
            let mut tx = p.begin_write().await?;
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.clone()))
                .bind(now).bind(&arg).bind(since).fetch_one(&mut *tx).await?;
            sqlx::query(sqlx::AssertSqlSafe(upsert.clone()))
                .bind(now).bind(&arg).bind(since).execute(&mut *tx).await?;
            // Fanned out now: the fan-out does not add them again.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE outbox_events SET fanned_out_at = COALESCE(fanned_out_at, $1)
                 WHERE id IN (SELECT ev.id FROM outbox_events ev WHERE ({cond})
                   AND ($2 IS NOT NULL OR $3 IS NOT NULL))")))
                .bind(now).bind(&arg).bind(since).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        });
        Ok(n as u64)
    }

    /// Events with their deliveries, oldest first: of one batch or all; with `failed_only`,
    /// only events with a failed delivery.
    pub async fn events_with_deliveries(
        &self,
        batch: Option<&str>,
        failed_only: bool,
        limit: i64,
    ) -> Result<Vec<EventDeliveries>, StoreError> {
        type Row = (
            String,
            String,
            String,
            Option<String>,
            i64,
            i64,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Row> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT ev.id, ev.type, ev.batch_id, ev.item_id, ev.version, ev.created_at,
                    d.endpoint, d.status, d.attempts, d.next_attempt_at, d.last_status,
                    d.last_error, d.delivered_at
             FROM (SELECT * FROM outbox_events ev0
                   WHERE ($1 IS NULL OR ev0.batch_id = $1)
                     AND ($2 = 0 OR EXISTS (SELECT 1 FROM outbox_deliveries f
                                 WHERE f.event_id = ev0.id AND f.status = 'failed'))
                   ORDER BY ev0.created_at, ev0.item_id, ev0.version LIMIT $3) ev
             LEFT JOIN outbox_deliveries d ON d.event_id = ev.id
             ORDER BY ev.created_at, ev.item_id, ev.version, d.endpoint")
            .bind(batch).bind(i64::from(failed_only)).bind(limit).fetch_all(p).await?);
        let mut out: Vec<EventDeliveries> = Vec::new();
        for r in rows {
            if out.last().is_none_or(|e| e.id != r.0) {
                out.push(EventDeliveries {
                    id: r.0.clone(),
                    kind: r.1.clone(),
                    batch_id: r.2.clone(),
                    item_id: r.3.clone(),
                    version: r.4,
                    created_at: r.5,
                    deliveries: Vec::new(),
                });
            }
            if let (Some(endpoint), Some(status)) = (r.6, r.7) {
                out.last_mut()
                    .expect("pushed")
                    .deliveries
                    .push(DeliveryView {
                        endpoint,
                        status,
                        attempts: r.8.unwrap_or(0),
                        next_attempt_at: r.9.unwrap_or(0),
                        last_status: r.10,
                        last_error: r.11,
                        delivered_at: r.12,
                    });
            }
        }
        Ok(out)
    }

    /// Whether an event id is in the outbox.
    pub async fn outbox_event_exists(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox_events WHERE id = $1").bind(id).fetch_one(p).await?);
        Ok(n > 0)
    }

    /// Per registered endpoint: pending and failed deliveries, and its oldest pending event.
    pub async fn endpoint_backlog(&self) -> Result<Vec<EndpointBacklog>, StoreError> {
        let rows: Vec<(String, i64, i64, Option<i64>)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT e.name,
               (SELECT COUNT(*) FROM outbox_deliveries d WHERE d.endpoint = e.name
                  AND d.status = 'pending'),
               (SELECT COUNT(*) FROM outbox_deliveries d WHERE d.endpoint = e.name
                  AND d.status = 'failed'),
               (SELECT MIN(ev.created_at) FROM outbox_deliveries d
                  JOIN outbox_events ev ON ev.id = d.event_id
                  WHERE d.endpoint = e.name AND d.status = 'pending')
             FROM outbox_endpoints e ORDER BY e.name").fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(
                |(endpoint, pending, failed, oldest_pending_at)| EndpointBacklog {
                    endpoint,
                    pending,
                    failed,
                    oldest_pending_at,
                },
            )
            .collect())
    }
}
