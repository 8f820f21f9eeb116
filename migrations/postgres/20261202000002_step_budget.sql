-- Time-bounded retry (issue 12): a step that keeps failing gives up `worker.give_up_after_secs`
-- after its first failure, not after a count. Both are NULL after a success or a step change
-- (every state change resets them, and `attempts`, in the same statement).
-- step_since: when the current step first failed (unix ms, the engine's clock).
ALTER TABLE items ADD COLUMN step_since BIGINT;
-- step_first_error: that first failure, for the reason an item that gives up fails with.
ALTER TABLE items ADD COLUMN step_first_error TEXT;
