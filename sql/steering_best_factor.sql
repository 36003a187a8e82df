-- steering_best_factor: per method x concept (and judge config, judge-failure rule), the factor with the highest
-- mean score on the SELECTION split only (ties -> the smallest factor, as AxBench's argmax over ascending factors).
-- Under judge_failures = 'drop', factors whose selection outputs all failed to parse have no mean and cannot be
-- chosen.
CREATE OR REPLACE VIEW steering_best_factor AS
SELECT method, model, layer, concept_set, steer_config_hash, judge, judge_config_hash, rubric, judge_failures,
       concept_id, factor AS best_factor, mean_score AS selection_score, n_outputs AS selection_outputs
FROM (
    SELECT *, row_number() OVER (
               PARTITION BY method, model, layer, concept_set, steer_config_hash, judge, judge_config_hash,
                            judge_failures, concept_id
               ORDER BY mean_score DESC, factor ASC) AS rn
    FROM steering_factor_means
    WHERE split = 'selection' AND mean_score IS NOT NULL
)
WHERE rn = 1;
