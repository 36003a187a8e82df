-- latent_leaderboard: unweighted mean of per-concept AUROC per method, model, layer and concept set, and beside
-- it AxBench's hard-negative score: hard_negative_macro = mean over concepts of latent_hard_negative.macro_accuracy
-- (NULL when no concept has one).
-- note (last column, '' for most methods) says what a row is built on, from its artifacts' `extra`:
--   SAE / SAE-A on an SAE trained here by `axw sae train` (a `saes` row with that path, or a path under saes/):
--     'ours: TopK SAE <name> (axw sae train, d_sae …, k …)': the offline stand-in for GemmaScope, not AxBench's;
--   SAE / SAE-A on a loaded SAELens/GemmaScope directory: 'loaded <architecture> SAE: <path>' (its source);
--   joint methods (reft-r1-joint): 'joint dictionary over <n> concepts (one fit)'.
-- settings says which trained config a row is (rows of one method differ by config_hash): the seed and the
--   `--set` values recorded in the config of the run that trained its artifacts, e.g. 'seed 7 lr=0.01'.
CREATE OR REPLACE VIEW latent_leaderboard AS
WITH board AS (
    SELECT method, model, layer, concept_set, config_hash,
           avg(auroc) AS mean_auroc,
           count(auroc) AS n_concepts
    FROM latent_auroc
    GROUP BY method, model, layer, concept_set, config_hash
),
trained AS (
    SELECT method, model, layer, concept_set, config_hash,
           string_agg(DISTINCT 'seed ' || coalesce(json_extract_string(config, '$.seed'), '?')
               || coalesce(' ' || nullif(array_to_string(list_transform(json_keys(o),
                      lambda k: k || '=' || json_extract_string(o, '$."' || k || '"')), ' '), ''), ''),
               '; ') AS settings
    FROM (SELECT a.*, r.config, json_extract(r.config, '$.overrides."' || a.method || '"') AS o
          FROM (SELECT DISTINCT method, model, layer, concept_set, config_hash, run_id FROM method_artifacts) AS a
          LEFT JOIN runs AS r ON r.run_id = a.run_id)
    GROUP BY method, model, layer, concept_set, config_hash
),
hard AS (
    SELECT method, model, layer, concept_set, config_hash, avg(macro_accuracy) AS hard_negative_macro
    FROM latent_hard_negative
    GROUP BY method, model, layer, concept_set, config_hash
),
art AS (
    SELECT method, model, layer, concept_set, config_hash,
           json_extract_string(extra, '$.sae') AS sae,
           json_extract_string(extra, '$.architecture') AS architecture,
           json_extract_string(extra, '$.joint_concepts') AS joint_concepts
    FROM method_artifacts
),
notes AS (
    SELECT a.method, a.model, a.layer, a.concept_set, a.config_hash,
           string_agg(DISTINCT CASE
               WHEN a.sae IS NOT NULL AND s.name IS NOT NULL
                   THEN 'ours: ' || replace(coalesce(s.architecture, 'topk'), 'topk', 'TopK') || ' SAE ' || s.name
                        || ' (axw sae train, d_sae ' || s.d_sae || ', k ' || coalesce(CAST(s.k AS VARCHAR), '-') || ')'
               WHEN a.sae IS NOT NULL AND (a.sae LIKE 'saes/%' OR a.sae LIKE 'saes\%')
                   THEN 'ours: ' || replace(coalesce(a.architecture, 'topk'), 'topk', 'TopK')
                        || ' SAE trained by axw sae train (' || a.sae || ')'
               WHEN a.sae IS NOT NULL
                   THEN 'loaded ' || coalesce(a.architecture, '') || ' SAE: ' || a.sae
               WHEN a.joint_concepts IS NOT NULL
                   THEN 'joint dictionary over ' || a.joint_concepts || ' concepts (one fit)'
           END, '; ') AS note
    FROM art AS a
    LEFT JOIN saes AS s ON s.path = a.sae AND s.model = a.model AND s.layer = a.layer
    GROUP BY a.method, a.model, a.layer, a.concept_set, a.config_hash
)
SELECT b.method, b.model, b.layer, b.concept_set, coalesce(t.settings, '') AS settings, b.config_hash,
       b.mean_auroc, b.n_concepts, h.hard_negative_macro, coalesce(n.note, '') AS note
FROM board AS b
LEFT JOIN hard AS h USING (method, model, layer, concept_set, config_hash)
LEFT JOIN notes AS n
  ON n.method = b.method AND n.model = b.model AND n.layer = b.layer AND n.concept_set = b.concept_set
 AND n.config_hash = b.config_hash
LEFT JOIN trained AS t
  ON t.method = b.method AND t.model = b.model AND t.layer = b.layer AND t.concept_set = b.concept_set
 AND t.config_hash = b.config_hash
ORDER BY b.concept_set, b.model, b.layer, b.mean_auroc DESC;
