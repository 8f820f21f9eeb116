-- Funding pre-flight (issue 12): when a worker compared the App wallet with what the batch
-- still had to pay, before its first transfer (unix ms). NULL: not checked yet. Set once, by a
-- guarded UPDATE (WHERE funding_checked_at IS NULL) that also writes the hold when the wallet
-- is short, so of several workers exactly one decides.
ALTER TABLE batches ADD COLUMN funding_checked_at BIGINT;
