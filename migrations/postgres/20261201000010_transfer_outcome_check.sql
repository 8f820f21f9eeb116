-- items.transfer_outcome holds exactly the names of `TransferOutcome::ALL` (or NULL), as
-- `state` holds those of `ItemState::ALL`.
ALTER TABLE items ADD CONSTRAINT items_transfer_outcome_check CHECK (transfer_outcome IS NULL OR transfer_outcome IN
    ('ok', 'retryable', 'ambiguous', 'duplicate_key', 'permanent', 'reconciled_none', 'rerun'));
