-- The batches whose items must not start a Dots call now (store/control.rs: paused, or held
-- for insufficient funds). The item job reads them every worker.feed_ms per process; this
-- partial index keeps that read to the few such batches instead of the whole table.
CREATE INDEX batches_blocked ON batches (id)
    WHERE paused_at IS NOT NULL OR hold_reason = 'insufficient_funds';
