-- Operations: batch approval, scheduled batches (one per schedule tick), inbox files.
ALTER TABLE batches ADD COLUMN status TEXT NOT NULL DEFAULT 'approved'
    CHECK (status IN ('awaiting_approval', 'approved', 'canceled'));
ALTER TABLE batches ADD COLUMN approved_at INTEGER;
ALTER TABLE batches ADD COLUMN schedule TEXT;

-- One row per (schedule, tick): the unique key is what makes a tick create at most one batch,
-- however many workers see it. Written in the same transaction as the batch.
CREATE TABLE schedule_ticks (
    schedule   TEXT NOT NULL,
    tick_at    INTEGER NOT NULL,
    batch_id   TEXT,
    note       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (schedule, tick_at)
);
