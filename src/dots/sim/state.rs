//! The simulator's business state: users and their wallets, flows, transfers (`transfers.rs`),
//! transfer batches (`batches.rs`), idempotency keys and the App wallet, plus the lazy payee
//! simulation and held transfers (`auto_payout.rs`).
//!
//! Guarantees: callers hold one mutex around `State` for a whole operation, so each operation is
//! atomic (a transfer is checked, committed and its key recorded in one step; no double create
//! under concurrency). Money is conserved: App wallet plus all user wallets only changes through
//! transfers, each moving exactly `|amount|` one way. Payees are simulated lazily: whenever a flow
//! is read (or the webhook payee ticker calls `settle_due`), a due payee finishes it (and is
//! onboarded as a new user if the flow had none). With webhooks on, every flow a payee finishes
//! and every transfer created is announced once through the `Notifier` (never blocking).

use super::config::SimConfig;
use super::validate::ApiError;
use super::webhooks::{Notifier, SimEvent};
use super::wire::{AppFigures, FlowRequest, LedgerTransfer, LedgerUser, onboarded_metadata};
use crate::dots::types::{CreateUser, Flow, PhoneNumber, Transfer, User, Wallet};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

mod auto_payout;
mod batches;
mod transfers;

pub use batches::{ITEM_DUPLICATE_KEY, ITEM_INSUFFICIENT_FUNDS, ITEM_UNKNOWN_USER};

/// How long an idempotency key is remembered, on the sim clock.
pub const KEY_WINDOW: chrono::Duration = chrono::Duration::hours(24);

struct TransferRec {
    transfer: Transfer,
    key: Option<Uuid>,
    seq: u64,
}

struct FlowRec {
    flow: Flow,
    seq: u64,
}

struct KeyRec {
    first_seen: DateTime<Utc>,
    transfer_id: Uuid,
}

/// What `create_transfer` did.
pub enum TransferOutcome {
    Created(Transfer),
    /// A duplicate key in `Replay` mode: the first transfer again, nothing new committed.
    Replayed(Transfer),
}

pub struct State {
    users: Vec<User>,
    user_idx: HashMap<Uuid, usize>,
    phones: HashMap<(String, String), Uuid>,
    flows: Vec<FlowRec>,
    flow_idx: HashMap<Uuid, usize>,
    transfers: Vec<TransferRec>,
    transfer_idx: HashMap<Uuid, usize>,
    keys: HashMap<Uuid, KeyRec>,
    app_wallet: i64,
    seq: u64,
    events: Option<Notifier>,
    /// Users whose new transfers stay `pending` (`auto_payout.rs`).
    held_users: HashSet<Uuid>,
    /// Transfer batches (`batches.rs`).
    batches: batches::Batches,
}

impl State {
    pub fn new(app_wallet: i64, events: Option<Notifier>) -> State {
        State {
            users: Vec::new(),
            user_idx: HashMap::new(),
            phones: HashMap::new(),
            flows: Vec::new(),
            flow_idx: HashMap::new(),
            transfers: Vec::new(),
            transfer_idx: HashMap::new(),
            keys: HashMap::new(),
            app_wallet,
            seq: 0,
            events,
            held_users: HashSet::new(),
            batches: batches::Batches::default(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Find-or-create by `(country_code, phone_number)`; an existing user is returned unchanged.
    pub fn create_user(&mut self, req: CreateUser) -> User {
        let phone = (req.country_code.clone(), req.phone_number.clone());
        if let Some(id) = self.phones.get(&phone) {
            return self.users[self.user_idx[id]].clone();
        }
        let user = User {
            id: Uuid::new_v4(),
            first_name: req.first_name,
            last_name: req.last_name,
            email: req.email,
            phone_number: Some(PhoneNumber {
                country_code: req.country_code,
                phone_number: req.phone_number,
            }),
            status: Some("unverified".to_string()),
            wallet: Wallet::default(),
            metadata: req.metadata,
            default_payout_method: None,
            auto_payout_enabled: None,
        };
        self.phones.insert(phone, user.id);
        self.user_idx.insert(user.id, self.users.len());
        self.users.push(user.clone());
        user
    }

    pub fn user(&self, id: Uuid) -> Option<User> {
        self.user_idx.get(&id).map(|&i| self.users[i].clone())
    }

    /// All users, oldest first.
    pub fn users(&self) -> Vec<User> {
        self.users.clone()
    }

    pub fn create_flow(
        &mut self,
        req: FlowRequest,
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<Flow, ApiError> {
        if let Some(uid) = req.user_id
            && !self.user_idx.contains_key(&uid)
        {
            return Err(ApiError::invalid(format!("user_id: user not found: {uid}")));
        }
        let id = Uuid::new_v4();
        let flow = Flow {
            id,
            created: now,
            user_id: req.user_id,
            steps: req.steps,
            completed_steps: Vec::new(),
            link: format!("http://{host}/flow/{id}"),
            metadata: req.metadata,
        };
        let seq = self.next_seq();
        self.flow_idx.insert(id, self.flows.len());
        self.flows.push(FlowRec {
            flow: flow.clone(),
            seq,
        });
        Ok(flow)
    }

    /// The flow, after letting its payee act if they are due.
    pub fn flow(&mut self, id: Uuid, cfg: &SimConfig, now: DateTime<Utc>) -> Option<Flow> {
        let i = *self.flow_idx.get(&id)?;
        self.settle(i, cfg, now);
        Some(self.flows[i].flow.clone())
    }

    /// All flows, newest first (created, then creation order), each settled.
    pub fn flows(&mut self, cfg: &SimConfig, now: DateTime<Utc>) -> Vec<Flow> {
        self.settle_due(cfg, now);
        let mut recs: Vec<&FlowRec> = self.flows.iter().collect();
        recs.sort_by_key(|r| std::cmp::Reverse((r.flow.created, r.seq)));
        recs.into_iter().map(|r| r.flow.clone()).collect()
    }

    /// The payee finishes every step now, whatever the never-complete settings say.
    pub fn complete_flow(&mut self, id: Uuid) -> Option<Flow> {
        let i = *self.flow_idx.get(&id)?;
        self.finish(i);
        Some(self.flows[i].flow.clone())
    }

    /// Let every due payee finish their flow (and every due transfer batch complete).
    pub fn settle_due(&mut self, cfg: &SimConfig, now: DateTime<Utc>) {
        self.settle_batches(now);
        for i in 0..self.flows.len() {
            self.settle(i, cfg, now);
        }
    }

    fn settle(&mut self, i: usize, cfg: &SimConfig, now: DateTime<Utc>) {
        let flow = &self.flows[i].flow;
        if flow.is_complete() && flow.user_id.is_some() {
            return;
        }
        let due = flow.created
            + chrono::Duration::milliseconds((cfg.complete_after_secs * 1000.0) as i64);
        if now >= due && !never_completes(cfg, &payee_key(flow)) {
            self.finish(i);
        }
    }

    /// Complete every step (onboarding first if needed); announce it if anything changed.
    fn finish(&mut self, i: usize) {
        let mut changed = false;
        if self.flows[i].flow.user_id.is_none() {
            let user = self.fabricate_user(self.flows[i].flow.id);
            self.flows[i].flow.user_id = Some(user.id);
            changed = true;
        }
        let flow = &mut self.flows[i].flow;
        changed |= flow.completed_steps != flow.steps;
        flow.completed_steps = flow.steps.clone();
        if changed && let Some(events) = &self.events {
            events.send(SimEvent::FlowUpdated(flow.id));
        }
    }

    /// A new user for a payee who onboarded through a flow; phone numbers are unique.
    fn fabricate_user(&mut self, flow_id: Uuid) -> User {
        let n = self.users.len() as u64 + 1;
        let mut phone = 5_550_000_000 + n;
        while self
            .phones
            .contains_key(&("1".to_string(), phone.to_string()))
        {
            phone += 1;
        }
        let short = &flow_id.simple().to_string()[..8];
        self.create_user(CreateUser {
            first_name: "Sim".to_string(),
            last_name: format!("Payee{n}"),
            email: format!("payee-{short}@sim.example.com"),
            country_code: "1".to_string(),
            phone_number: phone.to_string(),
            metadata: Some(onboarded_metadata(flow_id)),
        })
    }

    /// Adds `cents` to the App wallet (a deposit, as `POST /_sim/fund`); the new balance.
    pub fn fund(&mut self, cents: i64) -> i64 {
        self.app_wallet = self.app_wallet.saturating_add(cents);
        self.app_wallet
    }

    /// The App's figures: wallet balance, money paid out to users (net of transfers back),
    /// and how many users it has, for `GET /v2/apps/{app_id}`.
    pub fn app_metrics(&self) -> AppFigures {
        let money_out = self
            .transfers
            .iter()
            .map(|r| -r.transfer.amount)
            .sum::<i64>()
            .max(0);
        AppFigures {
            wallet_cents: self.app_wallet,
            money_out_cents: money_out,
            users: self.users.len() as i64,
        }
    }

    /// Ledger rows: transfers in creation order, users in creation order, the App balance.
    pub fn ledger(&self) -> (Vec<LedgerTransfer>, Vec<LedgerUser>, i64) {
        let transfers = self
            .transfers
            .iter()
            .map(|r| LedgerTransfer {
                id: r.transfer.id,
                user_id: r.transfer.user_id,
                amount: r.transfer.amount,
                idempotency_key: r.key,
                metadata: r.transfer.metadata.clone(),
                status: r.transfer.status.clone(),
                created: r.transfer.created,
            })
            .collect();
        let users = self
            .users
            .iter()
            .map(|u| LedgerUser {
                id: u.id,
                wallet: u.wallet.clone(),
            })
            .collect();
        (transfers, users, self.app_wallet)
    }
}

/// The key deciding whether a payee never finishes: `metadata.payee_id`, else the flow's
/// user_id, else the flow id.
pub fn payee_key(flow: &Flow) -> String {
    if let Some(p) = flow
        .metadata
        .as_ref()
        .and_then(|m| m.get("payee_id"))
        .and_then(|p| p.as_str())
    {
        return p.to_string();
    }
    match flow.user_id {
        Some(u) => u.to_string(),
        None => flow.id.to_string(),
    }
}

/// Whether the payee with `key` never finishes: listed explicitly, or their stable hash
/// (sha256 of the seed's little-endian bytes then the key) falls in the `never_complete` share.
pub fn never_completes(cfg: &SimConfig, key: &str) -> bool {
    if cfg.never_complete_payees.iter().any(|p| p == key) {
        return true;
    }
    if cfg.never_complete <= 0.0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(cfg.seed.to_le_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (head as f64 / 2f64.powi(64)) < cfg.never_complete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_never_complete_share_is_stable_and_roughly_right() {
        let cfg = SimConfig {
            never_complete: 0.3,
            ..SimConfig::default()
        };
        let hits = (0..2000)
            .filter(|i| never_completes(&cfg, &format!("payee-{i}")))
            .count();
        assert!((450..750).contains(&hits), "{hits}");
        assert_eq!(never_completes(&cfg, "x"), never_completes(&cfg, "x"));
    }
}
