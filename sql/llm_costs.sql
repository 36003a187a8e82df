-- Cost ledger of LLM calls actually made (cache hits are free and not in llm_calls): per stage, backend and model.
-- cost_usd is NULL when some call's model has no price in axwarehouse/llm/prices.py (see unpriced_calls).
CREATE OR REPLACE VIEW llm_costs AS
SELECT
    stage,
    backend,
    model,
    count(*) AS calls,
    count(*) FILTER (WHERE NOT ok) AS bad_answers,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(prompt_tokens + completion_tokens) AS tokens,
    CASE WHEN count(*) FILTER (WHERE cost_usd IS NULL) = 0 THEN round(sum(cost_usd), 6) END AS cost_usd,
    count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
    round(avg(latency_s), 3) AS mean_latency_s,
    min(created_at) AS first_call,
    max(created_at) AS last_call
FROM llm_calls
GROUP BY stage, backend, model
ORDER BY stage, backend, model;
