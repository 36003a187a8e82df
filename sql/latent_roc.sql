-- latent_roc: the ROC curve of every method x concept (positives vs negatives, hard negatives excluded), one row
-- per distinct score threshold plus the (0, 0) origin. A threshold admits every example scoring >= it, so tied
-- scores enter together (the curve's diagonal segments), exactly as scikit-learn's roc_curve draws it.
CREATE OR REPLACE VIEW latent_roc AS
WITH by_score AS (
    SELECT method, model, layer, concept_set, config_hash, concept_id, score,
           count(*) FILTER (WHERE label = 1) AS pos,
           count(*) FILTER (WHERE label = 0) AS neg
    FROM latent_labelled
    WHERE label IS NOT NULL AND score IS NOT NULL
    GROUP BY ALL
),
cum AS (
    SELECT *,
           sum(pos) OVER (PARTITION BY method, model, layer, concept_set, config_hash, concept_id
                          ORDER BY score DESC ROWS UNBOUNDED PRECEDING) AS tp,
           sum(neg) OVER (PARTITION BY method, model, layer, concept_set, config_hash, concept_id
                          ORDER BY score DESC ROWS UNBOUNDED PRECEDING) AS fp,
           sum(pos) OVER (PARTITION BY method, model, layer, concept_set, config_hash, concept_id) AS n_pos,
           sum(neg) OVER (PARTITION BY method, model, layer, concept_set, config_hash, concept_id) AS n_neg
    FROM by_score
)
SELECT method, model, layer, concept_set, config_hash, concept_id, score AS threshold,
       fp / nullif(n_neg, 0) AS fpr, tp / nullif(n_pos, 0) AS tpr
FROM cum
UNION ALL
SELECT DISTINCT method, model, layer, concept_set, config_hash, concept_id, 'infinity'::DOUBLE, 0.0, 0.0
FROM by_score;
