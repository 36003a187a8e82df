-- latent_roc_mean: per method, the concepts' ROC curves averaged vertically on 101 FPR points (0, 0.01, ..., 1),
-- as AxBench's aggregated ROC plot does (np.interp on each curve, then the mean). Linear interpolation between the
-- last point at or before the grid FPR (its highest TPR) and the first point at or after it (its lowest TPR).
CREATE OR REPLACE VIEW latent_roc_mean AS
WITH pts AS (
    SELECT method, model, layer, concept_set, config_hash, concept_id, fpr,
           min(tpr) AS tpr_lo, max(tpr) AS tpr_hi
    FROM latent_roc WHERE fpr IS NOT NULL AND tpr IS NOT NULL
    GROUP BY ALL
),
grid AS (
    SELECT DISTINCT p.method, p.model, p.layer, p.concept_set, p.config_hash, p.concept_id, g.i / 100.0 AS fpr
    FROM pts AS p CROSS JOIN range(0, 101) AS g(i)
),
prev AS (
    SELECT g.*, p.fpr AS fpr_prev, p.tpr_hi AS tpr_prev
    FROM grid AS g ASOF JOIN pts AS p
      ON g.method = p.method AND g.model = p.model AND g.layer = p.layer AND g.concept_set = p.concept_set
     AND g.config_hash = p.config_hash AND g.concept_id = p.concept_id AND p.fpr <= g.fpr
),
both_sides AS (
    SELECT v.*, n.fpr AS fpr_next, n.tpr_lo AS tpr_next
    FROM prev AS v ASOF JOIN (SELECT *, -fpr AS neg_fpr FROM pts) AS n
      ON v.method = n.method AND v.model = n.model AND v.layer = n.layer AND v.concept_set = n.concept_set
     AND v.config_hash = n.config_hash AND v.concept_id = n.concept_id AND n.neg_fpr <= -v.fpr
),
per_concept AS (
    SELECT *, CASE WHEN fpr_next = fpr_prev THEN tpr_prev
                   ELSE tpr_prev + (tpr_next - tpr_prev) * (fpr - fpr_prev) / (fpr_next - fpr_prev) END AS tpr
    FROM both_sides
)
SELECT method, model, layer, concept_set, config_hash, fpr, avg(tpr) AS tpr, count(*) AS n_concepts
FROM per_concept
GROUP BY method, model, layer, concept_set, config_hash, fpr;
