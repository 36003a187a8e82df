-- latent_hard_negative: AxBench's second latent evaluator (HardNegativeEvaluator, axbench/evaluators/
-- hard_negative.py) per method x concept: does a detector that separates positives from negatives also stay quiet
-- on the concept's hard negatives (near-miss texts)?
--   1. every latent_eval score of the concept (positives, negatives, hard negatives) is min-max normalised over
--      those rows; a missing score, or every score equal (0/0), counts as 0, as AxBench's fillna(0) does;
--   2. the threshold is the normalised score maximising Youden's J = TPR - FPR on positives vs negatives, where a
--      threshold admits every example scoring >= it (scikit-learn's roc_curve points; on a tie in J the highest
--      threshold wins, as numpy's argmax over roc_curve's descending thresholds picks it);
--   3. positive_accuracy = share of positives scoring >= threshold, hard_negative_accuracy = share of hard
--      negatives scoring < threshold, macro_accuracy = their mean.
-- When no threshold beats J = 0, roc_curve's leading +infinity threshold wins and AxBench reports nothing: the row
-- is left out here too (as is a concept without positives, negatives or hard negatives).
-- Written for speed at Concept500 scale: the windows are partitioned by an integer series id and the concept id,
-- not by five string columns (bench/scale.py in BENCHMARKS.md); the string key columns are joined back at the end.
CREATE OR REPLACE VIEW latent_hard_negative AS
WITH rows_ AS (
    SELECT method, model, layer, concept_set, config_hash, concept_id, category, score
    FROM latent_labelled
    WHERE category IN ('positive', 'negative', 'hard_negative')
),
series AS (
    -- numbered in a fixed order: a client that inlines this CTE at each of its two uses (DuckDB 1.0 does) must
    -- give a series the same id at both, or rows change method
    SELECT method, model, layer, concept_set, config_hash,
           row_number() OVER (ORDER BY method, model, layer, concept_set, config_hash) AS series_id
    FROM (SELECT DISTINCT method, model, layer, concept_set, config_hash FROM rows_)
),
keyed AS (
    SELECT s.series_id, r.concept_id, r.category, r.score
    FROM rows_ AS r JOIN series AS s USING (method, model, layer, concept_set, config_hash)
),
normalised AS (
    SELECT *,
           coalesce((score - min(score) OVER w) / nullif(max(score) OVER w - min(score) OVER w, 0), 0.0) AS norm
    FROM keyed
    WINDOW w AS (PARTITION BY series_id, concept_id)
),
counts AS (
    SELECT series_id, concept_id,
           count(*) FILTER (WHERE category = 'positive') AS n_pos,
           count(*) FILTER (WHERE category = 'negative') AS n_neg,
           count(*) FILTER (WHERE category = 'hard_negative') AS n_hard
    FROM normalised
    GROUP BY series_id, concept_id
),
by_threshold AS (
    SELECT series_id, concept_id, norm AS threshold,
           count(*) FILTER (WHERE category = 'positive') AS pos,
           count(*) FILTER (WHERE category = 'negative') AS neg
    FROM normalised
    WHERE category IN ('positive', 'negative')
    GROUP BY series_id, concept_id, norm
),
youden AS (
    SELECT b.*, c.n_pos, c.n_neg, c.n_hard,
           -- same float64 operations as roc_curve's tpr - fpr, so ties in J resolve identically
           sum(pos) OVER (PARTITION BY b.series_id, b.concept_id ORDER BY threshold DESC ROWS UNBOUNDED PRECEDING)
               / c.n_pos
           - sum(neg) OVER (PARTITION BY b.series_id, b.concept_id ORDER BY threshold DESC ROWS UNBOUNDED PRECEDING)
               / c.n_neg AS j
    FROM by_threshold AS b
    JOIN counts AS c USING (series_id, concept_id)
    WHERE c.n_pos > 0 AND c.n_neg > 0 AND c.n_hard > 0
),
best AS (
    SELECT series_id, concept_id, n_pos, n_hard,
           first(threshold ORDER BY j DESC, threshold DESC) AS threshold, max(j) AS youden_j
    FROM youden
    GROUP BY series_id, concept_id, n_pos, n_hard
    HAVING max(j) > 0
),
accuracy AS (
    SELECT b.series_id, b.concept_id, b.threshold, b.youden_j,
           count(*) FILTER (WHERE n.category = 'positive' AND n.norm >= b.threshold) / b.n_pos AS positive_accuracy,
           count(*) FILTER (WHERE n.category = 'hard_negative' AND n.norm < b.threshold) / b.n_hard
               AS hard_negative_accuracy,
           b.n_pos, b.n_hard
    FROM best AS b
    JOIN normalised AS n USING (series_id, concept_id)
    GROUP BY b.series_id, b.concept_id, b.threshold, b.youden_j, b.n_pos, b.n_hard
)
SELECT s.method, s.model, s.layer, s.concept_set, s.config_hash, a.concept_id, a.threshold, a.youden_j, a.n_pos,
       a.n_hard, a.positive_accuracy, a.hard_negative_accuracy,
       (a.positive_accuracy + a.hard_negative_accuracy) / 2 AS macro_accuracy
FROM accuracy AS a
JOIN series AS s USING (series_id);
