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
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from axwarehouse.activation_store import SHARED, ActivationReader, TokenMatrix, merge_tokens
from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.heap import bounded_heap
from axwarehouse.model.info import model_info
from axwarehouse.model.loader import DEFAULT_MODEL, check_device, resolve_dtype
from axwarehouse.concept_queries import concept_table, method_hash
from axwarehouse.methods import ConceptData, Method, get, method_names
from axwarehouse.methods.registry import explicit, parse_overrides
from axwarehouse.methods.base import Context
from axwarehouse.stage_runner import Work, in_list, missing, run_stage, shardable
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


def _unavailable(m: Method, cfg: TrainConfig, ctx: Context, concepts: list, whole_set: list) -> str | None:
    why = m.unavailable(ctx)
    if not why and m.joint and {c[0] for c in concepts} != {c[0] for c in whole_set}:
        why = "a joint dictionary is trained over every concept of the set, not a --concepts subset"
    return why


def _replace(cat: Catalog, cfg: TrainConfig, m: Method, key: dict[str, object]) -> None:
    """--replace: drop the config's artifacts (of --concepts, for per-concept methods) and what came from them."""
    subset = tuple(cfg.concepts) if cfg.concepts and not m.joint else None
    owned, owned_params = in_list("concept_id", subset or ())
    drop_downstream(cat, m.name, key["model"], key["layer"], cfg.concept_set, key["config_hash"], subset)
    cat.delete_where("method_artifacts", "method = ? AND model = ? AND layer = ? AND concept_set = ? "
                     f"AND config_hash = ?{owned}", [key["method"], key["model"], key["layer"], cfg.concept_set,
                                                     key["config_hash"], *owned_params])


def _missing_concepts(cat: Catalog, concept_set: str, ids: list[int], key: dict) -> list[tuple[int, str, str]]:
    """(concept_id, concept, genre) of ``ids`` without an artifact row of the method config ``key``."""
    if not ids:
        return []
    owned, params = in_list("concept_id", ids)
    rows = missing(cat, "SELECT concept_id, concept, coalesce(genre, 'text') AS genre FROM concepts "
                        f"WHERE concept_set = ?{owned}", [concept_set, *params], "method_artifacts", ("concept_id",),
                   {"concept_set": concept_set, **key}, order_by=("concept_id",))
    return [(int(c), t, g) for c, t, g in zip(*(rows.column(n).to_pylist() for n in ("concept_id", "concept", "genre")))]


def _plan(cat: Catalog, cfg: TrainConfig, methods: list[Method], concepts: list, model: str, layer: int,
          ctx: Context, result: TrainResult) -> list[tuple[Method, str, list[tuple[int, str, str]]]]:
    """(method, config hash, concepts to fit) per method with work; --replace deletes first."""
    whole_set = concept_table(cat, cfg.concept_set, ()) if any(m.joint for m in methods) else concepts
    todo = []
    for m in methods:
        why = _unavailable(m, cfg, ctx, concepts, whole_set)
        if why:
            if m.name in explicit(cfg.methods):
                raise AxwError(f"method {m.name}: {why}")
            result.unavailable[m.name] = why  # `all` covers what can run here
            continue
        chash = method_hash(m)
        key = {"method": m.name, "model": model, "layer": layer, "config_hash": chash}
        if cfg.replace:
            _replace(cat, cfg, m, key)
        mine = concepts
        limit = m.concept_limit()
        if limit is not None:  # the first `limit` concepts of the whole set (AxBench's max_concepts)
            first = {c for c, _, _ in concept_table(cat, cfg.concept_set)[:limit]}
            mine = [c for c in concepts if c[0] in first]
            if len(mine) < len(concepts):
                result.limited[m.name] = (limit, len(concepts) - len(mine))
        todo_m = _missing_concepts(cat, cfg.concept_set, [c[0] for c in mine], key)
        if m.joint and todo_m:
            result.skipped[m.name] = 0
            todo.append((m, chash, list(whole_set)))  # one fit for the whole set; old rows replaced after it
            continue
        result.skipped[m.name] = len(mine) - len(todo_m)
        if todo_m:
            todo.append((m, chash, todo_m))
    return todo


class _TrainInputs:
    """What a fit reads: a concept's positives + its genre's shared negatives (read once, kept), their texts for
    methods that need them, the concept's SAE id."""

    def __init__(self, cat: Catalog, cfg: TrainConfig, model: str, layer: int, ctx: Context, texts: bool) -> None:
        self.concept_set, self.ctx = cfg.concept_set, ctx
        self.reader = ActivationReader(cat.warehouse, model, layer, cfg.concept_set, "train")
        self.examples = training_examples(cat, cfg.concept_set)
        self.shared_ids = np.array([r[0] for r in cat.sql(
            "SELECT example_id FROM generations WHERE concept_set = ? AND split = 'train' AND concept_id = ? "
            "ORDER BY example_id", [cfg.concept_set, SHARED]).fetchall()], dtype=np.int64)
        self.shared: TokenMatrix | None = None  # the shared negatives, read on first use and kept
        self.texts = example_texts(cat, cfg.concept_set) if texts else {}
        self.sae_ids = {int(c): s for c, s in cat.sql(
            "SELECT concept_id, sae_id FROM concepts WHERE concept_set = ?", [cfg.concept_set]).fetchall()}

    def tokens(self, cid: int, ex_ids: np.ndarray) -> TokenMatrix:
        if self.shared is None:
            self.shared = self.reader.read([SHARED], self.shared_ids)
        own = ex_ids[~np.isin(ex_ids, self.shared_ids)]
        negs = ex_ids[np.isin(ex_ids, self.shared_ids)]
        parts = [self.reader.read([cid], own)]
        if len(negs):
            parts.append(self.shared.select(negs))
        return merge_tokens(parts).select(ex_ids) if any(p.n_examples for p in parts) else parts[0].select(ex_ids)

    def data(self, m: Method, cid: int, concept: str) -> ConceptData:
        """The inputs of one fit of ``m`` on concept ``cid``."""
        if cid not in self.examples:
            raise AxwError(f"concept {cid} of {self.concept_set!r} has no training examples")
        ex_ids, labels = self.examples[cid]
        if labels.min() == labels.max():
            raise AxwError(f"concept {cid} of {self.concept_set!r} needs both positive and negative "
                           "training examples")
        sub = self.tokens(cid, ex_ids)
        pairs = [self.texts[int(e)] for e in sub.example_ids] if m.needs - {"activations"} else None
        return ConceptData(cid, concept, sub, labels, [p[0] for p in pairs] if pairs else None,
                           [p[1] for p in pairs] if pairs else None, self.ctx, self.sae_ids.get(cid))


def _method_work(cat: Catalog, m: Method, chash: str, concepts: list, inputs: _TrainInputs, model: str, layer: int,
                 result: TrainResult) -> Work:
    """The units of one method: one per concept, or one joint fit of the whole set that replaces the config's rows."""

    def save(cid: int, art) -> None:
        if art.weights is not None:  # the file lands before the row that points at it
            art.weights_path = save_weights(
                cat.warehouse, weights_relpath(m.name, model, layer, inputs.concept_set, chash, cid),
                art.weights, art.weights_meta)

    def fit(unit: tuple[int, str, str], _inputs: None) -> pa.Table:
        cid, concept, _genre = unit
        art = m.fit(inputs.data(m, cid, concept))
        save(cid, art)
        return _artifact_rows(m, model, layer, inputs.concept_set, chash, [(cid, art)])

    def fit_all(_unit: str, _inputs: None) -> pa.Table:
        datas = {cid: inputs.data(m, cid, concept) for cid, concept, _genre in concepts}
        arts = m.fit_all(datas)
        if set(arts) != set(datas):
            raise AxwError(f"method {m.name}: fit_all returned concepts {sorted(arts)}, expected {sorted(datas)}")
        for cid in sorted(arts):
            save(cid, arts[cid])
        return _artifact_rows(m, model, layer, inputs.concept_set, chash, [(c, arts[c]) for c in sorted(arts)])

    def replace_old(_unit: str) -> None:  # what the old rows produced goes first, then the rows themselves
        drop_downstream(cat, m.name, model, layer, inputs.concept_set, chash)
        result.replaced[m.name] = cat.delete_where(
            "method_artifacts", "method = ? AND model = ? AND layer = ? AND concept_set = ? AND config_hash = ?",
            [m.name, model, layer, inputs.concept_set, chash])

    def done(_unit: object, seconds: float) -> None:
        result.trained[m.name] += len(concepts) if m.joint else 1
        result.seconds[m.name] += seconds

    result.trained[m.name], result.seconds[m.name] = 0, 0.0
    if m.joint:  # one file for the method's partition: all new rows appear at once
        return Work("method_artifacts", [m.name], compute=fit_all, weight=lambda _u: len(concepts),
                    before_write=replace_old, done=done, label=m.name)
    # slow methods (minutes per concept) write every FLUSH_SECONDS so a killed run keeps its work; fast ones write
    # one file per method, not one per concept
    return Work("method_artifacts", concepts, compute=fit, flush_seconds=FLUSH_SECONDS, done=done, label=m.name)


def _shard_check(cfg: TrainConfig) -> None:
    from axwarehouse.methods import get, method_names

    joint = [n for n in method_names(list(cfg.methods)) if get(n).joint]
    if joint:
        raise AxwError(f"joint methods ({', '.join(joint)}) fit every concept at once in one process: train them "
                       "without --workers / --ray-address")
    if cfg.replace:
        raise AxwError("--replace deletes rows, which only a single process may do: run it without --workers")


@shardable(check=_shard_check)
@bounded_heap()  # per-concept buffers must not fragment the heap (axwarehouse/heap.py)
def run_train(cat: Catalog, cfg: TrainConfig) -> TrainResult:
    """Train every (method, concept) of ``cfg`` that has no artifact yet (joint methods: every concept of the set
    when one lacks its row)."""
    names = method_names(list(cfg.methods))
    check_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, cfg.device)  # an unknown --dtype is a one-line error before any work
    concepts = concept_table(cat, cfg.concept_set, cfg.concepts)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    overrides = parse_overrides(cfg.overrides)
    methods = [get(n)(overrides.get(n), seed=cfg.seed) for n in names]
    result = TrainResult()
    ctx = Context(cfg.model, layer, cfg.device, cat.warehouse, dtype=dtype)
    todo = _plan(cat, cfg, methods, concepts, info.name, layer, ctx, result)
    if not todo:
        return result
    inputs = _TrainInputs(cat, cfg, info.name, layer, ctx, any(m.needs - {"activations"} for m, _, _ in todo))
    config = {"concept_set": cfg.concept_set, "model": info.name, "layer": layer, "seed": cfg.seed,
              "methods": {m.name: m.params() for m, _, _ in todo},
              # the --set options as given: `axw status` compares rows against the current defaults *with these*
              "overrides": {m.name: overrides[m.name] for m, _, _ in todo if m.name in overrides}}
    works = [_method_work(cat, m, chash, concepts, inputs, info.name, layer, result) for m, chash, concepts in todo]
    run_stage(cat, "train", config, works, desc="train", unit="fit")
    result.files_read, result.rows_read = inputs.reader.files_read, inputs.reader.rows_read
    return result


def drop_downstream(cat: Catalog, method: str, model: str, layer: int, concept_set: str, chash: str,
                    concept_ids: tuple[int, ...] | None = None) -> dict[str, int]:
    """Delete every row computed from one config's artifacts, before those artifacts are replaced.

    Retraining keeps the config hash, so rows derived from the old weights would otherwise look current: the latent
    scores, the steered generations (``method_config_hash``) and their judge ratings and perplexities. The most
    derived go first, so a kill midway leaves only rows whose inputs still exist (`axw latent`, `axw steer` and
    `axw judge` fill the gaps in). Returns rows removed per table.
    """
    owned, owned_params = in_list("concept_id", concept_ids or ())
    key = f"method = ? AND model = ? AND layer = ? AND concept_set = ?{owned}"
    params = [method, model, layer, concept_set, *owned_params, chash]
    outputs = f"output_id IN (SELECT output_id FROM steering_outputs WHERE {key} AND method_config_hash = ?)"
    removed = {}
    if cat.table_files("steering_outputs"):
        for table in ("judge_scores", "output_perplexity"):
            removed[table] = cat.delete_where(table, outputs, params)
        removed["steering_outputs"] = cat.delete_where("steering_outputs", f"{key} AND method_config_hash = ?",
                                                       params)
    removed["latent_scores"] = cat.delete_where("latent_scores", f"{key} AND config_hash = ?", params)
    return removed
