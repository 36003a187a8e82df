-- latent_examples: one row per scored latent_eval example of a concept, with its text, category, max-pooled score,
-- the per-token scores and the tokens they belong to (positions after the chat prefix, in order) — what the
-- concept pages' per-token highlighter draws.
CREATE OR REPLACE VIEW latent_examples AS
WITH toks AS (
    SELECT model, layer, concept_set, split, example_id,
           list(token ORDER BY position) FILTER (WHERE NOT is_prefix) AS tokens
    FROM activations
    GROUP BY model, layer, concept_set, split, example_id
)
SELECT s.method, s.model, s.layer, s.concept_set, s.config_hash, s.concept_id, s.example_id, g.category,
       s.score, s.max_position, s.max_token, g.input, g.output, g.output_concept, s.token_scores, t.tokens
FROM latent_scores AS s
JOIN generations AS g
  ON g.concept_set = s.concept_set AND g.split = s.split AND g.example_id = s.example_id
 AND g.concept_id = s.concept_id
LEFT JOIN toks AS t
  ON t.model = s.model AND t.layer = s.layer AND t.concept_set = s.concept_set AND t.split = s.split
 AND t.example_id = s.example_id
WHERE s.split = 'latent_eval';
