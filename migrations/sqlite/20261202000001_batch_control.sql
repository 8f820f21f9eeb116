-- Batch-level control (issue 12): an operator's pause, and a hold on a condition shared by the
-- batch's items (see src/batch/hold.rs). Neither is a batch status: the batch stays approved and
-- its items workable; the feeder and the item jobs leave paused and funds-held items alone.
-- paused_at: set by `payrun pause`, cleared by `payrun resume` (unix ms).
ALTER TABLE batches ADD COLUMN paused_at BIGINT;
-- hold_reason lists exactly HoldReason::ALL; NULL: not held.
ALTER TABLE batches ADD COLUMN hold_reason TEXT
    CHECK (hold_reason IS NULL OR hold_reason IN
        ('insufficient_funds', 'credentials', 'dots_unavailable', 'rate_limited'));
ALTER TABLE batches ADD COLUMN hold_detail TEXT;
ALTER TABLE batches ADD COLUMN hold_since BIGINT;
-- With insufficient_funds: how much more the App wallet needs, in cents.
ALTER TABLE batches ADD COLUMN funds_needed_cents BIGINT;
-- Only items at or after this line are held (funding policy "pay what fits"); NULL: all.
ALTER TABLE batches ADD COLUMN hold_from_line BIGINT;
