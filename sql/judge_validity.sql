-- judge_validity: one row per judge x judge config x concept set x criterion x concept — how often the judge's
-- 0-2 rating, binarised at >= 1, agrees with the known label of held-out texts (`axw judge validate`).
-- Positives: present / relevant / fluent texts; ordinary negatives: absent (negative), irrelevant (other
-- instruction) and disfluent (shuffled, looped) texts. Hard negatives (concept criterion) are counted apart:
-- they enter no figure but n_hard_negative and hard_negative_fpr.
-- false_positive_rate = share of ordinary negatives rated >= 1; true_positive_rate = share of positives rated >= 1;
-- accuracy and Cohen's kappa of the binarised rating against the label (kappa NULL when chance agreement is 1);
-- auroc of the rating against the label, ties counted one half (Mann-Whitney U / (n_pos * n_neg), as latent_auroc).
-- A rating without a score (an LLM answer with no valid rating) counts as 0, AxBench's rule; n_failed counts them.
CREATE OR REPLACE VIEW judge_validity AS
WITH v AS (
    SELECT judge, judge_config_hash, concept_set, criterion, concept_id, kind, label = 1 AS positive,
           coalesce(rating, 0) AS rating, rating IS NULL AS failed
    FROM judge_validation
),
ordinary AS (
    SELECT * FROM v WHERE kind <> 'hard_negative'
),
rates AS (
    SELECT judge, judge_config_hash, concept_set, criterion, concept_id,
           count(*) AS n,
           count(*) FILTER (WHERE positive) AS n_positive,
           count(*) FILTER (WHERE NOT positive) AS n_negative,
           avg(CASE WHEN rating >= 1 THEN 1.0 ELSE 0.0 END) FILTER (WHERE NOT positive) AS false_positive_rate,
           avg(CASE WHEN rating >= 1 THEN 1.0 ELSE 0.0 END) FILTER (WHERE positive) AS true_positive_rate,
           avg(CASE WHEN (rating >= 1) = positive THEN 1.0 ELSE 0.0 END) AS accuracy,
           avg(CASE WHEN rating >= 1 THEN 1.0 ELSE 0.0 END) AS p_said_yes,
           avg(CASE WHEN positive THEN 1.0 ELSE 0.0 END) AS p_positive,
           count(*) FILTER (WHERE failed) AS n_failed
    FROM ordinary
    GROUP BY judge, judge_config_hash, concept_set, criterion, concept_id
),
by_rating AS (
    SELECT judge, judge_config_hash, concept_set, criterion, concept_id, rating,
           count(*) FILTER (WHERE positive) AS pos, count(*) FILTER (WHERE NOT positive) AS neg
    FROM ordinary
    GROUP BY judge, judge_config_hash, concept_set, criterion, concept_id, rating
),
below AS (
    SELECT *, coalesce(sum(neg) OVER (PARTITION BY judge, judge_config_hash, concept_set, criterion, concept_id
                                      ORDER BY rating ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS neg_below
    FROM by_rating
),
u AS (
    SELECT judge, judge_config_hash, concept_set, criterion, concept_id,
           sum(pos * (neg_below + neg / 2.0)) AS u
    FROM below
    GROUP BY judge, judge_config_hash, concept_set, criterion, concept_id
),
hard AS (
    SELECT judge, judge_config_hash, concept_set, criterion, concept_id, count(*) AS n_hard_negative,
           avg(CASE WHEN rating >= 1 THEN 1.0 ELSE 0.0 END) AS hard_negative_fpr,
           count(*) FILTER (WHERE failed) AS n_failed_hard
    FROM v WHERE kind = 'hard_negative'
    GROUP BY judge, judge_config_hash, concept_set, criterion, concept_id
)
SELECT r.judge, r.judge_config_hash, r.concept_set, r.criterion, r.concept_id,
       r.n, r.n_positive, r.n_negative, coalesce(h.n_hard_negative, 0) AS n_hard_negative,
       r.false_positive_rate, r.true_positive_rate, r.accuracy,
       CASE WHEN 1 - (r.p_said_yes * r.p_positive + (1 - r.p_said_yes) * (1 - r.p_positive)) > 0
            THEN (r.accuracy - (r.p_said_yes * r.p_positive + (1 - r.p_said_yes) * (1 - r.p_positive)))
                 / (1 - (r.p_said_yes * r.p_positive + (1 - r.p_said_yes) * (1 - r.p_positive))) END AS kappa,
       CASE WHEN r.n_positive > 0 AND r.n_negative > 0 THEN u.u / (r.n_positive * r.n_negative) END AS auroc,
       h.hard_negative_fpr,
       r.n_failed + coalesce(h.n_failed_hard, 0) AS n_failed
FROM rates AS r
JOIN u USING (judge, judge_config_hash, concept_set, criterion, concept_id)
LEFT JOIN hard AS h USING (judge, judge_config_hash, concept_set, criterion, concept_id);
