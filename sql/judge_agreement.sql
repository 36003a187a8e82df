-- judge_agreement: how closely two judges agree where both rated the same outputs, per judge pair x criterion (and
-- judge-failure rule: 'zero' = a failed rating counts as 0, AxBench's rule; 'drop' = left out). A judge is a
-- (judge, judge config hash) pair, so two runs of one model with different settings or rubrics are compared too.
-- Each unordered pair is listed once (side a sorts before side b). n = outputs both rated on that criterion;
-- spearman = Pearson correlation of the average ranks (ties share their mean rank, as scipy.stats.spearmanr);
-- kappa = Cohen's kappa over the rating values (unweighted, as sklearn.metrics.cohen_kappa_score);
-- exact_agreement = share of equal ratings. NULL where undefined (a constant side).
-- Use it to check a local or embedded judge against gpt-4o-mini before trusting it (`axw judge compare A B`).
CREATE OR REPLACE VIEW judge_agreement AS
WITH r AS (
    SELECT output_id, judge, config_hash AS judge_config_hash, coalesce(max(rubric), 'axw-v1') AS rubric,
           criterion, max(score) AS score
    FROM judge_scores
    GROUP BY output_id, judge, config_hash, criterion
),
ruled AS (
    SELECT r.*, rule.judge_failures,
           CASE WHEN rule.judge_failures = 'zero' THEN coalesce(r.score, 0.0) ELSE r.score END AS rating
    FROM r CROSS JOIN (VALUES ('zero'), ('drop')) AS rule(judge_failures)
),
pairs AS (
    SELECT a.judge AS judge_a, a.judge_config_hash AS judge_config_hash_a, a.rubric AS rubric_a,
           b.judge AS judge_b, b.judge_config_hash AS judge_config_hash_b, b.rubric AS rubric_b,
           a.criterion, a.judge_failures, a.output_id, a.rating AS rating_a, b.rating AS rating_b
    FROM ruled AS a
    JOIN ruled AS b
      ON b.output_id = a.output_id AND b.criterion = a.criterion AND b.judge_failures = a.judge_failures
     AND (a.judge < b.judge OR (a.judge = b.judge AND a.judge_config_hash < b.judge_config_hash))
    WHERE a.rating IS NOT NULL AND b.rating IS NOT NULL
),
ranked AS (
    SELECT *,
           rank() OVER (PARTITION BY judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion,
                                     judge_failures ORDER BY rating_a)
           + (count(*) OVER (PARTITION BY judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion,
                                          judge_failures, rating_a) - 1) / 2.0 AS rank_a,
           rank() OVER (PARTITION BY judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion,
                                     judge_failures ORDER BY rating_b)
           + (count(*) OVER (PARTITION BY judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion,
                                          judge_failures, rating_b) - 1) / 2.0 AS rank_b
    FROM pairs
),
stats AS (
    SELECT judge_a, judge_config_hash_a, any_value(rubric_a) AS rubric_a, judge_b, judge_config_hash_b,
           any_value(rubric_b) AS rubric_b, criterion, judge_failures,
           count(*) AS n, corr(rank_a, rank_b) AS spearman, avg(CASE WHEN rating_a = rating_b THEN 1.0 ELSE 0.0 END)
           AS exact_agreement, avg(rating_a) AS mean_a, avg(rating_b) AS mean_b
    FROM ranked
    GROUP BY judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion, judge_failures
),
-- chance agreement: sum over rating values k of p_a(k) * p_b(k)
marg_a AS (
    SELECT judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion, judge_failures,
           rating_a AS k, count(*) AS c
    FROM pairs GROUP BY ALL
),
marg_b AS (
    SELECT judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion, judge_failures,
           rating_b AS k, count(*) AS c
    FROM pairs GROUP BY ALL
),
chance AS (
    SELECT a.judge_a, a.judge_config_hash_a, a.judge_b, a.judge_config_hash_b, a.criterion, a.judge_failures,
           sum(a.c * b.c) AS cc
    FROM marg_a AS a
    JOIN marg_b AS b USING (judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion, judge_failures, k)
    GROUP BY ALL
)
SELECT s.judge_a, s.judge_b, s.criterion, s.judge_failures, s.n, s.spearman,
       CASE WHEN coalesce(c.cc, 0) / (s.n * s.n) >= 1 THEN NULL
            ELSE (s.exact_agreement - coalesce(c.cc, 0) / (s.n * s.n)) / (1 - coalesce(c.cc, 0) / (s.n * s.n))
       END AS kappa,
       s.exact_agreement, s.mean_a, s.mean_b, s.rubric_a, s.rubric_b, s.judge_config_hash_a, s.judge_config_hash_b
FROM stats AS s
LEFT JOIN chance AS c USING (judge_a, judge_config_hash_a, judge_b, judge_config_hash_b, criterion, judge_failures)
ORDER BY s.judge_a, s.judge_b, s.criterion, s.judge_failures DESC;
