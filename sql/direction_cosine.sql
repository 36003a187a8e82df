-- direction_cosine: cosine similarity of every pair of concept directions learned for the same model, layer and
-- concept set, across methods and concepts (subspace geometry: do methods agree on a concept's direction?).
CREATE OR REPLACE VIEW direction_cosine AS
SELECT a.model, a.layer, a.concept_set,
       a.method AS method_a, a.config_hash AS config_a, a.concept_id AS concept_a,
       b.method AS method_b, b.config_hash AS config_b, b.concept_id AS concept_b,
       list_cosine_similarity(a.direction, b.direction) AS cosine
FROM method_artifacts AS a
JOIN method_artifacts AS b
  ON a.model = b.model AND a.layer = b.layer AND a.concept_set = b.concept_set
WHERE a.direction IS NOT NULL AND b.direction IS NOT NULL AND len(a.direction) = len(b.direction);
