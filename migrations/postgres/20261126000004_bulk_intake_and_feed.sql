-- Bulk intake and the fed queue window (see ARCHITECTURE.md, "Intake" and "Queue window").
--
-- Storing a batch streams its rows with COPY; every index and per-row check on items is paid
-- once per row, so items keeps only what the worker needs:
-- * no foreign key to batches: a per-row check that doubled the cost of COPY. Items are only
--   inserted by Store::create_batch, in the transaction that inserts their batch, and batches
--   are never deleted (tests/store.rs checks that no item lacks its batch);
-- * (batch_id, payee_id) stays unique and also serves per-batch reads; INCLUDE (state) lets the
--   per-state counts of a batch read the index alone, so items_batch_state goes;
-- * items_workable (every pending item) gives way to items_due, which holds only items that
--   were already handed to the queue once or are waiting for a retry (next_attempt_at > 0).
--   Items never handed over are found by their batch's feed cursor (batches.fed_line) along
--   the primary key, which sorts by line (batch::ItemId::for_line).
ALTER TABLE items DROP CONSTRAINT items_batch_id_fkey;
ALTER TABLE items DROP CONSTRAINT items_batch_id_payee_id_key;
CREATE UNIQUE INDEX items_batch_payee ON items (batch_id, payee_id) INCLUDE (state);
DROP INDEX items_batch_state;
DROP INDEX items_workable;

-- A job for the item is in the queue until then (or was lost, if the item is still untouched).
ALTER TABLE items ADD COLUMN queued_until BIGINT NOT NULL DEFAULT 0;
-- Every line up to this one has been handed to the queue at least once.
ALTER TABLE batches ADD COLUMN fed_line BIGINT NOT NULL DEFAULT 0;

-- Items stored before this migration have random ids: mark their batches fed and make their
-- workable items due, so items_due finds them.
UPDATE batches SET fed_line = 9223372036854775807;
UPDATE items SET next_attempt_at = 1
 WHERE state IN ('pending', 'transferring', 'transferred') AND next_attempt_at = 0;
CREATE INDEX items_due ON items (next_attempt_at)
    WHERE state IN ('pending', 'transferring', 'transferred') AND next_attempt_at > 0;
