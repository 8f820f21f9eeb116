-- items.transfer_outcome holds exactly the names of `TransferOutcome::ALL` (or NULL), as
-- `state` holds those of `ItemState::ALL`. SQLite cannot add a CHECK to an existing column,
-- so two triggers refuse any other value (the same rule as the PostgreSQL CHECK).
CREATE TRIGGER items_transfer_outcome_insert BEFORE INSERT ON items
WHEN NEW.transfer_outcome IS NOT NULL AND NEW.transfer_outcome NOT IN
    ('ok', 'retryable', 'ambiguous', 'duplicate_key', 'permanent', 'reconciled_none', 'rerun')
BEGIN
    SELECT RAISE(ABORT, 'items.transfer_outcome: not a known transfer outcome');
END;

CREATE TRIGGER items_transfer_outcome_update BEFORE UPDATE OF transfer_outcome ON items
WHEN NEW.transfer_outcome IS NOT NULL AND NEW.transfer_outcome NOT IN
    ('ok', 'retryable', 'ambiguous', 'duplicate_key', 'permanent', 'reconciled_none', 'rerun')
BEGIN
    SELECT RAISE(ABORT, 'items.transfer_outcome: not a known transfer outcome');
END;
