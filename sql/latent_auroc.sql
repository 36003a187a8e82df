-- latent_auroc: per method x concept AUROC of max-pooled scores, the concept's positives vs its negatives
-- (hard negatives excluded, as AxBench does; an example without a score (NULL) is left out, as latent_roc does). Mann-Whitney rank statistic with tied scores given their average
-- rank, which equals scikit-learn's trapezoidal roc_auc_score.
CREATE OR REPLACE VIEW latent_auroc AS
WITH labelled AS (
    SELECT s.method, s.model, s.layer, s.concept_set, s.config_hash, s.concept_id, s.score,
           CASE WHEN g.category = 'positive' THEN 1 ELSE 0 END AS label
    FROM latent_scores AS s
    JOIN generations AS g
      ON g.concept_set = s.concept_set AND g.split = s.split AND g.example_id = s.example_id
    WHERE s.split = 'latent_eval'
      AND g.concept_id = s.concept_id
      AND g.category IN ('positive', 'negative')
      AND s.score IS NOT NULL
),
ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY method, model, layer, concept_set, config_hash, concept_id ORDER BY score)
           + (count(*) OVER (PARTITION BY method, model, layer, concept_set, config_hash, concept_id, score) - 1) / 2.0
             AS avg_rank
    FROM labelled
),
per_concept AS (
    SELECT method, model, layer, concept_set, config_hash, concept_id,
           count(*) FILTER (WHERE label = 1) AS n_pos,
           count(*) FILTER (WHERE label = 0) AS n_neg,
           sum(avg_rank) FILTER (WHERE label = 1) AS pos_rank_sum
    FROM ranked
    GROUP BY method, model, layer, concept_set, config_hash, concept_id
)
SELECT method, model, layer, concept_set, config_hash, concept_id, n_pos, n_neg,
       (pos_rank_sum - n_pos * (n_pos + 1) / 2.0) / nullif(n_pos * n_neg, 0) AS auroc
FROM per_concept;
