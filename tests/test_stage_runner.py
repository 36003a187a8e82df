"""The stage runner: a stage added by following docs/adding-a-stage.md alone, and the runner's own rules."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.progress import Progress
from axwarehouse.stage_runner import Work, in_list, missing, run_stage, run_work

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-stage.md"


def _documented_stage(tmp_path: Path):
    """The stage module of the doc's worked example, as the doc gives it (its first python block)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    path = tmp_path / "output_lengths.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("output_lengths_doc", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_documented_stage_runs_incrementally(tiny_warehouse, tmp_path):
    catalog, _ = tiny_warehouse
    stage = _documented_stage(tmp_path)
    cfg = stage.LengthsConfig("s3")
    with Catalog(catalog) as cat:
        ids = [c for (c,) in cat.sql("SELECT concept_id FROM concepts WHERE concept_set = 's3' ORDER BY 1").fetchall()]
        assert stage.run_output_lengths(cat, stage.LengthsConfig("s3", (ids[1],))) == 1
        assert stage.run_output_lengths(cat, cfg) == len(ids) - 1  # only the concepts still missing
        assert stage.run_output_lengths(cat, cfg) == 0
        got = cat.sql("SELECT concept_id, example_id, chars FROM output_lengths ORDER BY ALL").fetchall()
        want = cat.sql("SELECT concept_id, example_id, length(coalesce(output, '')) FROM generations "
                       "WHERE concept_set = 's3' AND concept_id >= 0 ORDER BY ALL").fetchall()
        lineage = cat.sql("SELECT count(DISTINCT o.run_id), count(*) FILTER (WHERE r.stage = 'output_lengths') "
                          "FROM output_lengths o JOIN runs r USING (run_id)").fetchall()[0]
    assert got == want and len(got) > 0
    assert lineage == (2, len(got))  # two runs wrote rows, every row traces to its run


def test_the_documented_view_reads_the_new_table(tiny_warehouse, tmp_path, monkeypatch):
    """The doc's view, saved beside the shipped views as the doc says, is created by the next catalog opened and
    gives the stage's rows per concept."""
    from axwarehouse import table_views

    catalog, _ = tiny_warehouse
    stage = _documented_stage(tmp_path)
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for f in table_views.sql_files():
        (sql_dir / f.name).write_text(f.read_text())
    (sql_dir / "output_length_means.sql").write_text(re.search(r"```sql\n(.*?)```", DOC.read_text(), re.S).group(1))
    monkeypatch.setattr(table_views, "SQL_DIR", sql_dir)
    monkeypatch.setattr(table_views, "_SHARED", None)  # this process's views database, built again with the new file
    with Catalog(catalog) as cat:
        stage.run_output_lengths(cat, stage.LengthsConfig("s3"))
    with Catalog(catalog, read_only=True) as cat:
        got = cat.sql("SELECT concept_id, mean_chars, n_outputs FROM output_length_means "
                      "WHERE concept_set = 's3' ORDER BY 1").fetchall()
        want = cat.sql("SELECT concept_id, avg(length(coalesce(output, ''))), count(*) FROM generations "
                       "WHERE concept_set = 's3' AND concept_id >= 0 GROUP BY 1 ORDER BY 1").fetchall()
    assert [(c, n) for c, _, n in got] == [(c, n) for c, _, n in want] and len(got) > 1
    assert [m for _, m, _ in got] == pytest.approx([m for _, m, _ in want])
    monkeypatch.setattr(table_views, "_SHARED", None)  # later tests build the shipped views again


def test_missing_binds_every_value(tiny_warehouse):
    """A concept id list and a quote in a value go in as parameters: nothing is pasted into the SQL."""
    catalog, _ = tiny_warehouse
    with Catalog(catalog, read_only=True) as cat:
        owned, params = in_list("concept_id", [0, 1])
        assert "0" not in owned and params == [[0, 1]]
        rows = missing(cat, f"SELECT concept_set, concept_id FROM concepts WHERE concept_set = ?{owned}",
                       ["s3", *params], "latent_scores", ("concept_set", "concept_id"), {"method": "it's"},
                       order_by=("concept_id",))
        assert rows.column("concept_id").to_pylist() == [c for c in (0, 1) if c in _ids(cat)]
        assert in_list("concept_id", []) == ("", [])


def _ids(cat) -> set[int]:
    return {c for (c,) in cat.sql("SELECT concept_id FROM concepts WHERE concept_set = 's3'").fetchall()}


class _Run:
    def __init__(self) -> None:
        self.writes: list[list[int]] = []

    def write(self, table: str, data: pa.Table) -> int:
        self.writes.append(data.column("u").to_pylist())
        return data.num_rows


def test_flushes_whole_units_by_rows_and_reads_each_concept_once():
    reads: list[int] = []
    units = [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a")]
    work = Work("t", units, compute=lambda u, x: pa.table({"u": [u[0] * 10 + x] * 2}), concept=lambda u: u[0],
                read=lambda c: reads.append(c) or len(reads), flush_rows=3)
    run = _Run()
    run_work(run, work, Progress(len(units), "t", enabled=False))
    assert reads == [0, 1, 2]
    assert run.writes == [[1, 1, 1, 1], [12, 12, 12, 12], [23, 23]]  # 4 >= 3 rows: written after the 2nd unit


def test_an_error_keeps_finished_units_only_when_asked():
    def boom(u, _x):
        if u == 2:
            raise RuntimeError("boom")
        return pa.table({"u": [u]})

    for keep, want in ((False, []), (True, [[0, 1]])):
        run = _Run()
        with pytest.raises(RuntimeError):
            run_work(run, Work("t", [0, 1, 2], compute=boom, flush_on_error=keep), Progress(3, "t", enabled=False))
        assert run.writes == want


def test_units_that_replace_rows_are_written_alone_after_their_hook():
    events: list[str] = []

    class Run(_Run):
        def write(self, table, data):
            events.append(f"write {data.column('u').to_pylist()}")
            return data.num_rows

    work = Work("t", ["x", "y"], compute=lambda u, _x: pa.table({"u": [u]}),
                before_write=lambda u: events.append(f"replace {u}"))
    run_work(Run(), work, Progress(2, "t", enabled=False))
    assert events == ["replace x", "write ['x']", "replace y", "write ['y']"]


def test_run_stage_records_one_run(tiny_warehouse):
    catalog, _ = tiny_warehouse
    with Catalog(catalog) as cat:
        run = run_stage(cat, "probe_stage", {"k": 1}, [Work("concepts", [], compute=lambda u, x: None)],
                        desc="x", progress=False)
        status = cat.sql("SELECT stage, status FROM runs WHERE run_id = ?", [run.run_id]).fetchall()
    assert status == [("probe_stage", "ok")]
