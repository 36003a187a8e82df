"""`axw doctor`: check every table file of the warehouse, move damaged ones aside, say what re-creates their rows.

A file is damaged when Parquet cannot read its footer or any of its row groups (truncated, overwritten, unreadable),
or when it reads but is not a file of its table: a column the table lacks or of another type, a key column (one
``axwarehouse.schemas`` declares non-nullable) missing or NULL in some row.
Damaged files move to ``warehouse/_quarantine/<time>/<table>/…`` (never deleted: the bytes may still be worth
something); the tables then read without them, and the run that wrote each file (its id is in the file name) tells
which command re-creates the rows. Temp files left by a killed write (``.*.tmp``) are moved aside the same way.
The catalog's own zero-row schema files are simply rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from axwarehouse import run_ledger, schemas
from axwarehouse.catalog import Catalog
from axwarehouse.warehouse_files import QUARANTINE, SCHEMA_FILE

_RUN_IN_NAME = re.compile(r"^part-([0-9a-f]{16})-")
# commands that re-create a table's rows when the run that wrote them is unknown
_FALLBACK = {
    "concepts": "`axw import-axbench DIR --replace` / `axw concepts import FILE` for that concept set",
    "generations": "`axw import-axbench DIR --replace` or `axw generate --replace` for that concept set",
    "llm_calls": "nothing needed: it is a response cache; the next call re-records it",
    "run_events": "nothing needed: it is the runs ledger",
}
_STAGE_COMMANDS = ("activations", "train", "latent", "steer", "judge")


@dataclass
class DoctorResult:
    checked: int = 0
    quarantined: list[tuple[str, str, str, str]] = field(default_factory=list)  # (file, moved to, why, command)
    temp_files: list[str] = field(default_factory=list)
    rewritten_schema_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"checked {self.checked} table files"]
        for path, dest, why, command in self.quarantined:
            lines.append(f"DAMAGED {path}: {why}")
            lines.append(f"  moved to {dest}")
            lines.append(f"  re-create its rows with: {command}")
        for path in self.temp_files:
            lines.append(f"moved aside a temp file left by an interrupted write: {path}")
        for path in self.rewritten_schema_files:
            lines.append(f"rewrote schema file {path}")
        if self.quarantined:
            lines.append("then `axw status` shows what is still missing (`axw run` fills in activations, artifacts, "
                         "latent scores and ratings)")
        elif not self.temp_files and not self.rewritten_schema_files:
            lines.append("every table file reads")
        return "\n".join(lines)


# kinds of value a column can hold; a file's column reads as the table's when both are of one kind
_KINDS = (pa.types.is_integer, pa.types.is_floating, lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
          pa.types.is_binary, pa.types.is_boolean, pa.types.is_timestamp)
_LISTS = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


def _kind(t: pa.DataType) -> str:
    return next((str(i) for i, test in enumerate(_KINDS) if test(t)), str(t))


def _same_type(found: pa.DataType, want: pa.DataType) -> bool:
    """A file column of type ``found`` reads as the table's ``want``: the same kind of value (integers of any width,
    floats of any width — older activations files hold float16 — text, …), lists of any kind (a fixed-size list is
    how act_bf16 keeps its width) of such values."""
    if any(f(found) for f in _LISTS) and any(f(want) for f in _LISTS):
        return _same_type(found.value_type, want.value_type)
    return _kind(found) == _kind(want)


def _schema_problem(found: pa.Schema, want: pa.Schema) -> str | None:
    """Why a file with columns ``found`` is not a file of the table ``want``; None when it is. A file may lack
    columns that may be NULL (written before the table grew them: they read as NULL), never a key column
    (non-nullable in ``axwarehouse.schemas``), and every column it has must be one of the table's, of its type."""
    wanted = {f.name: f for f in want}
    foreign = [name for name in found.names if name not in wanted]
    if foreign:
        return f"schema differs from the table's: columns {', '.join(foreign)} are not the table's"
    wrong = [f"{f.name} is {f.type}, not {wanted[f.name].type}" for f in found
             if not _same_type(f.type, wanted[f.name].type)]
    if wrong:
        return f"schema differs from the table's: {'; '.join(wrong)}"
    missing = [f.name for f in want if not f.nullable and f.name not in found.names]
    if missing:
        return f"schema differs from the table's: key columns {', '.join(missing)} are missing"
    return None


def check_file(path: Path, schema: pa.Schema | None = None) -> str | None:
    """None when every row group of ``path`` reads — and, given the table's ``schema``, holds the table's columns
    with their types and no NULL in a key column; else the reason, one line."""
    try:
        pf = pq.ParquetFile(path)
        problem = _schema_problem(pf.schema_arrow, schema) if schema is not None else None
        if problem:
            return problem
        keys = [f.name for f in schema if not f.nullable] if schema is not None else []
        nulls = dict.fromkeys(keys, 0)
        for i in range(pf.num_row_groups):
            group = pf.read_row_group(i)
            for name in keys:
                nulls[name] += group.column(name).null_count
    except (OSError, pa.ArrowException, ValueError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return text[:200]
    null_keys = [f"{name} ({n} rows)" for name, n in nulls.items() if n]
    if null_keys:
        return f"NULL in key columns: {', '.join(null_keys)}"
    return None


def _command_for(cat: Catalog, table: str, path: Path) -> str:
    m = _RUN_IN_NAME.match(path.name)
    run = None
    if m:
        try:
            rows = cat.sql("SELECT stage, config FROM runs WHERE run_id = ?", [m.group(1)]).fetchall()
        except duckdb.Error:  # the ledger itself is damaged
            rows = []
        run = rows[0] if rows else None
    if run and run[0] in _STAGE_COMMANDS:
        stage, cfg = run[0], json.loads(run[1] or "{}")
        parts = [f"axw {stage}"]
        if cfg.get("concept_set"):
            parts.append(f"-c {cfg['concept_set']}")
        if stage != "judge":
            parts.append(f"--model {cfg['model']} --layer {cfg['layer']}")
        methods = cfg.get("methods")
        names = list(methods) if isinstance(methods, (dict, list)) else []
        parts += [f"--method {n}" for n in names if stage in ("train", "latent", "steer")]
        if stage == "judge":
            parts.append(f"--judge {cfg.get('judge')}")
        if stage in ("train", "latent") and cfg.get("seed") not in (None, 42):
            parts.append(f"--seed {cfg['seed']}")
        for method, sets in (cfg.get("overrides") or {}).items():
            parts += [f"--set {method}.{k}={v}" for k, v in sorted(sets.items())]
        return "`" + " ".join(parts) + "` (or `axw run`)"
    if table in _FALLBACK:
        return _FALLBACK[table]
    return "`axw run` (it runs what `axw status` lists as missing)"


def run_doctor(cat: Catalog) -> DoctorResult:
    """Check every file of every table; quarantine the damaged ones (``cat`` must be writable: it moves files)."""
    res = DoctorResult()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    qroot = cat.warehouse / QUARANTINE / stamp
    tables = [run_ledger.TABLE, *schemas.TABLES]  # the ledger first: it names the other files' runs
    with cat.commit_lock():
        for table in tables:
            root = cat.table_dir(table)
            if not root.exists():
                continue
            schema_file = root / SCHEMA_FILE
            if schema_file.exists() and check_file(schema_file) is not None:
                schema_file.unlink()  # holds no rows; the open below writes it again
                res.rewritten_schema_files.append(str(schema_file))
            for path in cat.table_files(table):
                res.checked += 1
                why = check_file(path, run_ledger.RUN_EVENTS if table == run_ledger.TABLE else schemas.TABLES[table])
                if why is None:
                    continue
                command = _command_for(cat, table, path)
                dest = qroot / path.relative_to(cat.warehouse)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
                res.quarantined.append((str(path), str(dest), why, command))
            for tmp in sorted(root.rglob(".*.tmp")):
                dest = qroot / tmp.relative_to(cat.warehouse)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
                res.temp_files.append(str(tmp))
            if table == run_ledger.TABLE:
                cat.refresh_views()
    if res.rewritten_schema_files:
        cat._ensure_schema_files()  # noqa: SLF001
    cat.refresh_views()
    return res
