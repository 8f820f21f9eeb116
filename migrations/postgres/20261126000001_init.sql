-- payrun store, PostgreSQL flavour. Times are unix milliseconds (INTEGER); ids are UUID text.
-- The PostgreSQL flavour in ../sqlite must stay column-for-column identical.

CREATE TABLE batches (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    item_count    BIGINT NOT NULL,
    total_cents   BIGINT NOT NULL CHECK (total_cents > 0),
    created_at    BIGINT NOT NULL
);
CREATE INDEX batches_content_hash ON batches (content_hash);

-- payee_id (the marketplace's seller id) -> Dots user, reused by later batches.
CREATE TABLE payees (
    payee_id      TEXT PRIMARY KEY,
    dots_user_id  TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE items (
    id                   TEXT PRIMARY KEY,
    batch_id             TEXT NOT NULL REFERENCES batches (id),
    line                 BIGINT NOT NULL,
    payee_id             TEXT NOT NULL,
    amount_cents         BIGINT NOT NULL CHECK (amount_cents > 0),
    memo                 TEXT,
    first_name           TEXT,
    last_name            TEXT,
    email                TEXT,
    country_code         TEXT,
    phone_number         TEXT,
    dots_user_id         TEXT,
    state                TEXT NOT NULL CHECK (state IN ('pending', 'onboarding', 'transferring',
                             'transferred', 'awaiting_payout', 'completed', 'failed', 'canceled')),
    onboarding_flow_id   TEXT,
    onboarding_link      TEXT,
    -- transfer safety protocol (see ARCHITECTURE.md)
    transfer_key         TEXT,
    transfer_key_gen     BIGINT NOT NULL DEFAULT 0,
    transfer_key_at      BIGINT,
    transfer_call_open   BIGINT NOT NULL DEFAULT 0,
    transfer_outcome     TEXT,
    transfer_attempts    BIGINT NOT NULL DEFAULT 0,
    transfer_id          TEXT,
    payout_flow_id       TEXT,
    payout_link          TEXT,
    payout_call_open     BIGINT NOT NULL DEFAULT 0,
    -- scheduling
    attempts             BIGINT NOT NULL DEFAULT 0,
    next_attempt_at      BIGINT NOT NULL DEFAULT 0,
    next_poll_at         BIGINT,
    polls                BIGINT NOT NULL DEFAULT 0,
    lease_owner          TEXT,
    lease_until          BIGINT NOT NULL DEFAULT 0,
    last_error           TEXT,
    api_calls            BIGINT NOT NULL DEFAULT 0,
    updated_at           BIGINT NOT NULL,
    UNIQUE (batch_id, payee_id)
);
CREATE INDEX items_batch_state ON items (batch_id, state);
CREATE INDEX items_poll_due ON items (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX items_workable ON items (state, next_attempt_at)
    WHERE state IN ('pending', 'transferring', 'transferred');

-- Append-only history of every item: state changes, API call outcomes, errors.
CREATE TABLE item_events (
    id         BIGSERIAL PRIMARY KEY,
    item_id    TEXT NOT NULL REFERENCES items (id),
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX item_events_item ON item_events (item_id, id);
CREATE FUNCTION item_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'item_events is append-only'; END $$;
CREATE TRIGGER item_events_no_change BEFORE UPDATE OR DELETE ON item_events
FOR EACH ROW EXECUTE FUNCTION item_events_append_only();
