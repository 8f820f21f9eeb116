-- Transfer batches (dots.transfer_mode = "batch"; ARCHITECTURE.md, "jobs::chunk"): the ready
-- items of a batch go to Dots in chunks through POST /v2/transfer-batches.
--
-- A chunk's row is written in the transaction that commits its items' intent (phase 1), and
-- its outcome in the one that commits theirs (phase 3). Its id is derived from the batch and
-- batches.chunk_seq (counted in that transaction), never random; so is its call's key.
CREATE TABLE transfer_chunks (
    id               TEXT PRIMARY KEY,
    batch_id         TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    -- mirrors batch::ChunkState::ALL
    state            TEXT NOT NULL CHECK (state IN ('open', 'done', 'released')),
    -- the chunker that opened it (its items' lease owner)
    owner            TEXT NOT NULL,
    items            BIGINT NOT NULL,
    total_cents      BIGINT NOT NULL,
    -- POST /v2/transfer-batches calls made for it
    sends            BIGINT NOT NULL DEFAULT 0,
    -- the transfer batch Dots made, once known
    dots_batch_id    TEXT,
    -- what its outcome was, for an operator
    detail           TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (batch_id, seq)
);
-- Open chunks, oldest first: a chunker that died leaves its chunk open (its items are
-- recovered one by one when their leases lapse; the chunk as a whole with one call).
CREATE INDEX transfer_chunks_open ON transfer_chunks (updated_at) WHERE state = 'open';

-- How many chunks the batch has opened: the next chunk's number.
ALTER TABLE batches ADD COLUMN chunk_seq BIGINT NOT NULL DEFAULT 0;
-- The chunk an item's first transfer went in (NULL: sent alone, or not yet).
ALTER TABLE items ADD COLUMN chunk_id TEXT;
CREATE INDEX items_chunk ON items (chunk_id) WHERE chunk_id IS NOT NULL;
-- Items handed over for work (next_attempt_at > 0) that are pending with no transfer key yet:
-- in batch mode the chunker takes those whose payee has a Dots user from here, by batch in
-- file order. Small: an item leaves it when it moves on (onboarding, transferring).
CREATE INDEX items_chunkable ON items (batch_id, id)
    WHERE state = 'pending' AND transfer_key IS NULL AND next_attempt_at > 0;
