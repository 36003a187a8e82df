"""`axw concepts import FILE`: a concept list (TXT, CSV, JSONL, or a Neuronpedia JSON export) into `concepts`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow as pa

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.stages.import_axbench import _sae_id, existing_source_hash, validate_concept_set_name


NEURONPEDIA = "https://www.neuronpedia.org"
_ID_KEYS = ("index", "feature_id", "featureid", "feature", "id")
_LINK_KEYS = ("ref", "link", "url", "neuronpedia_url", "sae_link")
_NAME_KEYS = ("concept", "description", "explanation", "label")


def _pick(obj: dict, keys: tuple[str, ...]):
    low = {str(k).lower(): v for k, v in obj.items()}
    return next((low[k] for k in keys if low.get(k) not in (None, "")), None)


def _from_object(obj: dict, where: str) -> dict:
    """A concept from a JSON/CSV record: AxBench-style {concept, ref, genre} or Neuronpedia-style
    {modelId, layer, index, description[, url]} (ref rebuilt from the ids when no link is given)."""
    name = _pick(obj, _NAME_KEYS)
    if name is None and not any(str(k).lower() in _NAME_KEYS for k in obj):
        raise AxwError(f"{where}: expected a 'concept' or 'description' field")
    ref = _pick(obj, _LINK_KEYS)
    feature = _pick(obj, _ID_KEYS)
    model, layer = _pick(obj, ("modelid", "model_id", "model")), _pick(obj, ("layer", "sae", "saeid"))
    if ref is None and feature is not None and model and layer:
        ref = f"{NEURONPEDIA}/{model}/{layer}/{feature}"
    return {"concept": name, "ref": ref, "genre": _pick(obj, ("genre",)), "feature": feature}


def _read_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AxwError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(data, dict):  # {"explanations": [...]} wrappers
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise AxwError(f"{path}: expected a JSON list of concept objects (e.g. a Neuronpedia explanations export)")
    rows = []
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise AxwError(f"{path}: item {i} is not an object")
        rows.append(_from_object(obj, f"{path}: item {i}"))
    return rows


def _first_per_feature(rows: list[dict]) -> list[dict]:
    """Neuronpedia exports list every explanation of a feature; like AxBench, keep the first per feature link."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = r.get("ref") if r.get("feature") is not None else None
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(r)
    return out


def _read_jsonl(path: Path, text: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AxwError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise AxwError(f"{path}:{lineno}: expected an object with a 'concept' field")
        rows.append(_from_object(obj, f"{path}:{lineno}"))
    return rows


def _read_csv(path: Path, text: str) -> list[dict]:
    records = list(csv.reader(text.splitlines()))
    header = [h.strip().lower() for h in records[0]] if records else []
    if any(h in _NAME_KEYS for h in header):
        return [_from_object(dict(zip(header, (x.strip() for x in rec))), f"{path}:{lineno}")
                for lineno, rec in enumerate(records[1:], start=2) if rec]
    return [{"concept": rec[0].strip(), "ref": (rec[1].strip() if len(rec) > 1 else "") or None, "genre": None}
            for rec in records if rec]


def _checked(path: Path, rows: list[dict]) -> list[dict]:
    """``rows`` with names stripped and genres normalised; empty or duplicate names and unknown genres are errors."""
    names = [str(r["concept"] if r["concept"] is not None else "").strip() for r in rows]
    if not rows:
        raise AxwError(f"{path} lists no concepts: empty concept set")
    if any(not n for n in names):
        raise AxwError(f"{path}: concept #{names.index('') + 1} has an empty name")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise AxwError(f"{path}: duplicate concept {n!r} (entries #{seen[n] + 1} and #{i + 1}); "
                           "concept names must be unique within a set")
        seen[n] = i
    for r, n in zip(rows, names):
        r["concept"] = n
        genre = (r.get("genre") or "").strip().lower() or None
        if genre is not None and genre not in ("text", "code", "math"):
            raise AxwError(f"{path}: concept {n!r} has genre {r.get('genre')!r}; expected text, code or math")
        r["genre"] = genre
        if r.get("ref") is not None:
            r["ref"] = str(r["ref"])
    return rows


def read_concept_list(path: Path) -> list[dict]:
    """Rows of {concept, ref, genre} from a concept list.

    * ``.txt``: one concept per line (blank lines ignored).
    * ``.csv``: header with ``concept`` or ``description`` (plus optional ref/link/url, genre, index/feature_id,
      modelId, layer), or bare ``concept,ref`` rows.
    * ``.jsonl``: one object per line, same fields.
    * ``.json``: a list of such objects, e.g. a Neuronpedia explanations export (modelId, layer, index,
      description); ref = the feature's Neuronpedia URL; only the first explanation per feature is kept.

    Empty names and duplicate names are errors (one line naming the first offender).
    """
    path = Path(path)
    if not path.is_file():
        raise AxwError(f"concept list {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AxwError(f"{path}: not UTF-8 text") from exc
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = _read_jsonl(path, text)
    elif suffix == ".json":
        rows = _read_json(path, text)
    elif suffix == ".csv":
        rows = _read_csv(path, text)
    elif suffix in (".txt", ".lst", ""):
        rows = [{"concept": line.strip(), "ref": None, "genre": None} for line in text.splitlines() if line.strip()]
    else:
        raise AxwError(f"{path}: unsupported concept list format {path.suffix!r} (use .txt, .csv, .jsonl or .json)")
    return _checked(path, _first_per_feature(rows))


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
