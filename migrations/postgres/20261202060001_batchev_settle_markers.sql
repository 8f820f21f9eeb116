-- Batch events (issue 13): which batch.settled / batch.completed event reports the batch's
-- current settled / completed state (its version; NULL: not reported, or no longer so because
-- an item moved back to work). Written in the transaction of the item write that settles or
-- unsettles the batch, so each settling is reported once.
ALTER TABLE batches ADD COLUMN settled_version BIGINT;
ALTER TABLE batches ADD COLUMN completed_version BIGINT;
-- The batch's items that are not terminal: the settle check probes it (states listed by
-- outbox_batch::NOT_TERMINAL, i.e. every ItemState that is not completed, failed, canceled).
CREATE INDEX items_not_terminal ON items (batch_id, state)
    WHERE state IN ('pending', 'onboarding', 'transferring', 'transferred', 'awaiting_payout');
