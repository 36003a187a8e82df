-- steering_scores: one row per steered generation, judge config and judge-failure rule. C, I, F = the judge's
-- concept, instruction and fluency ratings (0-2); score = their harmonic mean 3 / (1/C + 1/I + 1/F), 0 when any of
-- them is 0 (AxBench's LMJudgeEvaluator).
-- judge_scores keeps a rating the judge's answer did not yield (parse failure) as NULL with its reason; the rule
-- is applied here, and every row says which one (judge_failures):
--   'zero' (default, AxBench's rule): a failed rating counts as 0, as AxBench's DEFAULT_RATING does;
--   'drop': a failed rating stays NULL, so the generation's score is NULL and drops out of the means.
-- Both rules' rows are in this view; readers pick one (`axw leaderboard steering --judge-failures`).
-- n_failed_ratings counts ratings with no score (0 under 'zero', left out under 'drop'); n_parse_failures counts
-- answers without a valid `Rating: [[k]]`, including those whose rating slot the embedded judge decoded under
-- constraint (n_constrained: those are ratings under both rules). A criterion with no row at all (not rated yet,
-- e.g. a transport failure `axw judge` retries) is never a 0: the score stays NULL under both rules.
-- expected_* use the judge's token probabilities where available (not affected by the rule).
CREATE OR REPLACE VIEW steering_scores AS
WITH j AS (
    SELECT output_id, judge, config_hash AS judge_config_hash, coalesce(max(rubric), 'axw-v1') AS rubric,
           max(score) FILTER (WHERE criterion = 'concept') AS concept_rating,
           max(score) FILTER (WHERE criterion = 'instruction') AS instruction_rating,
           max(score) FILTER (WHERE criterion = 'fluency') AS fluency_rating,
           bool_or(criterion = 'concept') AS has_concept,
           bool_or(criterion = 'instruction') AS has_instruction,
           bool_or(criterion = 'fluency') AS has_fluency,
           max(expected_score) FILTER (WHERE criterion = 'concept') AS concept_expected,
           max(expected_score) FILTER (WHERE criterion = 'instruction') AS instruction_expected,
           max(expected_score) FILTER (WHERE criterion = 'fluency') AS fluency_expected,
           count(*) FILTER (WHERE NOT parse_ok) AS n_parse_failures,
           count(*) FILTER (WHERE score IS NULL) AS n_failed_ratings,
           count(*) FILTER (WHERE score_source = 'constrained') AS n_constrained,
           count(DISTINCT criterion) AS n_criteria
    FROM judge_scores
    GROUP BY output_id, judge, config_hash
),
ruled AS (
    SELECT j.*, rule.judge_failures,
           CASE WHEN rule.judge_failures = 'zero' AND has_concept THEN coalesce(concept_rating, 0.0)
                ELSE concept_rating END AS concept_score,
           CASE WHEN rule.judge_failures = 'zero' AND has_instruction THEN coalesce(instruction_rating, 0.0)
                ELSE instruction_rating END AS instruction_score,
           CASE WHEN rule.judge_failures = 'zero' AND has_fluency THEN coalesce(fluency_rating, 0.0)
                ELSE fluency_rating END AS fluency_score
    FROM j CROSS JOIN (VALUES ('zero'), ('drop')) AS rule(judge_failures)
)
SELECT o.output_id, o.method, o.model, o.layer, o.concept_set, o.concept_id, o.factor, o.input_id,
       o.instruction_set, o.instruction_id, o.split, o.config_hash AS steer_config_hash, o.strength,
       j.judge, j.judge_config_hash, j.rubric, j.judge_failures,
       j.concept_score, j.instruction_score, j.fluency_score,
       CASE WHEN j.concept_score IS NULL OR j.instruction_score IS NULL OR j.fluency_score IS NULL THEN NULL
            WHEN j.concept_score = 0 OR j.instruction_score = 0 OR j.fluency_score = 0 THEN 0.0
            ELSE 3.0 / (1.0 / j.concept_score + 1.0 / j.instruction_score + 1.0 / j.fluency_score)
       END AS score,
       j.concept_expected, j.instruction_expected, j.fluency_expected,
       CASE WHEN j.concept_expected IS NULL OR j.instruction_expected IS NULL OR j.fluency_expected IS NULL THEN NULL
            WHEN j.concept_expected = 0 OR j.instruction_expected = 0 OR j.fluency_expected = 0 THEN 0.0
            ELSE 3.0 / (1.0 / j.concept_expected + 1.0 / j.instruction_expected + 1.0 / j.fluency_expected)
       END AS expected_score,
       j.n_parse_failures, j.n_failed_ratings, j.n_constrained, j.n_criteria, p.perplexity
FROM steering_outputs AS o
JOIN ruled AS j ON j.output_id = o.output_id
LEFT JOIN output_perplexity AS p ON p.output_id = o.output_id AND p.model = o.model;
