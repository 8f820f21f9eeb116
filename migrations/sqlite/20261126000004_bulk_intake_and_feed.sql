-- Bulk intake and the fed queue window (see ARCHITECTURE.md, "Intake" and "Queue window";
-- the PostgreSQL flavour explains each change). SQLite cannot drop a table constraint without
-- rebuilding the table, so here items keeps its foreign key and its UNIQUE (batch_id,
-- payee_id), whose automatic index also serves per-batch reads.
DROP INDEX items_batch_state;
DROP INDEX items_workable;

ALTER TABLE items ADD COLUMN queued_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN fed_line INTEGER NOT NULL DEFAULT 0;

UPDATE batches SET fed_line = 9223372036854775807;
UPDATE items SET next_attempt_at = 1
 WHERE state IN ('pending', 'transferring', 'transferred') AND next_attempt_at = 0;
CREATE INDEX items_due ON items (next_attempt_at)
    WHERE state IN ('pending', 'transferring', 'transferred') AND next_attempt_at > 0;
