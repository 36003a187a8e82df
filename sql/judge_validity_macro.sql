-- judge_validity_macro: one row per judge x judge config x concept set x criterion — the macro means over concepts
-- of judge_validity (each concept weighs the same), the worst concept's false-positive rate, and the counts.
CREATE OR REPLACE VIEW judge_validity_macro AS
SELECT judge, judge_config_hash, concept_set, criterion,
       count(*) AS n_concepts, sum(n) AS n, sum(n_hard_negative) AS n_hard_negative,
       avg(false_positive_rate) AS false_positive_rate, max(false_positive_rate) AS max_false_positive_rate,
       avg(true_positive_rate) AS true_positive_rate, avg(accuracy) AS accuracy, avg(kappa) AS kappa,
       avg(auroc) AS auroc, avg(hard_negative_fpr) AS hard_negative_fpr, sum(n_failed) AS n_failed
FROM judge_validity
GROUP BY judge, judge_config_hash, concept_set, criterion;
