-- latent_leaderboard: unweighted mean of per-concept AUROC per method, model, layer and concept set.
CREATE OR REPLACE VIEW latent_leaderboard AS
SELECT method, model, layer, concept_set, config_hash,
       avg(auroc) AS mean_auroc,
       count(auroc) AS n_concepts
FROM latent_auroc
GROUP BY method, model, layer, concept_set, config_hash
ORDER BY concept_set, model, layer, mean_auroc DESC;
