"""`axw latent`: score latent_eval examples with every trained concept direction, max-pooled into `latent_scores`.

Concept by concept: its own eval examples (positives, negatives, hard negatives) are read from its activation
partition, scored by one matmul with its direction per method, then per example the max over scored tokens
(positions after the chat prefix; AxBench pools over prompt and response). Rows keep the per-token scores for the
highlighter and are written in files of whole concepts, so memory holds one concept, never an all-concept score
matrix. Incremental by (method, config_hash, concept_id).

Methods whose scores are not a matmul plug in through ``Method.scoring``: ``"tokens"`` methods (IG, IxG, SAE-A on a
TopK SAE) return per-token scores of a concept's eval examples, which go through the same ``max_pool``;
``"examples"`` methods (BoW, Prompt) return one score per example (no token scores, max_position −1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import torch

from axwarehouse.activation_store import ActivationReader, TokenMatrix
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.heap import bounded_heap
from axwarehouse.lm.info import model_info
from axwarehouse.lm.loader import DEFAULT_MODEL, check_device, resolve_dtype
from axwarehouse.methods import Method, get, method_names
from axwarehouse.methods.base import Artifact, Context
from axwarehouse.methods.registry import explicit, parse_overrides
from axwarehouse.concept_queries import method_hash

SPLIT = "latent_eval"
FLUSH_ROWS = 20_000  # latent_scores rows per file (whole concepts): few files, little memory


@dataclass(frozen=True)
class LatentConfig:
    concept_set: str
    model: str = DEFAULT_MODEL
    layer: int | None = None
    methods: tuple[str, ...] = ("diffmean",)
    seed: int = 42
    device: str = "cpu"  # for methods that run the model while scoring (IG, IxG, Prompt); not hashed
    dtype: str = "auto"  # that model's dtype (auto = bfloat16 where native | bfloat16 | float32)
    concepts: tuple[int, ...] = ()  # only these concepts (a distributed shard); empty = all
    overrides: tuple[str, ...] = ()  # --set METHOD.FIELD=VALUE, as given to `axw train`


@dataclass
class LatentResult:
    scored: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files_read: int = 0
    rows_read: int = 0
    wall_seconds: float = 0.0

    def summary(self) -> str:
        lines = []
        for m in sorted(set(self.scored) | set(self.skipped)):
            n, s = self.scored.get(m, 0), self.skipped.get(m, 0)
            lines.append(f"latent {m}: {n} concepts scored in {self.seconds.get(m, 0):.2f}s, {s} already scored"
                         if n else f"latent {m}: all {s} concepts already scored, nothing to do")
        return "\n".join(lines)


def max_pool(scores: torch.Tensor, tokens: TokenMatrix, rows: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Max over scored tokens of each example in ``rows`` (example indices) for a [n_tokens] score vector.

    Scores are rounded to 3 decimals first (AxBench does), and the first argmax wins. Returns (max, argmax position,
    per-example scored-token vectors). The one place where pooling happens, for every method.
    """
    s = torch.round(scores, decimals=3).numpy()
    maxes = np.empty(len(rows))
    where = np.empty(len(rows), dtype=np.int32)
    per_example = []
    for k, i in enumerate(rows):
        lo, hi = tokens.offsets[i], tokens.offsets[i + 1]
        keep = ~tokens.is_prefix[lo:hi]
        vals = s[lo:hi][keep]
        per_example.append(vals.astype(np.float32))
        if len(vals) == 0:
            maxes[k], where[k] = np.nan, -1
        else:
            j = int(np.argmax(vals))
            maxes[k], where[k] = float(vals[j]), int(tokens.positions[lo:hi][keep][j])
    return maxes, where, per_example


def _artifacts(cat: Catalog, method: str, model: str, layer: int, concept_set: str, chash: str) -> pa.Table:
    return cat.arrow(
        """SELECT concept_id, direction, bias, max_train_activation, weights_path, extra FROM method_artifacts
           WHERE method = ? AND model = ? AND layer = ? AND concept_set = ? AND config_hash = ?
             AND concept_id NOT IN (SELECT DISTINCT concept_id FROM latent_scores
                                    WHERE method = ? AND model = ? AND layer = ? AND concept_set = ?
                                      AND config_hash = ?)
           ORDER BY concept_id""", [method, model, layer, concept_set, chash] * 2)


def _example_scores(method: Method, row: dict, example_ids: list[int], ctx: Context,
                    texts: dict[int, tuple[str, str]], concept: str) -> dict[str, list]:
    """latent_scores columns of one concept for methods that score whole examples (``scoring = "examples"``)."""
    scores = method.score_examples(Artifact.from_row(row), concept, [texts[e][0] for e in example_ids],
                                   [texts[e][1] for e in example_ids], ctx)
    out: dict[str, list] = {k: [] for k in COLUMNS}
    for e, sc in zip(example_ids, np.asarray(scores, dtype=np.float64)):
        out["concept_id"].append(row["concept_id"])
        out["example_id"].append(e)
        out["score"].append(None if np.isnan(sc) else float(sc))
        out["max_position"].append(-1)
        out["max_token"].append(None)
        out["token_scores"].append(None)
    return out


COLUMNS = ("concept_id", "example_id", "score", "max_position", "max_token", "token_scores")


def score_concept(method: Method, row: dict, tokens: TokenMatrix, ctx: Context | None = None) -> dict[str, list]:
    """latent_scores columns of one artifact row over its concept's eval examples ``tokens`` (read with their token
    strings): a matmul with its direction, or ``score_tokens`` for ``scoring = "tokens"`` methods; pooled by
    ``max_pool`` either way."""
    if method.scoring == "matmul":
        W = torch.tensor(np.asarray(row["direction"], dtype=np.float32)[None, :])
        b = torch.tensor([np.float32(row["bias"] if row["bias"] is not None else 0.0)])
        scores = method.token_scores(tokens.acts, W, b)[:, 0]
    else:
        scores = method.score_tokens(Artifact.from_row(row), tokens, ctx).detach().to("cpu", torch.float32)
    maxes, where, per_ex = max_pool(scores, tokens, np.arange(tokens.n_examples))
    out: dict[str, list] = {k: [] for k in COLUMNS}
    for i, m, p, ts in zip(range(tokens.n_examples), maxes, where, per_ex):
        out["concept_id"].append(row["concept_id"])
        out["example_id"].append(int(tokens.example_ids[i]))
        out["score"].append(None if np.isnan(m) else float(m))
        out["max_position"].append(int(p))
        out["max_token"].append(tokens.tokens[tokens.offsets[i] + p] if p >= 0 else None)
        out["token_scores"].append(ts)
    return out


def _score_rows(method: Method, model: str, layer: int, concept_set: str, chash: str,
                cols: dict[str, list]) -> pa.Table:
    n = len(cols["concept_id"])
    return pa.table({
        "method": [method.name] * n, "model": [model] * n,
        "layer": pa.array([layer] * n, pa.int32()), "concept_set": [concept_set] * n,
        "concept_id": pa.array(cols["concept_id"], pa.int64()), "split": [SPLIT] * n,
        "example_id": pa.array(cols["example_id"], pa.int64()),
        "score": pa.array(cols["score"], pa.float64()),
        "max_position": pa.array(cols["max_position"], pa.int32()),
        "max_token": pa.array(cols["max_token"], pa.string()),
        "token_scores": pa.array([None if t is None else t.tolist() for t in cols["token_scores"]],
                                 pa.list_(pa.float32())),
        "config_hash": [chash] * n,
    })


@bounded_heap()  # per-concept buffers must not fragment the heap (axwarehouse/heap.py)
def run_latent(cat: Catalog, cfg: LatentConfig) -> LatentResult:
    """Score every trained (method, concept) of ``cfg`` that has no latent_scores yet."""
    names = method_names(list(cfg.methods), evaluation="latent")
    check_device(cfg.device)
    resolve_dtype(cfg.dtype, cfg.device)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    result = LatentResult()
    overrides = parse_overrides(cfg.overrides)
    todo = []
    for name in names:
        method = get(name)(overrides.get(name), seed=cfg.seed)
        if "latent" not in method.evaluations:
            raise AxwError(f"method {name!r} is steering-only; it has no latent scores")
        chash = method_hash(method)
        n_art = cat.count("method_artifacts", "method = ? AND model = ? AND layer = ? AND concept_set = ? "
                          "AND config_hash = ?", [name, info.name, layer, cfg.concept_set, chash])
        if n_art == 0 and name not in explicit(cfg.methods):
            continue  # `all` scores what has been trained
        if n_art == 0:
            raise AxwError(f"no trained {name} artifacts for {info.name} layer {layer}, concept set "
                           f"{cfg.concept_set!r} (run `axw train --method {name}` first)")
        arts = _artifacts(cat, name, info.name, layer, cfg.concept_set, chash)
        if cfg.concepts:
            keep = pa.array([int(c) for c in cfg.concepts], pa.int64())
            arts = arts.filter(pa.compute.is_in(arts.column("concept_id"), keep))
            n_art = cat.count("method_artifacts", "method = ? AND model = ? AND layer = ? AND concept_set = ? AND "
                              f"config_hash = ? AND concept_id IN ({', '.join(str(int(c)) for c in cfg.concepts)})",
                              [name, info.name, layer, cfg.concept_set, chash])
        result.skipped[name] = n_art - arts.num_rows
        if arts.num_rows:
            todo.append((method, chash, arts))
    if not todo:
        return result

    reader = ActivationReader(cat.warehouse, info.name, layer, cfg.concept_set, SPLIT, with_tokens=True)
    ctx = Context(cfg.model, layer, cfg.device, cat.warehouse, dtype=resolve_dtype(cfg.dtype, cfg.device))
    texts: dict[int, tuple[str, str]] = {}
    concepts: dict[int, str] = {}
    if any(m.scoring == "examples" for m, _, _ in todo):
        g = cat.arrow("SELECT example_id, input, output FROM generations WHERE concept_set = ? AND split = ?",
                      [cfg.concept_set, SPLIT])
        texts = {int(e): (i or "", o or "") for e, i, o in zip(*(g.column(c).to_pylist()
                                                               for c in ("example_id", "input", "output")))}
        concepts = {int(c): t for c, t in cat.sql("SELECT concept_id, concept FROM concepts WHERE concept_set = ?",
                                                  [cfg.concept_set]).fetchall()}
    gen = cat.arrow("SELECT example_id, concept_id FROM generations WHERE concept_set = ? AND split = ? "
                    "ORDER BY example_id", [cfg.concept_set, SPLIT])
    eval_ids: dict[int, list[int]] = {}
    for e, c in zip(gen.column("example_id").to_pylist(), gen.column("concept_id").to_pylist()):
        eval_ids.setdefault(int(c), []).append(int(e))

    # concept by concept: read one concept's eval partition, score it with every method that needs it, drop it;
    # rows are written in files of whole concepts every FLUSH_ROWS rows (a kill keeps whole concepts only)
    # artifact rows stay Arrow until their concept comes up (500 concepts' directions as Python lists would not)
    rows_of = {m.name: {c: i for i, c in enumerate(arts.column("concept_id").to_pylist())} for m, _, arts in todo}
    arts_of = {m.name: arts for m, _, arts in todo}
    order = sorted({c for rows in rows_of.values() for c in rows})
    config = {"concept_set": cfg.concept_set, "model": info.name, "layer": layer, "seed": cfg.seed,
              "methods": {m.name: h for m, h, _ in todo}}
    pending: dict[str, dict[str, list]] = {m.name: {k: [] for k in COLUMNS} for m, _, _ in todo}
    started = time.perf_counter()
    with cat.run("latent", config) as run:
        def flush(force: bool = False) -> None:
            for method, chash, _ in todo:
                cols = pending[method.name]
                if cols["concept_id"] and (force or len(cols["concept_id"]) >= FLUSH_ROWS):
                    run.write("latent_scores", _score_rows(method, info.name, layer, cfg.concept_set, chash, cols))
                    pending[method.name] = {k: [] for k in COLUMNS}

        for cid in order:
            ex = eval_ids.get(cid, [])
            tokens = None
            if any(m.scoring != "examples" and cid in rows_of[m.name] for m, _, _ in todo) and ex:
                tokens = reader.read([cid], ex).select(np.asarray(ex))  # all there, else a one-line error
            for method, _chash, _arts in todo:
                i = rows_of[method.name].get(cid)
                if i is None:
                    continue
                row = arts_of[method.name].slice(i, 1).to_pylist()[0]
                t0 = time.perf_counter()
                if method.scoring == "examples":
                    cols = _example_scores(method, row, ex, ctx, texts, concepts.get(cid, ""))
                elif tokens is None:
                    cols = {k: [] for k in COLUMNS}
                else:
                    cols = score_concept(method, row, tokens, ctx)
                for k in COLUMNS:
                    pending[method.name][k].extend(cols[k])
                result.scored[method.name] = result.scored.get(method.name, 0) + 1
                result.seconds[method.name] = result.seconds.get(method.name, 0.0) + time.perf_counter() - t0
            flush()
        flush(force=True)
    result.files_read, result.rows_read = reader.files_read, reader.rows_read
    result.wall_seconds = time.perf_counter() - started
    return result
