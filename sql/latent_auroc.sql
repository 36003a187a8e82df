-- latent_auroc: per method x concept AUROC of max-pooled scores, the concept's positives vs its negatives
-- (hard negatives excluded, as AxBench does; an example without a score (NULL) is left out, as latent_roc does).
-- Mann-Whitney U with ties counted as one half — U = sum over distinct scores s of pos(s) * (neg below s +
-- neg(s) / 2) — divided by n_pos * n_neg, which equals scikit-learn's trapezoidal roc_auc_score (and the average-rank
-- form of the statistic: every term is an integer or a half, so the sums are exact in DOUBLE).
-- Written for speed at Concept500 scale: counts per distinct score are one hash aggregate, and the one window (the
-- running count of negatives) is partitioned by an integer series id, not by five string columns, and replaces
-- rank() and count() windows over every score row (bench/scale.py in BENCHMARKS.md).
CREATE OR REPLACE VIEW latent_auroc AS
WITH labelled AS (
    SELECT s.method, s.model, s.layer, s.concept_set, s.config_hash, s.concept_id, s.score,
           g.category = 'positive' AS positive
    FROM latent_scores AS s
    JOIN generations AS g
      ON g.concept_set = s.concept_set AND g.split = s.split AND g.example_id = s.example_id
    WHERE s.split = 'latent_eval'
      AND g.concept_id = s.concept_id
      AND g.category IN ('positive', 'negative')
      AND s.score IS NOT NULL
),
series AS (
    -- numbered in a fixed order: a client that inlines this CTE at each of its two uses (DuckDB 1.0 does) must
    -- give a series the same id at both, or rows change method
    SELECT method, model, layer, concept_set, config_hash,
           row_number() OVER (ORDER BY method, model, layer, concept_set, config_hash) AS series_id
    FROM (SELECT DISTINCT method, model, layer, concept_set, config_hash FROM labelled)
),
by_score AS (
    SELECT series_id, concept_id, score,
           count(*) FILTER (WHERE positive) AS pos,
           count(*) FILTER (WHERE NOT positive) AS neg
    FROM labelled JOIN series USING (method, model, layer, concept_set, config_hash)
    GROUP BY series_id, concept_id, score
),
below AS (
    SELECT *,
           coalesce(sum(neg) OVER (PARTITION BY series_id, concept_id ORDER BY score
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS neg_below
    FROM by_score
),
per_concept AS (
    SELECT series_id, concept_id,
           CAST(sum(pos) AS BIGINT) AS n_pos,
           CAST(sum(neg) AS BIGINT) AS n_neg,
           sum(pos * (neg_below + neg / 2.0)) AS u
    FROM below
    GROUP BY series_id, concept_id
)
SELECT s.method, s.model, s.layer, s.concept_set, s.config_hash, p.concept_id, p.n_pos, p.n_neg,
       p.u / nullif(p.n_pos * p.n_neg, 0) AS auroc
FROM per_concept AS p
JOIN series AS s USING (series_id);
