//! Simulated payees who are paid out automatically: a user's default payout method and auto
//! payout (`PATCH /v2/users/{id}`, or `Sim::set_auto_payout`), and users whose new transfers stay
//! `pending` until released (`Sim::hold_transfers` / `Sim::release_transfers`), so a caller can
//! watch a transfer that is not completed yet.
//!
//! Guarantees: a held transfer has moved its money like any other (wallets are conserved); only
//! its `status` says `pending` until released, when it becomes `completed`.

use super::State;
use crate::dots::types::User;
use uuid::Uuid;

impl State {
    /// Sets what `PATCH /v2/users/{id}` may set; `None` leaves a field as it is. The user as now
    /// stored, or `None` when there is no such user.
    pub fn update_payout_settings(
        &mut self,
        id: Uuid,
        default_payout_method: Option<String>,
        auto_payout_enabled: Option<bool>,
    ) -> Option<User> {
        let &i = self.user_idx.get(&id)?;
        let user = &mut self.users[i];
        if let Some(m) = default_payout_method {
            user.default_payout_method = Some(m);
        }
        if let Some(on) = auto_payout_enabled {
            user.auto_payout_enabled = Some(on);
        }
        Some(user.clone())
    }

    /// Whether new transfers to `user` are created `pending` (`true`) or `completed`.
    pub fn hold_transfers(&mut self, user: Uuid, hold: bool) {
        if hold {
            self.held_users.insert(user);
        } else {
            self.held_users.remove(&user);
        }
    }

    /// The status a new transfer to `user` gets.
    pub(super) fn new_transfer_status(&self, user: Uuid) -> &'static str {
        if self.held_users.contains(&user) {
            "pending"
        } else {
            "completed"
        }
    }

    /// Completes every pending transfer of `user` and stops holding new ones; how many changed.
    pub fn release_transfers(&mut self, user: Uuid) -> usize {
        self.held_users.remove(&user);
        let mut n = 0;
        for rec in self.transfers.iter_mut() {
            if rec.transfer.user_id == user && rec.transfer.status == "pending" {
                rec.transfer.status = "completed".to_string();
                n += 1;
            }
        }
        n
    }
}
