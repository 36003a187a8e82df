-- judge_settings: per judge x judge config hash, the settings that produced its ratings, in the open: the rubric
-- (axw-v1 = our wording, axbench:<hash> = AxBench's templates read from a checkout by `axw judge --rubric-from`,
-- proxy-v1/-v2/-v3 = the offline proxy judge), sampling temperature, max tokens and seed (from judge_configs; NULL
-- for judges that sample nothing, and for ratings written before settings were recorded). Ratings written before the
-- rubric column existed read NULL there: they were made with our wording.
CREATE OR REPLACE VIEW judge_settings AS
WITH r AS (
    SELECT judge, config_hash AS judge_config_hash, coalesce(max(rubric), 'axw-v1') AS rubric
    FROM judge_scores
    GROUP BY judge, config_hash
),
c AS (
    SELECT judge, judge_config_hash, max(rubric_source) AS rubric_source, max(temperature) AS temperature,
           max(max_tokens) AS max_tokens, max(seed) AS seed
    FROM judge_configs
    GROUP BY judge, judge_config_hash
)
SELECT r.judge, r.judge_config_hash, r.rubric, c.rubric_source, c.temperature AS judge_temperature,
       c.max_tokens AS judge_max_tokens, c.seed AS judge_seed,
       CASE WHEN r.judge LIKE 'proxy:%' THEN 'proxy judge (offline, not AxBench''s LLM judge)'
            WHEN r.judge = 'openai:gpt-4o-mini' AND r.rubric LIKE 'axbench:%'
                THEN 'AxBench''s judge: gpt-4o-mini with AxBench''s rubric (read from a checkout)'
            WHEN r.judge = 'openai:gpt-4o-mini'
                THEN 'gpt-4o-mini (AxBench''s judge model) with our rubric wording, not AxBench''s'
            ELSE (CASE WHEN r.judge LIKE 'embedded:%' THEN 'embedded offline judge ' || substr(r.judge, 10)
                       ELSE r.judge END)
                 || ' (not AxBench''s gpt-4o-mini) with '
                 || (CASE WHEN r.rubric LIKE 'axbench:%' THEN 'AxBench''s rubric (read from a checkout)'
                          WHEN r.rubric = 'axw-v1' THEN 'our rubric wording'
                          ELSE 'rubric ' || r.rubric END)
       END AS judge_label
FROM r LEFT JOIN c ON c.judge = r.judge AND c.judge_config_hash = r.judge_config_hash;
