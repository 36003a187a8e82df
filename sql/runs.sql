-- runs: one row per stage execution (lineage ledger). Data rows point here through run_id.
CREATE TABLE IF NOT EXISTS runs (
    run_id       VARCHAR PRIMARY KEY,
    stage        VARCHAR NOT NULL,
    config       VARCHAR NOT NULL,   -- canonical JSON of the stage config
    config_hash  VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    status       VARCHAR NOT NULL,   -- running | ok | failed | interrupted
    rows_written BIGINT NOT NULL DEFAULT 0,
    message      VARCHAR
);
