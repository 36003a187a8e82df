-- latent_labelled: every latent_eval score of a concept's own examples with its category and AUROC label
-- (1 = positive, 0 = negative, NULL = hard negative, which AxBench leaves out of AUROC). Feeds ROC curves and pages.
CREATE OR REPLACE VIEW latent_labelled AS
SELECT s.method, s.model, s.layer, s.concept_set, s.config_hash, s.concept_id, s.example_id, s.score,
       g.category,
       CASE g.category WHEN 'positive' THEN 1 WHEN 'negative' THEN 0 END AS label
FROM latent_scores AS s
JOIN generations AS g
  ON g.concept_set = s.concept_set AND g.split = s.split AND g.example_id = s.example_id
WHERE s.split = 'latent_eval'
  AND g.concept_id = s.concept_id;
