"""`axw import-axbench DIR`: load an AxBench release folder into `concepts` and `generations`.

Release layout (see docs/axbench-recipes.md §1.7)::

    DIR/generate/metadata.jsonl            one concept per line
    DIR/generate/train_data[_k].parquet    split `train`   (shared negatives have concept_id -1)
    DIR/inference/latent_eval_data.parquet split `latent_eval`

Rows in = rows out; ``hard negative`` becomes ``hard_negative``. Re-importing identical files writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from axwarehouse import schemas
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError

TRAIN_COLUMNS = ["input", "output", "output_concept", "concept_genre", "category", "concept_id"]
CATEGORY_MAP = {"positive": "positive", "negative": "negative", "hard negative": "hard_negative",
                "hard_negative": "hard_negative"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# The model that wrote AxBench's shared negatives is the target model named in the Neuronpedia ref (docs/axbench-recipes.md §1.1).
_REF_MODELS = {"gemma-2-2b": "google/gemma-2-2b-it", "gemma-2-9b-it": "google/gemma-2-9b-it",
               "gemma-2-9b": "google/gemma-2-9b-it", "llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct"}
RELEASE_GENERATOR = "gpt-4o-mini"


def validate_concept_set_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise AxwError(f"invalid concept set name {name!r}: use letters, digits, '_', '.', '-'")
    return name


@dataclass
class Release:
    """A parsed, validated AxBench release folder."""

    root: Path
    concepts: pa.Table
    splits: dict[str, pa.Table]
    source_hash: str


def _sorted_parts(folder: Path, stem: str) -> list[Path]:
    """`stem.parquet`, `stem_1.parquet`, ... in rotation order (AxBench writes 500 concepts per file)."""
    def index(p: Path) -> int:
        suffix = p.stem[len(stem):].lstrip("_")
        return int(suffix) if suffix.isdigit() else 0
    return sorted((p for p in folder.glob(f"{stem}*.parquet") if re.fullmatch(rf"{stem}(_\d+)?", p.stem)), key=index)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise AxwError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc


def _read_metadata(path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AxwError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        missing = [k for k in ("concept_id", "concept") if k not in row]
        if missing:
            raise AxwError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        rows.append(row)
    if not rows:
        raise AxwError(f"{path} lists no concepts: empty concept set")
    ids = [int(r["concept_id"]) for r in rows]
    if sorted(ids) != list(range(len(ids))):
        raise AxwError(f"{path}: concept_id values must be 0..{len(ids) - 1} without gaps or repeats")
    return rows


def _sae_id(ref: str | None) -> int | None:
    if not ref:
        return None
    last = ref.rstrip("/").rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else None


def _target_model(ref: str | None) -> str | None:
    parts = (ref or "").split("/")
    return _REF_MODELS.get(parts[3]) if len(parts) > 3 else None


def read_release(directory: Path) -> Release:
    """Read and validate a release folder; raises AxwError naming the first problem found."""
    root = Path(directory)
    if not root.is_dir():
        raise AxwError(f"AxBench release folder {root} does not exist")
    meta_path = root / "generate" / "metadata.jsonl"
    if not meta_path.is_file():
        raise AxwError(f"missing {meta_path} (expected an AxBench release folder with generate/ and inference/)")
    train_files = _sorted_parts(root / "generate", "train_data")
    if not train_files:
        raise AxwError(f"missing {root / 'generate' / 'train_data.parquet'}")
    eval_files = _sorted_parts(root / "inference", "latent_eval_data")
    if not eval_files:
        raise AxwError(f"missing {root / 'inference' / 'latent_eval_data.parquet'}")

    meta = _read_metadata(meta_path)
    digest = hashlib.sha256(meta_path.read_bytes())
    concept_rows = []
    for row in sorted(meta, key=lambda r: int(r["concept_id"])):
        genres = (row.get("concept_genres_map") or {}).get(row["concept"]) or ["text"]
        concept_rows.append({
            "concept_id": int(row["concept_id"]), "concept": row["concept"], "genre": genres[0],
            "genres": list(genres), "ref": row.get("ref"), "sae_id": _sae_id(row.get("ref")),
        })
    ids = {r["concept_id"] for r in concept_rows}

    splits: dict[str, pa.Table] = {}
    for split, files, extra in (("train", train_files, []), ("latent_eval", eval_files, ["sae_link", "sae_id"])):
        tables = []
        for path in files:
            table = _read_parquet(path)
            missing = [c for c in TRAIN_COLUMNS if c not in table.column_names]
            if missing:
                raise AxwError(f"{path} is missing column(s): {', '.join(missing)}")
            tables.append(table)
            digest.update(path.read_bytes())
        table = pa.concat_tables([t.select([c for c in TRAIN_COLUMNS + extra + ["dataset_category"]
                                            if c in t.column_names]) for t in tables], promote_options="default")
        cats = set(table.column("category").to_pylist())
        unknown = sorted(str(c) for c in cats - set(CATEGORY_MAP))
        if unknown:
            raise AxwError(f"{split} data has unknown category value(s): {', '.join(unknown)}")
        if table.column("concept_id").null_count:
            raise AxwError(f"{split} data has rows without a concept_id")
        bad = sorted({int(c) for c in table.column("concept_id").to_pylist() if c not in ids and c != -1})
        if bad:
            raise AxwError(f"{split} data references concept_id(s) not in metadata.jsonl: {bad[:5]}")
        splits[split] = table
    concepts = pa.Table.from_pylist(concept_rows)
    return Release(root, concepts, splits, digest.hexdigest()[:16])


def _generation_rows(concept_set: str, split: str, table: pa.Table, concepts: pa.Table, source: str) -> pa.Table:
    n = table.num_rows
    cols = table.to_pydict()
    refs = dict(zip(concepts.column("concept_id").to_pylist(), concepts.column("ref").to_pylist()))
    target = next((m for m in (_target_model(r) for r in refs.values()) if m), None)
    category = [CATEGORY_MAP[c] for c in cols["category"]]
    concept_id = [int(c) for c in cols["concept_id"]]
    generator = [target if (cid == -1 and split == "train" and target) else RELEASE_GENERATOR for cid in concept_id]
    sae_link = cols.get("sae_link") or [refs.get(c) for c in concept_id]
    sae_id = cols.get("sae_id") or [_sae_id(refs.get(c)) for c in concept_id]
    return pa.table({
        "concept_set": [concept_set] * n,
        "split": [split] * n,
        "example_id": list(range(n)),
        "concept_id": concept_id,
        "category": category,
        "genre": cols["concept_genre"],
        "input": cols["input"],
        "output": cols["output"],
        "output_concept": cols["output_concept"],
        "dataset_category": cols.get("dataset_category") or ["instruction"] * n,
        "source": [source] * n,
        "generator_model": generator,
        "sae_link": sae_link,
        "sae_id": pa.array(sae_id, pa.int64()),
    })


def existing_source_hash(cat: Catalog, concept_set: str) -> str | None:
    row = cat.con.execute("SELECT any_value(source_hash) FROM concepts WHERE concept_set = ?", [concept_set]).fetchall()[0]
    return row[0] if row else None


def drop_concept_set(cat: Catalog, concept_set: str) -> int:
    """Delete every row of ``concept_set`` from every table that has a concept_set column."""
    return sum(cat.delete_where(table, "concept_set = ?", [concept_set])
               for table, schema in schemas.TABLES.items() if "concept_set" in schema.names)


def import_axbench(cat: Catalog, directory: Path, concept_set: str | None = None, replace: bool = False) -> dict:
    """Import a release. Returns a summary dict (rows per table, or ``skipped`` when already imported)."""
    directory = Path(directory)
    concept_set = validate_concept_set_name(concept_set or directory.resolve().name)
    release = read_release(directory)
    previous = existing_source_hash(cat, concept_set)
    if previous == release.source_hash and not replace:
        return {"concept_set": concept_set, "skipped": True, "concepts": 0, "generations": 0}
    if previous is not None and not replace:
        raise AxwError(f"concept set {concept_set!r} already exists with different data; pass --replace "
                       "or choose another --concept-set")
    source = f"axbench:{release.root.resolve().name}"
    config = {"dir": str(release.root.resolve()), "concept_set": concept_set, "source_hash": release.source_hash}
    with cat.run("import-axbench", config) as run:
        # clears generations orphaned by an import killed between its two writes, and on --replace every
        # derived row of the old data (example ids would otherwise point at different texts)
        drop_concept_set(cat, concept_set)
        n = release.concepts.num_rows
        concepts = release.concepts.append_column("concept_set", pa.array([concept_set] * n)) \
            .append_column("source", pa.array([source] * n)) \
            .append_column("source_hash", pa.array([release.source_hash] * n))
        gens = pa.concat_tables([_generation_rows(concept_set, split, table, release.concepts, source)
                                 for split, table in release.splits.items()])
        # generations first: a crash between the two writes leaves no concepts row, so the re-run redoes both
        run.write("generations", gens)
        run.write("concepts", concepts)
    return {"concept_set": concept_set, "skipped": False, "concepts": n, "generations": gens.num_rows,
            "run_id": run.run_id}
