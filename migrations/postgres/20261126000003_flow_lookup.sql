-- Webhooks name a flow: find its item without a scan.
CREATE INDEX items_onboarding_flow ON items (onboarding_flow_id) WHERE onboarding_flow_id IS NOT NULL;
CREATE INDEX items_payout_flow ON items (payout_flow_id) WHERE payout_flow_id IS NOT NULL;
CREATE INDEX items_transfer ON items (transfer_id) WHERE transfer_id IS NOT NULL;
