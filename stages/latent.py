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
import torch

from axwarehouse.activation_store import ActivationReader, TokenMatrix
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.heap import bounded_heap
from axwarehouse.model.info import model_info
from axwarehouse.model.loader import DEFAULT_MODEL, check_device, resolve_dtype
from axwarehouse.methods import Method, get, method_names
from axwarehouse.methods.base import Artifact, Context
from axwarehouse.methods.registry import explicit, parse_overrides
from axwarehouse.concept_queries import method_hash
from axwarehouse.stage_runner import Work, in_list, missing, run_stage, shardable

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


def _artifacts(cat: Catalog, method: str, model: str, layer: int, concept_set: str, chash: str,
               concepts: tuple[int, ...] = ()) -> pa.Table:
    """Artifact rows of one method config (of ``concepts``, when given) with no latent scores yet."""
    owned, params = in_list("concept_id", concepts)
    key = {"method": method, "model": model, "layer": layer, "concept_set": concept_set, "config_hash": chash}
    return missing(cat, "SELECT concept_id, direction, bias, max_train_activation, weights_path, extra "
                        "FROM method_artifacts WHERE method = ? AND model = ? AND layer = ? AND concept_set = ? "
                        f"AND config_hash = ?{owned}", [*key.values(), *params], "latent_scores", ("concept_id",),
                   key, order_by=("concept_id",))


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


def _plan(cat: Catalog, cfg: LatentConfig, model: str, layer: int, result: LatentResult
          ) -> list[tuple[Method, str, pa.Table]]:
    """(method, config hash, artifact rows still to score) per method of ``cfg``; counts what is already scored."""
    overrides = parse_overrides(cfg.overrides)
    owned, owned_params = in_list("concept_id", cfg.concepts)
    todo = []
    for name in method_names(list(cfg.methods), evaluation="latent"):
        method = get(name)(overrides.get(name), seed=cfg.seed)
        if "latent" not in method.evaluations:
            raise AxwError(f"method {name!r} is steering-only; it has no latent scores")
        chash = method_hash(method)
        key = "method = ? AND model = ? AND layer = ? AND concept_set = ? AND config_hash = ?"
        params = [name, model, layer, cfg.concept_set, chash]
        n_art = cat.count("method_artifacts", key, params)  # of the whole set: is the method trained at all?
        if n_art == 0 and name not in explicit(cfg.methods):
            continue  # `all` scores what has been trained
        if n_art == 0:
            raise AxwError(f"no trained {name} artifacts for {model} layer {layer}, concept set "
                           f"{cfg.concept_set!r} (run `axw train --method {name}` first)")
        arts = _artifacts(cat, name, model, layer, cfg.concept_set, chash, cfg.concepts)
        if cfg.concepts:
            n_art = cat.count("method_artifacts", key + owned, [*params, *owned_params])
        result.skipped[name] = n_art - arts.num_rows
        if arts.num_rows:
            todo.append((method, chash, arts))
    return todo


class _EvalInputs:
    """A concept's eval examples: their ids, token matrix (read from its partition) and, for methods that score
    whole examples, their texts."""

    def __init__(self, cat: Catalog, cfg: LatentConfig, model: str, layer: int, todo: list) -> None:
        self.reader = ActivationReader(cat.warehouse, model, layer, cfg.concept_set, SPLIT, with_tokens=True)
        self.texts: dict[int, tuple[str, str]] = {}
        self.concepts: dict[int, str] = {}
        if any(m.scoring == "examples" for m, _, _ in todo):
            g = cat.arrow("SELECT example_id, input, output FROM generations WHERE concept_set = ? AND split = ?",
                          [cfg.concept_set, SPLIT])
            self.texts = {int(e): (i or "", o or "") for e, i, o in
                          zip(*(g.column(c).to_pylist() for c in ("example_id", "input", "output")))}
            self.concepts = {int(c): t for c, t in cat.sql(
                "SELECT concept_id, concept FROM concepts WHERE concept_set = ?", [cfg.concept_set]).fetchall()}
        gen = cat.arrow("SELECT example_id, concept_id FROM generations WHERE concept_set = ? AND split = ? "
                        "ORDER BY example_id", [cfg.concept_set, SPLIT])
        self.eval_ids: dict[int, list[int]] = {}
        for e, c in zip(gen.column("example_id").to_pylist(), gen.column("concept_id").to_pylist()):
            self.eval_ids.setdefault(int(c), []).append(int(e))
        # which concepts some method scores token by token: only those partitions are read
        self.token_concepts = {c for m, _, arts in todo if m.scoring != "examples"
                               for c in arts.column("concept_id").to_pylist()}

    def tokens(self, cid: int) -> TokenMatrix | None:
        """The concept's eval token matrix (all there, else a one-line error); None when no method needs it."""
        ex = self.eval_ids.get(cid, [])
        if cid not in self.token_concepts or not ex:
            return None
        return self.reader.read([cid], ex).select(np.asarray(ex))


@shardable()
@bounded_heap()  # per-concept buffers must not fragment the heap (axwarehouse/heap.py)
def run_latent(cat: Catalog, cfg: LatentConfig) -> LatentResult:
    """Score every trained (method, concept) of ``cfg`` that has no latent_scores yet."""
    check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    result = LatentResult()
    todo = _plan(cat, cfg, info.name, layer, result)
    if not todo:
        return result
    inputs = _EvalInputs(cat, cfg, info.name, layer, todo)
    ctx = Context(cfg.model, layer, cfg.device, cat.warehouse, dtype=dtype)
    # artifact rows stay Arrow until their concept comes up (500 concepts' directions as Python lists would not)
    rows_of = [{c: i for i, c in enumerate(arts.column("concept_id").to_pylist())} for _, _, arts in todo]
    # units concept by concept: one concept's eval partition is read, scored by every method, dropped
    units = sorted((cid, k) for k, rows in enumerate(rows_of) for cid in rows)

    def score(unit: tuple[int, int], tokens: TokenMatrix | None) -> pa.Table:
        cid, k = unit
        method, chash, arts = todo[k]
        row = arts.slice(rows_of[k][cid], 1).to_pylist()[0]
        if method.scoring == "examples":
            cols = _example_scores(method, row, inputs.eval_ids.get(cid, []), ctx, inputs.texts,
                                   inputs.concepts.get(cid, ""))
        else:
            cols = {c: [] for c in COLUMNS} if tokens is None else score_concept(method, row, tokens, ctx)
        return _score_rows(method, info.name, layer, cfg.concept_set, chash, cols)

    def done(unit: tuple[int, int], seconds: float) -> None:
        name = todo[unit[1]][0].name
        result.scored[name] = result.scored.get(name, 0) + 1
        result.seconds[name] = result.seconds.get(name, 0.0) + seconds

    config = {"concept_set": cfg.concept_set, "model": info.name, "layer": layer, "seed": cfg.seed,
              "methods": {m.name: h for m, h, _ in todo}}
    started = time.perf_counter()
    work = Work("latent_scores", units, compute=score, concept=lambda u: u[0], read=inputs.tokens, done=done,
                flush_rows=FLUSH_ROWS)
    run_stage(cat, "latent", config, [work], desc="latent", unit="concept")
    result.files_read, result.rows_read = inputs.reader.files_read, inputs.reader.rows_read
    result.wall_seconds = time.perf_counter() - started
    return result
