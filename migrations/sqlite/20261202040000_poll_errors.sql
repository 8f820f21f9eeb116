-- Polls of the item's current flow that failed in a row (5xx, 429, timeout, no connection),
-- reset by a poll that reads the flow. It sets how soon a failed poll is retried (seconds,
-- backing off to a minute) without moving the flow along its poll schedule (`polls`).
ALTER TABLE items ADD COLUMN poll_errors INTEGER NOT NULL DEFAULT 0;
