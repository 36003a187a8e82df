-- steering_leaderboard: per method, the TEST-split mean score at each concept's best factor (chosen on the
-- selection split), averaged over concepts with equal weight (AxBench's reported steering score, 0-2), with
-- C, I, F and perplexity at the same factor. judge_note labels who judged: the embedded offline judge is not
-- AxBench's gpt-4o-mini, and its numbers are not comparable to the paper's.
CREATE OR REPLACE VIEW steering_leaderboard AS
WITH per_concept AS (
    SELECT b.method, b.model, b.layer, b.concept_set, b.steer_config_hash, b.judge, b.judge_config_hash,
           b.concept_id, b.best_factor, t.mean_score, t.mean_concept, t.mean_instruction, t.mean_fluency,
           t.mean_expected_score, t.mean_perplexity, t.n_outputs, t.n_parse_failures, t.n_constrained
    FROM steering_best_factor AS b
    JOIN steering_factor_means AS t
      ON t.method = b.method AND t.model = b.model AND t.layer = b.layer AND t.concept_set = b.concept_set
     AND t.steer_config_hash = b.steer_config_hash AND t.judge = b.judge
     AND t.judge_config_hash = b.judge_config_hash AND t.concept_id = b.concept_id
     AND t.split = 'test' AND t.factor = b.best_factor
)
SELECT method, model, layer, concept_set, judge,
       CASE WHEN judge LIKE 'embedded:%' THEN 'embedded offline judge (not AxBench''s gpt-4o-mini)'
            WHEN judge = 'openai:gpt-4o-mini' THEN 'AxBench judge (gpt-4o-mini)'
            ELSE 'other judge' END AS judge_note,
       avg(mean_score) AS mean_score,
       avg(mean_concept) AS mean_concept, avg(mean_instruction) AS mean_instruction,
       avg(mean_fluency) AS mean_fluency, avg(mean_expected_score) AS mean_expected_score,
       avg(mean_perplexity) AS mean_perplexity, avg(best_factor) AS mean_best_factor,
       count(mean_score) AS n_concepts, sum(n_outputs) AS n_test_outputs,
       sum(n_parse_failures) AS n_parse_failures, sum(n_constrained) AS n_constrained_ratings,
       steer_config_hash, judge_config_hash
FROM per_concept
GROUP BY method, model, layer, concept_set, judge, steer_config_hash, judge_config_hash
ORDER BY concept_set, model, layer, judge, mean_score DESC;
