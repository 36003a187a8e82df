"""Read-only user SQL (`axw sql`, `axw export --where`): what a query may be, and the DuckDB settings around it.

Two walls, each meant to hold alone:

1. **The statement** (:func:`read_only_statement`), as DuckDB's own parser reads it: exactly one statement, a
   SELECT (``WITH … SELECT``, ``VALUES``, set operations, ``FROM …``, DESCRIBE/SHOW/SUMMARIZE, PIVOT with an
   ``IN`` list) or a plain ``EXPLAIN`` of one. A SELECT can still hide writes — DuckDB accepts ``COPY … TO``,
   INSERT, UPDATE and DELETE as CTE bodies, and table functions such as ``query()`` or
   ``json_execute_serialized_sql()`` run SQL given as a string — so the statement's syntax tree
   (``json_serialize_sql``) is walked: every query node must be a plain select node, every table function one of
   a list known to only read, and no function may change the connection's state. ``EXPLAIN ANALYZE`` (and any
   ``EXPLAIN (…)`` option list, which can ask for it) is refused: it executes what it explains.
2. **The connection** (:func:`lock_down`): DuckDB's external access off, files readable only under the warehouse
   and the ``--allow-files`` folders, no extension install or load, no persistent secrets, no Python replacement
   scans, no temp directory (nothing spills to disk), and the configuration locked. DuckDB has no read-only form
   of ``allowed_directories``: a COPY that reached execution could write under those folders. The parser wall is
   what stops that, and `axw export` writes its file from Python (it never asks DuckDB to write).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from axwarehouse.errors import AxwError

# query nodes that only select (anything else — COPY_QUERY_NODE, INSERT_/UPDATE_/DELETE_QUERY_NODE, nodes added by
# later DuckDB versions — is refused)
SELECT_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})

# table functions that read and nothing else (files only where the connection's allowed_directories let them);
# any other — query(), query_table(), json_execute_serialized_sql(), checkpoint(), enable_profiling(),
# arrow_scan() (a raw pointer), register_external_resource(), … — is refused by name
READ_ONLY_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "glob", "summary",
    "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json", "read_json_auto", "read_ndjson",
    "read_ndjson_auto", "read_json_objects", "read_json_objects_auto", "read_ndjson_objects", "read_text",
    "read_blob", "sniff_csv", "json_each", "json_tree",
    "parquet_metadata", "parquet_file_metadata", "parquet_full_metadata", "parquet_kv_metadata",
    "parquet_schema", "parquet_bloom_probe", "parquet_page_index",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_functions",
    "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_sequences", "duckdb_settings", "duckdb_tables",
    "duckdb_types", "duckdb_views", "duckdb_memory", "duckdb_temporary_files", "duckdb_extensions",
    "pragma_version", "pragma_platform", "pragma_table_info", "pragma_show", "pragma_database_size",
    "pragma_collations", "pragma_user_agent", "pg_timezone_names", "icu_calendar_names", "test_all_types",
})

# scalar functions that change the connection's state (sequences, the log)
STATE_CHANGING_FUNCTIONS = frozenset({"nextval", "setval", "write_log"})

_READ_ONLY = "the catalog is read-only here"
_WORD = re.compile(r"\w+|\S")


def lock_down(con: duckdb.DuckDBPyConnection, read_dirs: Sequence[str | Path]) -> None:
    """Restrict ``con`` (its database's settings) to reading files under ``read_dirs``, then lock the settings.

    Raises AxwError when a folder does not exist. ``con`` must be on a database of its own: these settings are
    the database's, and ``lock_configuration`` freezes them for every connection on it.
    """
    dirs = []
    for d in read_dirs:
        d = Path(d).resolve()
        if not d.is_dir():
            raise AxwError(f"--allow-files {d}: no such folder")
        dirs.append(str(d).rstrip("/") + "/")
    quoted = ", ".join("'" + d.replace("'", "''") + "'" for d in dirs)
    for setting in (f"allowed_directories = [{quoted}]",
                    "autoinstall_known_extensions = false",
                    "autoload_known_extensions = false",
                    "allow_community_extensions = false",
                    "allow_persistent_secrets = false",
                    "python_enable_replacements = false",
                    "temp_directory = ''",  # no spill files: in a folder the query could read, or the cwd
                    "enable_external_access = false",
                    "lock_configuration = true"):
        con.execute(f"SET {setting}")


def _refuse(what: str) -> AxwError:
    return AxwError(f"{_READ_ONLY}: {what} (SELECT or EXPLAIN SELECT only)")


def _tree_problem(tree: Any) -> str | None:
    """What in a serialized SELECT (json_serialize_sql) could write or run other SQL; None when nothing."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_NODE") and kind not in SELECT_NODES:
            return f"a {kind.removesuffix('_QUERY_NODE').removesuffix('_NODE')} inside the query is refused"
        if "info_type" in node:
            return f"a {node['info_type'].removesuffix('_INFO')} inside the query is refused"
        if kind == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name not in READ_ONLY_TABLE_FUNCTIONS:
                return f"table function {name}() is refused"
        name = node.get("function_name")
        if isinstance(name, str) and name.lower() in STATE_CHANGING_FUNCTIONS:
            return f"function {name.lower()}() is refused"
        stack.extend(node.values())
    return None


def _check_select(con: duckdb.DuckDBPyConnection, text: str) -> None:
    """Raise AxwError unless ``text`` is one SELECT whose tree holds nothing but reads (``text`` is a whole user
    statement, or the statement an EXPLAIN explains)."""
    statements = con.extract_statements(text)
    kinds = []
    for statement in statements:
        try:
            kinds.append(statement.type.name)
        except ValueError:  # a type the Python API has no name for
            kinds.append("an unnamed statement type")
    if kinds != ["SELECT"]:
        raise _refuse(f"EXPLAIN of {', '.join(kinds) or 'nothing'} is refused")  # a SELECT reaches here whole
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0][0])
    if tree.get("error"):
        raise AxwError(f"SQL error: {str(tree.get('error_message', 'cannot read the query')).splitlines()[0]}")
    problem = _tree_problem(tree.get("statements"))
    if problem:
        raise _refuse(problem)


def _explained(text: str) -> str:
    """The statement an EXPLAIN explains (the text after the keyword); refuses ANALYZE and option lists."""
    starts = [offset for offset, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment]
    words = [_WORD.match(text, offset).group(0).upper() for offset in starts[:2]]
    if len(words) < 2 or words[0] != "EXPLAIN":
        raise _refuse("this EXPLAIN form is refused")
    if words[1] in ("ANALYZE", "ANALYSE", "("):
        raise _refuse("EXPLAIN ANALYZE (or an EXPLAIN option list) is refused: it executes the statement; plain "
                      "EXPLAIN shows the plan")
    return text[starts[1]:]


def read_only_statement(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """The one statement of ``query`` when it can only read (see the module docstring); else a one-line AxwError."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise AxwError(f"SQL error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not statements:
        raise AxwError("the query has no SQL statement (only a comment or whitespace?)")
    if len(statements) > 1:
        raise AxwError(f"give one SQL statement at a time (got {len(statements)})")
    text = statements[0].query
    try:
        kind = statements[0].type
    except ValueError:  # a statement type the Python API has no name for (UPDATE EXTENSIONS in 2.0.1)
        raise _refuse("a statement of a kind DuckDB's Python API does not name is refused") from None
    try:
        if kind == duckdb.StatementType.SELECT:
            _check_select(con, text)
        elif kind == duckdb.StatementType.EXPLAIN:
            _check_select(con, _explained(text))
        elif kind == duckdb.StatementType.MULTI:  # e.g. a PIVOT without an IN list creates a type first
            raise _refuse("a statement that runs several (PIVOT without an IN list?) is refused")
        else:
            raise _refuse(f"{kind.name} statements are refused")
    except duckdb.Error as exc:
        raise AxwError(f"SQL error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return text
