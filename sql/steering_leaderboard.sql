-- steering_leaderboard: per method, the TEST-split mean score at each concept's best factor (chosen on the
-- selection split), averaged over concepts with equal weight (AxBench's reported steering score, 0-2), with
-- C, I, F and perplexity at the same factor. One row per judge config and judge-failure rule, with the settings
-- that distinguish them in the open (rubric, judge temperature, max tokens, seed; see judge_settings).
-- judge_note says exactly what judged: the judge model, the rubric (ours or AxBench's own), and the rule applied to
-- failed ratings (judge_failures: 'zero' = scored 0 as AxBench does, the default; 'drop' = left out); only ratings
-- by gpt-4o-mini with AxBench's own rubric are comparable to the paper's numbers. n_failed_ratings counts the
-- ratings the rule acted on.
CREATE OR REPLACE VIEW steering_leaderboard AS
WITH per_concept AS (
    SELECT b.method, b.model, b.layer, b.concept_set, b.steer_config_hash, b.judge, b.judge_config_hash, b.rubric,
           b.judge_failures, b.concept_id, b.best_factor, t.mean_score, t.mean_concept, t.mean_instruction,
           t.mean_fluency, t.mean_expected_score, t.mean_perplexity, t.n_outputs, t.n_parse_failures,
           t.n_failed_ratings, t.n_constrained
    FROM steering_best_factor AS b
    JOIN steering_factor_means AS t
      ON t.method = b.method AND t.model = b.model AND t.layer = b.layer AND t.concept_set = b.concept_set
     AND t.steer_config_hash = b.steer_config_hash AND t.judge = b.judge
     AND t.judge_config_hash = b.judge_config_hash AND t.judge_failures = b.judge_failures
     AND t.concept_id = b.concept_id AND t.split = 'test' AND t.factor = b.best_factor
),
board AS (
    SELECT method, model, layer, concept_set, judge, judge_failures, rubric,
           avg(mean_score) AS mean_score,
           avg(mean_concept) AS mean_concept, avg(mean_instruction) AS mean_instruction,
           avg(mean_fluency) AS mean_fluency, avg(mean_expected_score) AS mean_expected_score,
           avg(mean_perplexity) AS mean_perplexity, avg(best_factor) AS mean_best_factor,
           count(mean_score) AS n_concepts, sum(n_outputs) AS n_test_outputs,
           sum(n_parse_failures) AS n_parse_failures, sum(n_failed_ratings) AS n_failed_ratings,
           sum(n_constrained) AS n_constrained_ratings,
           steer_config_hash, judge_config_hash
    FROM per_concept
    GROUP BY method, model, layer, concept_set, judge, judge_failures, rubric, steer_config_hash, judge_config_hash
)
SELECT b.method, b.model, b.layer, b.concept_set, b.judge,
       CASE WHEN b.judge LIKE 'proxy:%' THEN s.judge_label
            ELSE s.judge_label || '; failed ratings '
                 || CASE b.judge_failures WHEN 'zero' THEN 'scored 0 (AxBench''s rule)' ELSE 'left out (drop)' END
       END AS judge_note,
       b.judge_failures, b.rubric, s.judge_temperature, s.judge_max_tokens, s.judge_seed,
       b.mean_score, b.mean_concept, b.mean_instruction, b.mean_fluency, b.mean_expected_score, b.mean_perplexity,
       b.mean_best_factor, b.n_concepts, b.n_test_outputs, b.n_parse_failures, b.n_failed_ratings,
       b.n_constrained_ratings, b.steer_config_hash, b.judge_config_hash
FROM board AS b
LEFT JOIN judge_settings AS s ON s.judge = b.judge AND s.judge_config_hash = b.judge_config_hash
ORDER BY b.concept_set, b.model, b.layer, b.judge, b.judge_failures DESC, b.mean_score DESC;
