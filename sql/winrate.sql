-- winrate: method vs baseline on the same test instructions (same concept, input and instruction), each at its own
-- best factor: win when the method's score exceeds the baseline's by more than 1e-6, tie within 1e-6 (AxBench's
-- WinRateEvaluator). Every ordered pair of methods is listed; filter on baseline (e.g. 'prompt') and on
-- judge_failures ('zero' = failed ratings scored 0, AxBench's rule; 'drop' = left out). Pairs where either score is
-- NULL (under 'drop', a failed rating; under either rule, a criterion not rated yet) are left out and counted in
-- n_unscored. Judge settings (rubric, temperature, max tokens, seed) are in the open, as on steering_leaderboard.
CREATE OR REPLACE VIEW winrate AS
WITH best_rows AS (
    SELECT s.*
    FROM steering_scores AS s
    JOIN steering_best_factor AS b
      ON s.method = b.method AND s.model = b.model AND s.layer = b.layer AND s.concept_set = b.concept_set
     AND s.steer_config_hash = b.steer_config_hash AND s.judge = b.judge
     AND s.judge_config_hash = b.judge_config_hash AND s.judge_failures = b.judge_failures
     AND s.concept_id = b.concept_id AND s.factor = b.best_factor
    WHERE s.split = 'test'
),
pairs AS (
    SELECT m.method, x.method AS baseline, m.model, m.layer, m.concept_set, m.judge, m.judge_config_hash,
           m.rubric, m.judge_failures, m.steer_config_hash, x.steer_config_hash AS baseline_steer_config_hash,
           m.score AS method_score, x.score AS baseline_score
    FROM best_rows AS m
    JOIN best_rows AS x
      ON x.model = m.model AND x.layer = m.layer AND x.concept_set = m.concept_set AND x.judge = m.judge
     AND x.judge_config_hash = m.judge_config_hash AND x.judge_failures = m.judge_failures
     AND x.concept_id = m.concept_id AND x.input_id = m.input_id
     AND x.instruction_set = m.instruction_set AND x.instruction_id = m.instruction_id AND x.method <> m.method
),
rates AS (
    SELECT method, baseline, model, layer, concept_set, judge, judge_failures, rubric,
           count(*) FILTER (WHERE method_score IS NOT NULL AND baseline_score IS NOT NULL) AS n_pairs,
           avg(CASE WHEN method_score - baseline_score > 1e-6 THEN 1.0 ELSE 0.0 END)
               FILTER (WHERE method_score IS NOT NULL AND baseline_score IS NOT NULL) AS win_rate,
           avg(CASE WHEN baseline_score - method_score > 1e-6 THEN 1.0 ELSE 0.0 END)
               FILTER (WHERE method_score IS NOT NULL AND baseline_score IS NOT NULL) AS loss_rate,
           avg(CASE WHEN abs(method_score - baseline_score) <= 1e-6 THEN 1.0 ELSE 0.0 END)
               FILTER (WHERE method_score IS NOT NULL AND baseline_score IS NOT NULL) AS tie_rate,
           count(*) FILTER (WHERE method_score IS NULL OR baseline_score IS NULL) AS n_unscored,
           steer_config_hash, baseline_steer_config_hash, judge_config_hash
    FROM pairs
    GROUP BY method, baseline, model, layer, concept_set, judge, judge_failures, rubric, judge_config_hash,
             steer_config_hash, baseline_steer_config_hash
)
SELECT r.method, r.baseline, r.model, r.layer, r.concept_set, r.judge, r.judge_failures, r.rubric,
       s.judge_temperature, s.judge_max_tokens, s.judge_seed,
       r.n_pairs, r.win_rate, r.loss_rate, r.tie_rate, r.n_unscored,
       r.steer_config_hash, r.baseline_steer_config_hash, r.judge_config_hash
FROM rates AS r
LEFT JOIN judge_settings AS s ON s.judge = r.judge AND s.judge_config_hash = r.judge_config_hash
ORDER BY r.baseline, r.concept_set, r.model, r.layer, r.judge, r.judge_failures DESC, r.win_rate DESC;
