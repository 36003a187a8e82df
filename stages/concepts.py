"""`axw concepts import FILE`: a concept list (CSV with concept[,ref] or JSONL with concept/ref) into `concepts`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from stages.import_axbench import _sae_id, existing_source_hash, validate_concept_set_name


def read_concept_list(path: Path) -> list[dict]:
    """Rows of {concept, ref, genre?} from a CSV (header with `concept`, or bare rows) or JSONL file."""
    if not path.is_file():
        raise AxwError(f"concept list {path} does not exist")
    text = path.read_text(encoding="utf-8")
    rows: list[dict] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AxwError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict) or "concept" not in obj:
                raise AxwError(f"{path}:{lineno}: expected an object with a 'concept' field")
            rows.append({"concept": obj["concept"], "ref": obj.get("ref"), "genre": obj.get("genre")})
    elif path.suffix.lower() == ".csv":
        records = list(csv.reader(text.splitlines()))
        header = [h.strip().lower() for h in records[0]] if records else []
        if "concept" in header:
            idx = {h: i for i, h in enumerate(header)}
            records = records[1:]
        else:
            idx = {"concept": 0, "ref": 1}
        for rec in records:
            if not rec:
                continue
            get = lambda k: rec[idx[k]].strip() if k in idx and idx[k] < len(rec) else None  # noqa: E731
            rows.append({"concept": get("concept"), "ref": get("ref") or None, "genre": get("genre") or None})
    else:
        raise AxwError(f"{path}: unsupported concept list format {path.suffix!r} (use .csv or .jsonl)")
    names = [str(r["concept"] or "").strip() for r in rows]
    if not rows:
        raise AxwError(f"{path} lists no concepts: empty concept set")
    if any(not n for n in names):
        raise AxwError(f"{path}: concept #{names.index('')} has an empty name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AxwError(f"{path}: duplicate concept(s): {', '.join(dupes[:3])}")
    for r, n in zip(rows, names):
        r["concept"] = n
    return rows


def import_concepts(cat: Catalog, path: Path, concept_set: str | None = None) -> dict:
    """Write a concept list as a new concept set (ids 0..n-1 in file order)."""
    path = Path(path)
    concept_set = validate_concept_set_name(concept_set or path.stem)
    rows = read_concept_list(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    previous = existing_source_hash(cat, concept_set)
    if previous == digest:
        return {"concept_set": concept_set, "skipped": True, "concepts": 0}
    if previous is not None:
        raise AxwError(f"concept set {concept_set!r} already exists with different data; choose another --concept-set")
    n = len(rows)
    table = pa.table({
        "concept_set": [concept_set] * n,
        "concept_id": list(range(n)),
        "concept": [r["concept"] for r in rows],
        "genre": [r.get("genre") for r in rows],
        "genres": [[r["genre"]] if r.get("genre") else None for r in rows],
        "ref": [r.get("ref") for r in rows],
        "sae_id": pa.array([_sae_id(r.get("ref")) for r in rows], pa.int64()),
        "source": [f"list:{path.name}"] * n,
        "source_hash": [digest] * n,
    })
    with cat.run("concepts-import", {"file": str(path.resolve()), "concept_set": concept_set}) as run:
        run.write("concepts", table)
    return {"concept_set": concept_set, "skipped": False, "concepts": n, "run_id": run.run_id}
