-- The payee-friendly route (worker.payout_flow = "unless_auto_payout"): what GET /v2/users/{id}
-- last said about a payee's Dots user, shared by every worker. auto_payout: 1 = auto payout
-- enabled with a default payout method (no payout flow needed), 0 = not; NULL = never read.
-- auto_payout_user: the Dots user that answer is about (a payee whose user changed is read
-- again); auto_payout_read_at: when it was read (unix ms), trusted worker.user_cache_secs.
ALTER TABLE payees ADD COLUMN auto_payout BIGINT CHECK (auto_payout IN (0, 1));
ALTER TABLE payees ADD COLUMN auto_payout_user TEXT;
ALTER TABLE payees ADD COLUMN auto_payout_read_at BIGINT;
