-- Outbound events (issue 13): a transactional outbox. An event row is written in the same
-- transaction as the state change it reports (see src/events and src/store/outbox.rs); the
-- delivery rows say, per configured endpoint, whether it has been delivered.
-- Per item and per batch, a counter that only grows: each event carries the next value, so a
-- receiver can drop a stale or reordered event.
ALTER TABLE items ADD COLUMN event_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN event_version BIGINT NOT NULL DEFAULT 0;
-- type lists exactly events::EventType::ALL.
CREATE TABLE outbox_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL CHECK (type IN ('batch.created', 'batch.approved', 'batch.held',
        'batch.resumed', 'batch.settled', 'batch.completed', 'batch.canceled',
        'item.onboarding_link', 'item.payout_link', 'item.completed', 'item.failed',
        'item.canceled', 'item.reminder')),
    batch_id TEXT NOT NULL,
    -- NULL for a batch event.
    item_id TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The envelope exactly as delivered: {"id", "type", "created", "data"}.
    body TEXT NOT NULL,
    -- Set once a delivery row exists for every endpoint registered when it was fanned out.
    fanned_out_at BIGINT
);
CREATE INDEX outbox_events_by_batch ON outbox_events (batch_id, created_at);
CREATE INDEX outbox_events_to_fan_out ON outbox_events (created_at) WHERE fanned_out_at IS NULL;
-- Endpoints known to the store (names from config; URLs and secrets stay in config and the
-- environment). types: comma-separated event types, NULL for all.
CREATE TABLE outbox_endpoints (
    name TEXT PRIMARY KEY,
    types TEXT,
    registered_at BIGINT NOT NULL
);
-- One event's delivery to one endpoint. status lists exactly events::DeliveryStatus::ALL.
CREATE TABLE outbox_deliveries (
    event_id TEXT NOT NULL REFERENCES outbox_events (id),
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_status BIGINT,
    last_error TEXT,
    delivered_at BIGINT,
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX outbox_deliveries_due ON outbox_deliveries (status, next_attempt_at);
