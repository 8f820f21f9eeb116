//! `submit --dry-run`'s route count: how many items of a file would take each route — a payout
//! flow, auto payout (no flow: `worker.payout_flow = "unless_auto_payout"` and the payee's Dots
//! user pays out automatically), or onboarding first (a payee payrun does not know). Known
//! payees are looked up only with `unless_auto_payout`, through the same stored answer the
//! worker trusts (`jobs::plan::trusted_answer`), and an answer read here is stored for the
//! worker. Nothing else is stored.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use uuid::Uuid;

use crate::config::{PayoutFlowSetting, WorkerSettings};
use crate::dots::client::DotsClient;
use crate::intake::{IntakeError, RowReader};
use crate::jobs::plan::trusted_answer;
use crate::store::{PayeeRoute, Store, StoreError};

/// Items of a file by route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounts {
    pub payout_flow: u64,
    pub auto_payout: u64,
    pub onboarding_first: u64,
    /// Known payees whose Dots user could not be read now (counted in none of the above).
    pub unread: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts the routes of the valid rows of `path` at `now` (unix ms). `dots` is needed only with
/// `unless_auto_payout` (without it, known payees with no trusted answer count as unread).
pub async fn route_counts(
    store: &Store,
    dots: Option<&DotsClient>,
    path: &Path,
    settings: &WorkerSettings,
    now: i64,
) -> Result<RouteCounts, RouteError> {
    let mut reader = RowReader::new(BufReader::new(File::open(path).map_err(IntakeError::Io)?))?;
    let mut counts = RouteCounts::default();
    let mut read: HashMap<Uuid, Option<bool>> = HashMap::new();
    let mut chunk = Vec::new();
    loop {
        let row = reader.next_row();
        let done = row.is_none();
        if let Some(Ok(r)) = row {
            chunk.push((r.payee_id, r.dots_user_id));
        }
        if chunk.len() >= 500 || (done && !chunk.is_empty()) {
            let ids: Vec<String> = chunk.iter().map(|(p, _)| p.clone()).collect();
            let known: HashMap<String, (Uuid, Option<PayeeRoute>)> = store
                .known_payee_routes(&ids)
                .await?
                .into_iter()
                .map(|(p, u, r)| (p, (u, r)))
                .collect();
            for (payee, row_user) in chunk.drain(..) {
                let stored = known.get(&payee);
                let Some(user) = row_user.or(stored.map(|(u, _)| *u)) else {
                    counts.onboarding_first += 1;
                    continue;
                };
                if settings.payout_flow == PayoutFlowSetting::Always {
                    counts.payout_flow += 1;
                    continue;
                }
                let cached = stored.and_then(|(_, r)| r.as_ref());
                let answer = match trusted_answer(cached, user, now, settings) {
                    Some(a) => Some(a),
                    None => match read.get(&user) {
                        Some(a) => *a,
                        None => {
                            let a = look_up(store, dots, &payee, user, now).await?;
                            read.insert(user, a);
                            a
                        }
                    },
                };
                match answer {
                    Some(true) => counts.auto_payout += 1,
                    Some(false) => counts.payout_flow += 1,
                    None => counts.unread += 1,
                }
            }
        }
        if done {
            return Ok(counts);
        }
    }
}

/// Reads the user and stores the answer on the payee (a no-op for a payee not stored yet).
async fn look_up(
    store: &Store,
    dots: Option<&DotsClient>,
    payee: &str,
    user: Uuid,
    now: i64,
) -> Result<Option<bool>, StoreError> {
    let Some(dots) = dots else { return Ok(None) };
    match dots.get_user(user).await {
        Ok(u) => {
            let auto_payout = u.pays_out_automatically();
            let answer = PayeeRoute {
                user,
                auto_payout,
                read_at: now,
            };
            store.remember_payee_route(payee, answer).await?;
            Ok(Some(auto_payout))
        }
        Err(e) => {
            tracing::info!(%user, error = %e, "dry run: could not read the payee's Dots user");
            Ok(None)
        }
    }
}
