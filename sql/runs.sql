-- runs: one row per stage execution (lineage ledger). Data rows point here through run_id.
-- Built from append-only events in the run_events table (a start file, then a finish file; see
-- axwarehouse/run_ledger.py): a run without a finish is 'running' while its process lives and 'interrupted'
-- once it is gone, with rows_written counted from the rows carrying its run_id.
CREATE OR REPLACE VIEW runs AS
WITH s AS (
    SELECT * FROM run_events WHERE event = 'start'
),
f AS (
    SELECT * FROM run_events WHERE event = 'finish'
    QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY event_at DESC) = 1
)
SELECT s.run_id, s.stage, s.config, s.config_hash, s.code_version,
       s.event_at AS started_at, f.event_at AS finished_at,
       coalesce(f.status, 'running') AS status,        -- running | ok | failed | interrupted
       coalesce(f.rows_written, 0) AS rows_written,
       f.message, s.pid, s.host
FROM s LEFT JOIN f USING (run_id);
