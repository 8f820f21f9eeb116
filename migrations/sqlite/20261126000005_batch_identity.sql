-- A file's identity as a batch, decided by the database (see ARCHITECTURE.md, "store"; the
-- PostgreSQL flavour explains it). NULL for batches stored with --allow-duplicate; unique
-- otherwise. The oldest existing batch of each content holds it, so the index builds even on
-- a database that already holds duplicates.
ALTER TABLE batches ADD COLUMN identity_hash TEXT;

UPDATE batches SET identity_hash = content_hash
 WHERE content_hash <> ''
   AND id = (SELECT o.id FROM batches o WHERE o.content_hash = batches.content_hash
              ORDER BY o.created_at, o.id LIMIT 1);

CREATE UNIQUE INDEX batches_identity ON batches (identity_hash);
