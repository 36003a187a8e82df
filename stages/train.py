"""`axw train`: fit methods on cached activations (no model forward) into `method_artifacts`.

Incremental by key (method, model, layer, concept_set, concept_id, config_hash): config_hash covers the method's
hyperparameters and seed, so a new method or a new setting trains only its own rows.

Methods declaring ``needs = {"texts"}`` or ``{"model"}`` also get the raw input/output texts of their examples and a
:class:`~axwarehouse.methods.base.Context` whose ``lm`` loads the target model on ``--device`` on first use.
Weights an artifact carries as tensors are written as safetensors under the warehouse folder before its row.

Joint methods (``Method.joint``, e.g. ``reft-r1-joint``) learn every concept of the set at once through ``fit_all``.
Their rows of one config come from one fit: if any concept of the set lacks its row, the whole set is re-fitted and
the config's old rows (and everything computed from them: latent scores, steered generations and their ratings,
see :func:`drop_downstream`) are replaced by the new ones after training, in one file written
atomically (a kill before that leaves the old rows; between the delete and the write, none, so the next run re-fits);
otherwise there is nothing to do. They always cover the whole set, so ``--concepts`` selecting a subset skips them
(an error when named explicitly).

Memory is bounded per concept: the shared negatives' activations are read once, then each concept's own partition
(axwarehouse/activation_store.py) is read when it is trained and dropped after, so peak memory is shared negatives +
one concept (+ the model for methods that run it), whatever the size of the set. Joint methods are the exception:
``fit_all`` sees every concept at once.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from axwarehouse.activation_store import SHARED, ActivationReader, TokenMatrix, merge_tokens
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.heap import bounded_heap
from axwarehouse.lm.info import model_info
from axwarehouse.lm.loader import DEFAULT_MODEL, check_device, resolve_dtype
from axwarehouse.concept_queries import concept_table, method_hash
from axwarehouse.methods import ConceptData, Method, get, method_names
from axwarehouse.methods.registry import explicit, parse_overrides
from axwarehouse.methods.base import Context
from axwarehouse.weights import save_weights, weights_relpath


FLUSH_SECONDS = 60.0


@dataclass(frozen=True)
class TrainConfig:
    concept_set: str
    model: str = DEFAULT_MODEL
    layer: int | None = None
    methods: tuple[str, ...] = ("diffmean",)
    seed: int = 42
    concepts: tuple[int, ...] = ()  # empty = every concept of the set
    device: str = "cpu"  # where methods that need the model train (results do not depend on it: not hashed)
    dtype: str = "auto"  # the model's dtype for methods that run it (auto = bfloat16 where native | bfloat16 | float32)
    overrides: tuple[str, ...] = ()  # --set METHOD.FIELD=VALUE (part of the method's config, so hashed)
    replace: bool = False  # drop this config's artifacts (and all rows computed from them) first, then re-train


@dataclass
class TrainResult:
    trained: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, int] = field(default_factory=dict)  # joint methods: earlier rows of the config replaced
    limited: dict[str, tuple[int, int]] = field(default_factory=dict)  # method -> (limit, concepts left out)
    files_read: int = 0  # activation files opened (tests check that --concepts reads only its partitions)
    rows_read: int = 0

    def summary(self) -> str:
        lines = [f"train {m}: skipped, {why}" for m, why in sorted(self.unavailable.items())]
        lines += [f"train {m}: only the first {n} concepts of the set (max_concepts), {k} left out"
                  for m, (n, k) in sorted(self.limited.items())]
        for m in sorted(set(self.trained) | set(self.skipped)):
            t, s = self.trained.get(m, 0), self.skipped.get(m, 0)
            if m in self.replaced and t:
                lines.append(f"train {m}: {t} concepts trained jointly in {self.seconds.get(m, 0):.1f}s, "
                             f"{self.replaced[m]} earlier rows replaced")
                continue
            lines.append(f"train {m}: {t} concepts trained in {self.seconds.get(m, 0):.1f}s, {s} already present"
                         if t else f"train {m}: all {s} concepts already present, nothing to do")
        return "\n".join(lines)


def training_examples(cat: Catalog, concept_set: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per concept: (example_ids, labels) = its positives + the shared negatives of its genre (docs/axbench-recipes.md §2.2)."""
    table = cat.arrow(
        """SELECT c.concept_id, g.example_id, CASE WHEN g.category = 'positive' THEN 1 ELSE 0 END AS label
           FROM concepts c JOIN generations g
             ON g.concept_set = c.concept_set AND g.split = 'train'
            AND ((g.concept_id = c.concept_id AND g.category = 'positive')
              OR (g.concept_id = -1 AND g.category = 'negative' AND g.genre = coalesce(c.genre, 'text')))
           WHERE c.concept_set = ? ORDER BY c.concept_id, g.example_id""", [concept_set])
    cid = table.column("concept_id").to_numpy()
    ex = table.column("example_id").to_numpy()
    lab = table.column("label").to_numpy()
    return {int(c): (ex[cid == c], lab[cid == c]) for c in np.unique(cid)}


def example_texts(cat: Catalog, concept_set: str) -> dict[int, tuple[str, str]]:
    """example_id -> (input, output) of the train split, for methods that need raw texts or the model."""
    table = cat.arrow("SELECT example_id, input, output FROM generations WHERE concept_set = ? AND split = 'train'",
                      [concept_set])
    return {int(e): (i or "", o or "") for e, i, o in zip(table.column("example_id").to_pylist(),
                                                         table.column("input").to_pylist(),
                                                         table.column("output").to_pylist())}


def _existing(cat: Catalog, method: str, model: str, layer: int, concept_set: str, chash: str) -> set[int]:
    return {r[0] for r in cat.sql(
        "SELECT DISTINCT concept_id FROM method_artifacts WHERE method = ? AND model = ? AND layer = ? "
        "AND concept_set = ? AND config_hash = ?", [method, model, layer, concept_set, chash]).fetchall()}


def _artifact_rows(method: Method, model: str, layer: int, concept_set: str, chash: str,
                   fitted: list[tuple[int, object]]) -> pa.Table:
    return pa.table({
        "method": [method.name] * len(fitted),
        "model": [model] * len(fitted),
        "layer": pa.array([layer] * len(fitted), pa.int32()),
        "concept_set": [concept_set] * len(fitted),
        "concept_id": pa.array([c for c, _ in fitted], pa.int64()),
        "direction": pa.array([None if a.direction is None else np.asarray(a.direction, np.float32).tolist()
                               for _, a in fitted], pa.list_(pa.float32())),
        "bias": pa.array([a.bias for _, a in fitted], pa.float64()),
        "max_train_activation": pa.array([a.max_train_activation for _, a in fitted], pa.float64()),
        "weights_path": pa.array([a.weights_path for _, a in fitted], pa.string()),
        "extra": pa.array([json.dumps({**a.extra, "source_hash": method.source_hash()}, sort_keys=True)
                           for _, a in fitted], pa.string()),
        "config_hash": [chash] * len(fitted),
    })


@bounded_heap()  # per-concept buffers must not fragment the heap (axwarehouse/heap.py)
def run_train(cat: Catalog, cfg: TrainConfig) -> TrainResult:
    """Train every (method, concept) of ``cfg`` that has no artifact yet (joint methods: every concept of the set
    when one lacks its row)."""
    names = method_names(list(cfg.methods))
    check_device(cfg.device)
    resolve_dtype(cfg.dtype, cfg.device)  # an unknown --dtype is a one-line error before any work
    concepts = concept_table(cat, cfg.concept_set, cfg.concepts)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    overrides = parse_overrides(cfg.overrides)
    methods = [get(n)(overrides.get(n), seed=cfg.seed) for n in names]
    result = TrainResult()
    ctx = Context(cfg.model, layer, cfg.device, cat.warehouse, dtype=resolve_dtype(cfg.dtype, cfg.device))
    todo: list[tuple[Method, str, list[tuple[int, str, str]]]] = []
    whole_set = concept_table(cat, cfg.concept_set, ()) if any(m.joint for m in methods) else concepts
    for m in methods:
        why = m.unavailable(ctx)
        if not why and m.joint and {c[0] for c in concepts} != {c[0] for c in whole_set}:
            why = "a joint dictionary is trained over every concept of the set, not a --concepts subset"
        if why:
            if m.name in explicit(cfg.methods):
                raise AxwError(f"method {m.name}: {why}")
            result.unavailable[m.name] = why  # `all` covers what can run here
            continue
        chash = method_hash(m)
        where = "method = ? AND model = ? AND layer = ? AND concept_set = ? AND config_hash = ?"
        params = [m.name, info.name, layer, cfg.concept_set, chash]
        if cfg.replace:
            subset = tuple(cfg.concepts) if cfg.concepts and not m.joint else None
            if subset:
                where += f" AND concept_id IN ({', '.join(str(int(c)) for c in subset)})"
            drop_downstream(cat, m.name, info.name, layer, cfg.concept_set, chash, subset)
            cat.delete_where("method_artifacts", where, params)
        have = _existing(cat, m.name, info.name, layer, cfg.concept_set, chash)
        mine = concepts
        limit = m.concept_limit()
        if limit is not None:  # the first `limit` concepts of the whole set (AxBench's max_concepts)
            first = {c for c, _, _ in concept_table(cat, cfg.concept_set)[:limit]}
            mine = [c for c in concepts if c[0] in first]
            if len(mine) < len(concepts):
                result.limited[m.name] = (limit, len(concepts) - len(mine))
        missing = [c for c in mine if c[0] not in have]
        if m.joint and missing:
            result.skipped[m.name] = 0
            todo.append((m, chash, list(whole_set)))  # one fit for the whole set; old rows replaced after it
            continue
        result.skipped[m.name] = sum(1 for c in mine if c[0] in have)
        if missing:
            todo.append((m, chash, missing))
    if not todo:
        return result

    reader = ActivationReader(cat.warehouse, info.name, layer, cfg.concept_set, "train")
    examples = training_examples(cat, cfg.concept_set)
    shared_ids = np.array([r[0] for r in cat.sql(
        "SELECT example_id FROM generations WHERE concept_set = ? AND split = 'train' AND concept_id = ? "
        "ORDER BY example_id", [cfg.concept_set, SHARED]).fetchall()], dtype=np.int64)
    shared: list[TokenMatrix] = []  # the shared negatives, read on first use and kept for every concept

    def concept_tokens(cid: int, ex_ids: np.ndarray) -> TokenMatrix:
        if not shared:
            shared.append(reader.read([SHARED], shared_ids))
        own = ex_ids[~np.isin(ex_ids, shared_ids)]
        negs = ex_ids[np.isin(ex_ids, shared_ids)]
        parts = [reader.read([cid], own)]
        if len(negs):
            parts.append(shared[0].select(negs))
        return merge_tokens(parts).select(ex_ids) if any(p.n_examples for p in parts) else parts[0].select(ex_ids)

    texts = example_texts(cat, cfg.concept_set) if any(m.needs - {"activations"} for m, _, _ in todo) else {}
    sae_ids = {int(c): s for c, s in cat.sql("SELECT concept_id, sae_id FROM concepts WHERE concept_set = ?",
                                             [cfg.concept_set]).fetchall()}

    def concept_data(m: Method, cid: int, concept: str) -> ConceptData:
        if cid not in examples:
            raise AxwError(f"concept {cid} of {cfg.concept_set!r} has no training examples")
        ex_ids, labels = examples[cid]
        if labels.min() == labels.max():
            raise AxwError(f"concept {cid} of {cfg.concept_set!r} needs both positive and negative "
                           "training examples")
        sub = concept_tokens(cid, ex_ids)
        pairs = [texts[int(e)] for e in sub.example_ids] if m.needs - {"activations"} else None
        return ConceptData(cid, concept, sub, labels, [p[0] for p in pairs] if pairs else None,
                           [p[1] for p in pairs] if pairs else None, ctx, sae_ids.get(cid))

    def save(m: Method, chash: str, cid: int, art) -> None:
        if art.weights is not None:  # the file lands before the row that points at it
            art.weights_path = save_weights(
                cat.warehouse, weights_relpath(m.name, info.name, layer, cfg.concept_set, chash, cid),
                art.weights, art.weights_meta)

    config = {"concept_set": cfg.concept_set, "model": info.name, "layer": layer, "seed": cfg.seed,
              "methods": {m.name: m.params() for m, _, _ in todo},
              # the --set options as given: `axw status` compares rows against the current defaults *with these*
              "overrides": {m.name: overrides[m.name] for m, _, _ in todo if m.name in overrides}}
    from tqdm import tqdm

    # one bar for the whole step (every method's concepts), with ETA; only on a terminal (disable=None)
    bar = tqdm(total=sum(len(missing) for _, _, missing in todo), desc="train", unit="fit", file=sys.stderr,
               disable=None, dynamic_ncols=True)
    with bar, cat.run("train", config) as run:
        for m, chash, missing in todo:
            started = time.perf_counter()
            result.trained[m.name] = 0
            bar.set_postfix_str(m.name)
            if m.joint:
                _train_joint(cat, run, m, chash, info.name, layer, cfg.concept_set, missing, concept_data, save,
                             result)
                result.seconds[m.name] = time.perf_counter() - started
                bar.update(len(missing))
                continue
            fitted = []
            flushed_at = started
            for cid, concept, _genre in missing:
                art = m.fit(concept_data(m, cid, concept))
                save(m, chash, cid, art)
                fitted.append((cid, art))
                bar.update(1)
                # slow methods (minutes per concept) write every FLUSH_SECONDS so a killed run keeps its work;
                # fast ones write one file per method, not one per concept
                if time.perf_counter() - flushed_at > FLUSH_SECONDS:
                    run.write("method_artifacts", _artifact_rows(m, info.name, layer, cfg.concept_set, chash, fitted))
                    result.trained[m.name] += len(fitted)
                    fitted, flushed_at = [], time.perf_counter()
            if fitted:
                run.write("method_artifacts", _artifact_rows(m, info.name, layer, cfg.concept_set, chash, fitted))
                result.trained[m.name] += len(fitted)
            result.seconds[m.name] = time.perf_counter() - started
    result.files_read, result.rows_read = reader.files_read, reader.rows_read
    return result


def drop_downstream(cat: Catalog, method: str, model: str, layer: int, concept_set: str, chash: str,
                    concept_ids: tuple[int, ...] | None = None) -> dict[str, int]:
    """Delete every row computed from one config's artifacts, before those artifacts are replaced.

    Retraining keeps the config hash, so rows derived from the old weights would otherwise look current: the latent
    scores, the steered generations (``method_config_hash``) and their judge ratings and perplexities. The most
    derived go first, so a kill midway leaves only rows whose inputs still exist (`axw latent`, `axw steer` and
    `axw judge` fill the gaps in). Returns rows removed per table.
    """
    key = "method = ? AND model = ? AND layer = ? AND concept_set = ?"
    if concept_ids:
        key += f" AND concept_id IN ({', '.join(str(int(c)) for c in concept_ids)})"
    params = [method, model, layer, concept_set, chash]
    outputs = f"output_id IN (SELECT output_id FROM steering_outputs WHERE {key} AND method_config_hash = ?)"
    removed = {}
    if cat.table_files("steering_outputs"):
        for table in ("judge_scores", "output_perplexity"):
            removed[table] = cat.delete_where(table, outputs, params)
        removed["steering_outputs"] = cat.delete_where("steering_outputs", f"{key} AND method_config_hash = ?",
                                                       params)
    removed["latent_scores"] = cat.delete_where("latent_scores", f"{key} AND config_hash = ?", params)
    return removed


def _train_joint(cat: Catalog, run, m: Method, chash: str, model: str, layer: int, concept_set: str,
                 concepts: list[tuple[int, str, str]], concept_data, save, result: TrainResult) -> None:
    """Fit every concept of the set with ``m.fit_all``, then replace this config's rows by the new ones."""
    datas = {cid: concept_data(m, cid, concept) for cid, concept, _genre in concepts}
    arts = m.fit_all(datas)
    if set(arts) != set(datas):
        raise AxwError(f"method {m.name}: fit_all returned concepts {sorted(arts)}, expected {sorted(datas)}")
    fitted = [(cid, arts[cid]) for cid in sorted(arts)]
    for cid, art in fitted:
        save(m, chash, cid, art)
    table = _artifact_rows(m, model, layer, concept_set, chash, fitted)
    where = "method = ? AND model = ? AND layer = ? AND concept_set = ? AND config_hash = ?"
    params = [m.name, model, layer, concept_set, chash]
    drop_downstream(cat, m.name, model, layer, concept_set, chash)  # what the old rows produced goes first
    result.replaced[m.name] = cat.delete_where("method_artifacts", where, params)
    run.write("method_artifacts", table)  # one file for the method's partition: all new rows appear at once
    result.trained[m.name] = len(fitted)
