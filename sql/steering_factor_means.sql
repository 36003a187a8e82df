-- steering_factor_means: per method x concept x factor x split (and judge config, judge-failure rule), the
-- arithmetic means over instructions of the per-generation score and of C, I, F, perplexity and strength (AxBench:
-- not the harmonic mean of the means). Under judge_failures = 'zero' failed ratings count as 0 (AxBench); under
-- 'drop' generations without a score are left out of the means. Both are counted (n_failed_ratings).
CREATE OR REPLACE VIEW steering_factor_means AS
SELECT method, model, layer, concept_set, steer_config_hash, judge, judge_config_hash, rubric, judge_failures,
       concept_id, split, factor,
       avg(score) AS mean_score,
       avg(concept_score) AS mean_concept, avg(instruction_score) AS mean_instruction,
       avg(fluency_score) AS mean_fluency, avg(expected_score) AS mean_expected_score,
       avg(perplexity) AS mean_perplexity, avg(strength) AS mean_strength,
       count(*) AS n_outputs, count(score) AS n_scored, sum(n_parse_failures) AS n_parse_failures,
       sum(n_failed_ratings) AS n_failed_ratings, sum(n_constrained) AS n_constrained
FROM steering_scores
GROUP BY method, model, layer, concept_set, steer_config_hash, judge, judge_config_hash, rubric, judge_failures,
         concept_id, split, factor;
