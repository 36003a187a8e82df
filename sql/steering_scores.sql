-- steering_scores: one row per steered generation and judge. C, I, F = the judge's concept, instruction and
-- fluency ratings (0-2); score = their harmonic mean 3 / (1/C + 1/I + 1/F), 0 when any of them is 0 (AxBench).
-- A rating the judge's answer did not yield (parse failure) is NULL, never 0 -- the score is then NULL too --
-- except for judges whose rating slot we can decode under constraint (embedded), counted in n_constrained;
-- n_parse_failures counts answers without a valid `Rating: [[k]]`. expected_* use the judge's token
-- probabilities where available.
CREATE OR REPLACE VIEW steering_scores AS
WITH j AS (
    SELECT output_id, judge, config_hash AS judge_config_hash,
           max(score) FILTER (WHERE criterion = 'concept') AS concept_score,
           max(score) FILTER (WHERE criterion = 'instruction') AS instruction_score,
           max(score) FILTER (WHERE criterion = 'fluency') AS fluency_score,
           max(expected_score) FILTER (WHERE criterion = 'concept') AS concept_expected,
           max(expected_score) FILTER (WHERE criterion = 'instruction') AS instruction_expected,
           max(expected_score) FILTER (WHERE criterion = 'fluency') AS fluency_expected,
           count(*) FILTER (WHERE NOT parse_ok) AS n_parse_failures,
           count(*) FILTER (WHERE score_source = 'constrained') AS n_constrained,
           count(DISTINCT criterion) AS n_criteria
    FROM judge_scores
    GROUP BY output_id, judge, config_hash
)
SELECT o.output_id, o.method, o.model, o.layer, o.concept_set, o.concept_id, o.factor, o.input_id,
       o.instruction_set, o.instruction_id, o.split, o.config_hash AS steer_config_hash, o.strength,
       j.judge, j.judge_config_hash,
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
       j.n_parse_failures, j.n_constrained, j.n_criteria, p.perplexity
FROM steering_outputs AS o
JOIN j ON j.output_id = o.output_id
LEFT JOIN output_perplexity AS p ON p.output_id = o.output_id AND p.model = o.model;
