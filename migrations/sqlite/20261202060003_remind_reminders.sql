-- Reminders for unclaimed payouts (issue 13): a payout flow still open when its next reminder
-- is due gets a fresh link and an item.reminder event (see jobs::remind).
-- Reminders sent for this item so far (its reminder_pending flow recorded).
ALTER TABLE items ADD COLUMN reminders INTEGER NOT NULL DEFAULT 0;
-- When the current payout flow's next reminder (or, after the last, the unclaimed mark) is
-- due, engine clock, unix ms; NULL: none (reminders off, or not awaiting payout).
ALTER TABLE items ADD COLUMN reminder_due_at INTEGER;
-- The number of the reminder whose fresh flow is being made (the item stepped back to
-- transferred for it); NULL otherwise. The write that records the flow emits item.reminder.
ALTER TABLE items ADD COLUMN reminder_pending INTEGER;
-- When the item was marked unclaimed (still open after its last reminder); its money stays in
-- the payee's Dots wallet, nothing is reversed.
ALTER TABLE items ADD COLUMN unclaimed_at INTEGER;
