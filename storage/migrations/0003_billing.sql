-- Migration 0003: what usage billing (storage/billing*.py) needs; seed columns are never altered.
-- (0002 already made usage_records unique per (call_id, resource_type).)

-- At most one open period per workspace: concurrent first calls cannot open two.
CREATE UNIQUE INDEX gw_billing_one_current ON billing_periods(workspace_id) WHERE status = 'current';

-- A workspace's periods never overlap at their start: rolling over twice is a no-op.
CREATE UNIQUE INDEX gw_billing_workspace_start ON billing_periods(workspace_id, period_start);

-- Running state of a period that has no seed column: minutes already billed (how much of the
-- tier's included minutes is used up, exact to 4 decimals) and when the usage alert fired
-- (it fires once per period). Written in the same transaction as the period's subtotal.
CREATE TABLE gw_billing_period_state (
    billing_period_id TEXT PRIMARY KEY,
    minutes_used REAL NOT NULL DEFAULT 0,
    alert_sent_at INTEGER,
    FOREIGN KEY (billing_period_id) REFERENCES billing_periods(id) ON DELETE CASCADE
);
