-- Exact call costs and where their price came from (issue 16 §3): `cost_nusd` is the cost in
-- nano-USD (10^-9 USD) as an integer, so sums over the same calls agree whatever they are
-- grouped by; `priced` is 'operator' (DATA_DIR/prices.toml), 'default' (berth's shipped
-- table) or 'fallback' (neither lists the model), NULL for a call without tokens or one
-- recorded before this migration. `cost_usd` stays, as `cost_nusd` / 1e9.

ALTER TABLE llm_calls ADD COLUMN cost_nusd INTEGER;
ALTER TABLE llm_calls ADD COLUMN priced TEXT;
UPDATE llm_calls SET cost_nusd = CAST(ROUND(cost_usd * 1e9) AS INTEGER)
    WHERE cost_usd IS NOT NULL AND cost_usd >= 0 AND cost_usd < 9e9;

-- A task's usage is the sum of its calls.
CREATE INDEX llm_calls_task ON llm_calls (task_id);
