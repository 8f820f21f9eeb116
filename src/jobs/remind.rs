//! Reminders for unclaimed payouts: when a payout flow still open gets a fresh link and an
//! `item.reminder` event, and when, after the last one, its item counts as unclaimed.
//!
//! [`decide`] is the one decision (pure: no clock, no I/O); the poller carries it out when it
//! reads a payout flow that is still open (`jobs::poll`):
//! - `Send(n)`: the item steps back `awaiting_payout -> transferred` with `reminder_pending = n`
//!   (guarded by `reminders = n - 1`, so two pollers cannot send one reminder twice); the job
//!   then makes the fresh flow through the payout-flow step (the `retry-flow` path), and the
//!   write that records it counts the reminder and emits `item.reminder` in its transaction.
//!   The flow's metadata carries `payrun_reminder = "<item>/<n>"` (derived), so a crash after
//!   the call finds that flow again instead of making a second one.
//! - `Unclaimed`: the item is marked `unclaimed_at`; it stays `awaiting_payout` (its money is in
//!   the payee's Dots wallet; nothing is reversed) and may still complete.
//!
//! When is set by [`next_due`] in the write that records each payout flow: reminder `n` is due
//! `schedule_secs[n-1]` after the previous link was made (the first payout flow for reminder 1,
//! reminder `n-1`'s flow after); after the last reminder, the unclaimed mark is due the last
//! delay again.

use crate::config::ReminderSettings;

/// What is due for an open payout flow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reminder {
    NotDue,
    /// Send reminder number `n` (1, 2, …).
    Send(i64),
    /// Past the last reminder: mark the item unclaimed.
    Unclaimed,
}

/// `sent`: reminders sent so far; `due_at`: the item's `reminder_due_at`; `unclaimed`: it is
/// marked already; `now`: the engine clock (unix ms).
pub fn decide(
    s: &ReminderSettings,
    sent: i64,
    due_at: Option<i64>,
    unclaimed: bool,
    now: i64,
) -> Reminder {
    if !s.enabled || s.schedule_secs.is_empty() || unclaimed {
        return Reminder::NotDue;
    }
    match due_at {
        Some(at) if now >= at => {
            if sent < s.schedule_secs.len() as i64 {
                Reminder::Send(sent.max(0) + 1)
            } else {
                Reminder::Unclaimed
            }
        }
        _ => Reminder::NotDue,
    }
}

/// When the next reminder (or the unclaimed mark) is due for a payout flow made at `link_at`
/// with `sent` reminders sent (counting this flow's, if it is one); `None` with reminders off.
pub fn next_due(s: &ReminderSettings, sent: i64, link_at: i64) -> Option<i64> {
    if !s.enabled {
        return None;
    }
    let secs = s
        .schedule_secs
        .get(sent.max(0) as usize)
        .or(s.schedule_secs.last())?;
    Some(link_at + *secs as i64 * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(schedule: &[u64]) -> ReminderSettings {
        ReminderSettings {
            enabled: true,
            schedule_secs: schedule.to_vec(),
        }
    }

    #[test]
    fn an_open_flow_gets_its_reminders_in_order_then_is_unclaimed() {
        use Reminder::*;
        let s = on(&[10, 20, 30]);
        let off = ReminderSettings {
            enabled: false,
            ..on(&[10])
        };
        // (settings, sent, due_at, unclaimed, now) -> decision
        type Row<'a> = (&'a ReminderSettings, i64, Option<i64>, bool, i64, Reminder);
        let table: &[Row] = &[
            (&s, 0, Some(100), false, 99, NotDue),
            (&s, 0, Some(100), false, 100, Send(1)),
            (&s, 1, Some(100), false, 500, Send(2)),
            (&s, 2, Some(100), false, 500, Send(3)),
            (&s, 3, Some(100), false, 99, NotDue),
            (&s, 3, Some(100), false, 100, Unclaimed),
            (&s, 3, Some(100), true, 900, NotDue),
            (&s, 0, None, false, 900, NotDue),
            (&off, 0, Some(100), false, 900, NotDue),
            (&on(&[]), 0, Some(100), false, 900, NotDue),
        ];
        for (settings, sent, due, unclaimed, now, want) in table {
            assert_eq!(
                decide(settings, *sent, *due, *unclaimed, *now),
                *want,
                "sent {sent}, due {due:?}, unclaimed {unclaimed}, now {now}"
            );
        }
    }

    #[test]
    fn each_delay_counts_from_the_previous_link_and_the_last_repeats_before_unclaimed() {
        let s = on(&[10, 20, 30]);
        assert_eq!(next_due(&s, 0, 1_000), Some(11_000));
        assert_eq!(next_due(&s, 1, 1_000), Some(21_000));
        assert_eq!(next_due(&s, 2, 1_000), Some(31_000));
        assert_eq!(next_due(&s, 3, 1_000), Some(31_000));
        let off = ReminderSettings {
            enabled: false,
            ..s.clone()
        };
        assert_eq!(next_due(&off, 0, 1_000), None);
        assert_eq!(next_due(&on(&[]), 0, 1_000), None);
    }
}
