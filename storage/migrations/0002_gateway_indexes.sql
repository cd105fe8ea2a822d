-- Migration 0002: indexes the gateway needs; seed columns are never altered.
-- Index names start with gw_ so schema checks can tell them from the seed's own.

-- Carrier status callbacks and media streams find their call by the carrier's call id.
CREATE INDEX gw_call_provider_sid ON calls(provider_call_sid);

-- One usage row per (call, resource): billing a call twice (retry, recovery) is a no-op.
CREATE UNIQUE INDEX gw_usage_call_resource ON usage_records(call_id, resource_type);

