"""`axw latent`: score latent_eval examples with every trained concept direction, max-pooled into `latent_scores`.

Per method: one matmul of the eval token matrix against all of its concept directions, then per example the max
over scored tokens (positions after the chat prefix; AxBench pools over prompt and response, spec §3.1). Each
concept's row is written for its own eval examples (positives, negatives, hard negatives), with the per-token
scores kept for the highlighter. Incremental by (method, config_hash, concept_id).

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

from axwarehouse.activation_store import TokenMatrix, load_tokens
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.lm.info import model_info
from axwarehouse.lm.loader import DEFAULT_MODEL, check_device
from axwarehouse.methods import Method, get, method_names
from axwarehouse.methods.base import Artifact, Context
from axwarehouse.methods.registry import explicit, parse_overrides
from axwarehouse.concept_queries import method_hash

SPLIT = "latent_eval"


@dataclass(frozen=True)
class LatentConfig:
    concept_set: str
    model: str = DEFAULT_MODEL
    layer: int | None = None
    methods: tuple[str, ...] = ("diffmean",)
    seed: int = 42
    device: str = "cpu"  # for methods that run the model while scoring (IG, IxG, Prompt); not hashed
    overrides: tuple[str, ...] = ()  # --set METHOD.FIELD=VALUE, as given to `axw train`


@dataclass
class LatentResult:
    scored: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

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


def _example_scores(method: Method, arts: pa.Table, tokens: TokenMatrix, eval_rows: dict[int, np.ndarray],
                    ctx: Context, texts: dict[int, tuple[str, str]], concepts: dict[int, str]) -> dict[str, list]:
    """latent_scores columns for methods that score whole examples (``scoring = "examples"``)."""
    out: dict[str, list] = {k: [] for k in ("concept_id", "example_id", "score", "max_position", "max_token",
                                            "token_scores")}
    for row in arts.to_pylist():
        cid = row["concept_id"]
        rows = eval_rows.get(cid, np.zeros(0, dtype=int))
        ex = [int(tokens.example_ids[i]) for i in rows]
        scores = method.score_examples(Artifact.from_row(row), concepts.get(cid, ""), [texts[e][0] for e in ex],
                                       [texts[e][1] for e in ex], ctx)
        for e, sc in zip(ex, np.asarray(scores, dtype=np.float64)):
            out["concept_id"].append(cid)
            out["example_id"].append(e)
            out["score"].append(None if np.isnan(sc) else float(sc))
            out["max_position"].append(-1)
            out["max_token"].append(None)
            out["token_scores"].append(None)
    return out


def score_method(method: Method, arts: pa.Table, tokens: TokenMatrix, eval_rows: dict[int, np.ndarray],
                 tok_strings: list[str], ctx: Context | None = None) -> dict[str, list]:
    """latent_scores columns for every artifact row of one method: one matmul over all its concepts, or per concept
    through ``score_tokens`` for ``scoring = "tokens"`` methods; pooled by ``max_pool`` either way."""
    cids = arts.column("concept_id").to_pylist()
    if method.scoring == "matmul":
        W = torch.tensor(np.stack(arts.column("direction").to_numpy(zero_copy_only=False)), dtype=torch.float32)
        b = torch.tensor(arts.column("bias").to_numpy(zero_copy_only=False).astype(np.float32))
        scores = method.token_scores(tokens.acts, W, b)  # [n_tokens, n_concepts]
    out: dict[str, list] = {k: [] for k in ("concept_id", "example_id", "score", "max_position", "max_token",
                                            "token_scores")}
    for col, cid in enumerate(cids):
        rows = eval_rows.get(cid, np.zeros(0, dtype=int))
        if method.scoring == "matmul":
            maxes, where, per_ex = max_pool(scores[:, col], tokens, rows)
        else:
            sub = tokens.select(tokens.example_ids[rows]) if len(rows) else None
            if sub is None:
                continue
            art = Artifact.from_row(arts.slice(col, 1).to_pylist()[0])
            sub_scores = method.score_tokens(art, sub, ctx).detach().to("cpu", torch.float32)
            # map back: sub's examples are tokens' rows `rows` in ascending order; pool in sub coordinates
            order = np.argsort(tokens.example_ids[rows], kind="stable")
            rows = rows[order]
            maxes, where, per_ex = max_pool(sub_scores, sub, np.arange(sub.n_examples))
        for i, m, p, ts in zip(rows, maxes, where, per_ex):
            out["concept_id"].append(cid)
            out["example_id"].append(int(tokens.example_ids[i]))
            out["score"].append(None if np.isnan(m) else float(m))
            out["max_position"].append(int(p))
            out["max_token"].append(tok_strings[tokens.offsets[i] + p] if p >= 0 else None)
            out["token_scores"].append(ts)
    return out


def run_latent(cat: Catalog, cfg: LatentConfig) -> LatentResult:
    """Score every trained (method, concept) of ``cfg`` that has no latent_scores yet."""
    names = method_names(list(cfg.methods), evaluation="latent")
    check_device(cfg.device)
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
        result.skipped[name] = n_art - arts.num_rows
        if arts.num_rows:
            todo.append((method, chash, arts))
    if not todo:
        return result

    tokens = load_tokens(cat, info.name, layer, cfg.concept_set, SPLIT, with_tokens=True)
    ctx = Context(cfg.model, layer, cfg.device, cat.warehouse)
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
    index = {int(e): i for i, e in enumerate(tokens.example_ids)}
    eval_rows: dict[int, list[int]] = {}
    for e, c in zip(gen.column("example_id").to_pylist(), gen.column("concept_id").to_pylist()):
        if e not in index:
            raise AxwError("some latent_eval examples have no cached activations (run `axw activations`)")
        eval_rows.setdefault(int(c), []).append(index[e])
    rows_by_concept = {c: np.asarray(v) for c, v in eval_rows.items()}

    config = {"concept_set": cfg.concept_set, "model": info.name, "layer": layer, "seed": cfg.seed,
              "methods": {m.name: h for m, h, _ in todo}}
    with cat.run("latent", config) as run:
        for method, chash, arts in todo:
            started = time.perf_counter()
            if method.scoring == "examples":
                cols = _example_scores(method, arts, tokens, rows_by_concept, ctx, texts, concepts)
            else:
                cols = score_method(method, arts, tokens, rows_by_concept, tokens.tokens, ctx)
            n = len(cols["concept_id"])
            table = pa.table({
                "method": [method.name] * n, "model": [info.name] * n,
                "layer": pa.array([layer] * n, pa.int32()), "concept_set": [cfg.concept_set] * n,
                "concept_id": pa.array(cols["concept_id"], pa.int64()), "split": [SPLIT] * n,
                "example_id": pa.array(cols["example_id"], pa.int64()),
                "score": pa.array(cols["score"], pa.float64()),
                "max_position": pa.array(cols["max_position"], pa.int32()),
                "max_token": pa.array(cols["max_token"], pa.string()),
                "token_scores": pa.array([None if t is None else t.tolist() for t in cols["token_scores"]],
                                         pa.list_(pa.float32())),
                "config_hash": [chash] * n,
            })
            run.write("latent_scores", table)
            result.scored[method.name] = arts.num_rows
            result.seconds[method.name] = time.perf_counter() - started
    return result
