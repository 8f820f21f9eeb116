-- A file's identity as a batch, decided by the database (see ARCHITECTURE.md, "store").
--
-- identity_hash is the content hash of a batch stored without --allow-duplicate, NULL for one
-- stored with it. The unique index makes "is this file already a batch?" atomic: of two
-- transactions storing the same bytes, the second one's write of identity_hash waits for the
-- first to commit and is then refused, so it returns the first batch instead of making a
-- second (a plain SELECT before the write, under READ COMMITTED, let both through).
ALTER TABLE batches ADD COLUMN identity_hash TEXT;

-- Batches stored before this migration: the oldest of each content holds its identity, so the
-- index can be built even on a database that already holds duplicates.
UPDATE batches SET identity_hash = content_hash
 WHERE content_hash <> ''
   AND id = (SELECT o.id FROM batches o WHERE o.content_hash = batches.content_hash
              ORDER BY o.created_at, o.id LIMIT 1);

CREATE UNIQUE INDEX batches_identity ON batches (identity_hash);
