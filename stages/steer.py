"""`axw steer`: steered generations for methods × concepts × factors × instructions into `steering_outputs`.

* Linear methods: add ``factor · a_c · w_c`` at the output of decoder layer L at every position (docs/axbench-recipes.md §2.4, §4.2);
  a_c = the method's max latent score over the concept's latent-eval rows (≤ 0 → 50), so `axw latent` must run
  first. The edit is the shared one in :mod:`axwarehouse.steering.intervention`.
* Methods that steer by prompt (``steering = "prompt"``: the ``prompt`` baseline): an LLM-written steering prompt
  per concept (cached in `llm_calls`), answered by the unsteered model. Its factor is meaningless
  (docs/axbench-recipes.md §7.6), so it is generated once per instruction, at factor 1.0.
* Methods that change the model (``steering = "model"``: LoReFT, LoRA, SFT) ignore the factor too (docs/axbench-recipes.md §2.4), so
  they are also generated once per instruction at ``FACTOR_FREE`` (= 1.0, the prompt baseline's convention); with
  one factor per concept, `steering_best_factor` picks it and the test split is scored at it. Their rows are
  grouped per (method, concept): the method's ``steering_edit`` installs that concept's weights, the concept's
  instructions are generated in padded batches, the edit is removed.
* Every other pending row of every method goes into one pool, sorted by prompt length and generated in padded batches
  (different directions and strengths per row). Each row samples from its own seed
  ``hash(seed, concept_set, concept_id, input_id)``: the same instruction gets the same random stream for every
  method and factor (common random numbers: factor comparisons are paired), and a row's text does not depend on
  batching, so a killed run resumes to the same result.

Incremental by output_id = hash(method, model, layer, concept_set, concept_id, factor, input_id, config_hash);
config_hash covers what defines a generation (method artifact hash, instruction set, n, temperature, max new
tokens, seed). Rows are flushed every ``flush_rows`` rows, each flush one atomic file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.heap import reuse_large_buffers
from axwarehouse.lineage import config_hash
from axwarehouse.model.info import model_info
from axwarehouse.model.loader import DEFAULT_MODEL, check_device, resolve_dtype
from axwarehouse.methods import get, method_names
from axwarehouse.methods.registry import explicit
from axwarehouse.stage_runner import Emit, Work, missing, run_stage, shardable
from axwarehouse.steering.instructions import InstructionSet, load_instructions
from axwarehouse.concept_queries import concept_table, method_hash

AXBENCH_FACTORS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0)
PROMPT_FACTOR = 1.0
FACTOR_FREE = PROMPT_FACTOR  # the one factor of methods whose steering ignores it (steering = "model")
MAGNITUDE_FALLBACK_NONPOSITIVE = 50.0  # docs/axbench-recipes.md §4.2: a max latent <= 0 becomes 50
MAGNITUDE_FALLBACK_MISSING = 1.0  # docs/axbench-recipes.md §4.2: no latent scores at all (steering-only methods)


@dataclass(frozen=True)
class SteerConfig:
    concept_set: str
    methods: tuple[str, ...] = ("diffmean",)
    model: str = DEFAULT_MODEL
    layer: int | None = None
    factors: tuple[float, ...] = AXBENCH_FACTORS
    concepts: tuple[int, ...] = ()  # empty = every concept of the set
    n_inputs: int = 10  # instructions per concept (AxBench steering_num_of_examples)
    temperature: float = 1.0  # 0 = greedy
    max_new_tokens: int = 128
    seed: int = 42  # sampling seed
    method_seed: int = 42  # seed of the trained artifacts to steer with
    batch_size: int | None = None  # rows decoded together (None: the engine's default)
    flush_rows: int = 256
    instructions_file: Path | None = None
    llm: str = "embedded:smollm2"  # writes the prompt baseline's steering prompts
    llm_base_url: str | None = None
    overrides: tuple[str, ...] = ()  # --set METHOD.FIELD=VALUE: which trained config to steer with (as in train)
    device: str = "cpu"  # where the target model generates (not hashed, like train's --device)
    dtype: str = "auto"  # the target model's dtype (auto = bfloat16 where native | bfloat16 | float32)
    # steering/generate.ENGINES (its DEFAULT_ENGINE); not hashed: greedy rows are token-identical across engines
    # (tests/test_engine.py); sampled rows can differ where last-bit differences flip a draw
    engine: str = "hf"


@dataclass
class SteerResult:
    generated: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0
    backend: str = ""

    def summary(self) -> str:
        lines = []
        for m in sorted(set(self.generated) | set(self.skipped)):
            n, s = self.generated.get(m, 0), self.skipped.get(m, 0)
            lines.append(f"steer {m}: {n} generations, {s} already present" if n
                         else f"steer {m}: all {s} generations already present, nothing to do")
        if self.tokens:
            lines.append(f"steer: {self.tokens} new tokens in {self.seconds:.1f}s "
                         f"({self.tokens / max(self.seconds, 1e-9):,.0f} tok/s, intervention via {self.backend})")
        return "\n".join(lines)


@dataclass
class _Pending:
    method: str
    concept_id: int
    factor: float
    input_id: int
    instruction_id: int
    split: str
    instruction: str
    user_text: str  # what the target model is asked (steered input for the prompt baseline)
    direction: np.ndarray | None
    magnitude: float | None
    magnitude_source: str
    steering_prompt: str | None
    method_config_hash: str | None
    config_hash: str
    output_id: str
    seed: int


def row_seed(seed: int, concept_set: str, concept_id: int, input_id: int) -> int:
    """Sampling seed of one (concept, instruction): shared by every method and factor (common random numbers)."""
    h = hashlib.sha256(f"{seed}|{concept_set}|{concept_id}|{input_id}".encode()).hexdigest()
    return int(h[:12], 16)


def output_id(method: str, model: str, layer: int, concept_set: str, concept_id: int, factor: float, input_id: int,
              chash: str) -> str:
    return config_hash([method, model, layer, concept_set, concept_id, float(factor), input_id, chash])


def steer_hash(method_chash: str | None, instr: InstructionSet, cfg: SteerConfig, extra: dict | None = None) -> str:
    """config_hash of a method's generations: what defines them (not factors or concepts, which are keys)."""
    return config_hash({"method_config_hash": method_chash, "instruction_set": instr.name, "n_inputs": cfg.n_inputs,
                        "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                        "edit": "addition", "sampler": "counter", **(extra or {})})


def _factors(cfg: SteerConfig) -> tuple[float, ...]:
    if not cfg.factors:
        raise AxwError("no steering factors given")
    bad = [f for f in cfg.factors if not np.isfinite(f)]
    if bad:
        raise AxwError(f"steering factors must be finite numbers, got {bad}")
    return tuple(sorted(set(float(f) for f in cfg.factors)))


def _validate(cfg: SteerConfig) -> list[str]:
    if cfg.temperature < 0:
        raise AxwError("--temperature must be >= 0 (0 = greedy)")
    if cfg.max_new_tokens < 1:
        raise AxwError("--max-new-tokens must be at least 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise AxwError("--batch-size must be at least 1")
    from axwarehouse.steering.generate import ENGINES

    if cfg.engine not in ENGINES:
        raise AxwError(f"unknown --engine {cfg.engine!r} (choose from {', '.join(ENGINES)})")
    if cfg.engine == "vllm":
        from axwarehouse.steering.vllm_engine import require_vllm

        require_vllm()
    if not cfg.methods:
        raise AxwError("no method given (use --method NAME)")
    explicit_names = explicit(cfg.methods)
    names = [n for n in method_names(list(cfg.methods), evaluation="steering")
             if n in explicit_names or not get(n).steering_baseline]  # baselines run when named
    for n in names:
        if "steering" not in get(n).evaluations:
            raise AxwError(f"method {n!r} is detection-only; it cannot steer")
    return list(dict.fromkeys(names))


@dataclass
class _Plan:
    name: str
    chash: str
    mchash: str | None
    dirs: dict
    mags: dict
    concepts: list[int]
    factors: tuple[float, ...]
    method: object = None  # the Method instance
    artifacts: dict = field(default_factory=dict)  # concept_id -> Artifact (model-editing methods)

    @property
    def kind(self) -> str:
        """How the method steers: its ``steering`` ("addition", "model" or "prompt")."""
        return self.method.steering


def limited_concepts(cat: Catalog, concept_set: str, concept_ids: list[int], limit: int | None) -> list[int]:
    """The ids of ``concept_ids`` among the first ``limit`` concepts of the set (ascending concept_id)."""
    if limit is None:
        return list(concept_ids)
    first = {c for c, _, _ in concept_table(cat, concept_set)[:limit]}
    return [c for c in concept_ids if c in first]


def ensure_instructions(cat: Catalog, run_factory: Callable[[], Run], instr: InstructionSet) -> None:
    """Write the instruction set into `steering_instructions` once."""
    if cat.count("steering_instructions", "instruction_set = ?", [instr.name]):
        return
    n = len(instr.instructions)
    run_factory().write("steering_instructions", pa.table({
        "instruction_set": [instr.name] * n, "instruction_id": pa.array(range(n), pa.int64()),
        "instruction": list(instr.instructions), "source": [instr.source] * n}))


def ensure_inputs(cat: Catalog, run_factory: Callable[[], Run], instr: InstructionSet, concept_set: str,
                  draws: dict[int, list[tuple[int, int, str]]], n: int) -> None:
    """Write the per-concept (input_id, instruction_id, split) draws missing from `steering_inputs`."""
    concept_ids = sorted(draws)
    have = {r[0] for r in cat.sql(
        "SELECT DISTINCT concept_id FROM steering_inputs WHERE concept_set = ? AND instruction_set = ? "
        "AND n_inputs = ?", [concept_set, instr.name, n]).fetchall()}
    rows = [(c, i, iid, s) for c in concept_ids if c not in have for i, iid, s in draws[c]]
    if rows:
        run_factory().write("steering_inputs", pa.table({
            "concept_set": [concept_set] * len(rows), "concept_id": pa.array([r[0] for r in rows], pa.int64()),
            "instruction_set": [instr.name] * len(rows), "n_inputs": pa.array([n] * len(rows), pa.int32()),
            "input_id": pa.array([r[1] for r in rows], pa.int32()),
            "instruction_id": pa.array([r[2] for r in rows], pa.int64()), "split": [r[3] for r in rows]}))


def magnitudes(cat: Catalog, method: str, model: str, layer: int, concept_set: str, chash: str,
               concept_ids: list[int], has_latent: bool) -> dict[int, tuple[float, str]]:
    """a_c per concept (docs/axbench-recipes.md §4.2): max latent score over the concept's latent-eval rows; <= 0 -> 50; missing ->
    1.0 for steering-only methods, an error for methods that have a latent evaluation (run `axw latent` first)."""
    rows = dict(cat.sql(
        "SELECT concept_id, max(score) FROM latent_scores WHERE method = ? AND model = ? AND layer = ? "
        "AND concept_set = ? AND config_hash = ? GROUP BY concept_id",
        [method, model, layer, concept_set, chash]).fetchall())
    out: dict[int, tuple[float, str]] = {}
    missing = [c for c in concept_ids if rows.get(c) is None]
    if missing and has_latent:
        raise AxwError(f"no latent scores of {method} for concept(s) {missing[:10]} of {concept_set!r} at {model} "
                       f"layer {layer}: the steering magnitude is the max latent score (run `axw latent --method "
                       f"{method}` first)")
    for c in concept_ids:
        m = rows.get(c)
        if m is None:
            out[c] = (MAGNITUDE_FALLBACK_MISSING, "none -> 1.0")
        elif m <= 0:
            out[c] = (MAGNITUDE_FALLBACK_NONPOSITIVE, "latent_max<=0 -> 50")
        else:
            out[c] = (float(m), "latent_max")
    return out


def _rows_table(model: str, layer: int, concept_set: str, instr: InstructionSet, done: list[tuple[_Pending, object]]
                ) -> pa.Table:
    def col(fn, typ=None):
        return pa.array([fn(p, o) for p, o in done], typ)

    return pa.table({
        "output_id": col(lambda p, o: p.output_id), "method": col(lambda p, o: p.method),
        "model": col(lambda p, o: model), "layer": col(lambda p, o: layer, pa.int32()),
        "concept_set": col(lambda p, o: concept_set), "concept_id": col(lambda p, o: p.concept_id, pa.int64()),
        "factor": col(lambda p, o: p.factor, pa.float64()), "input_id": col(lambda p, o: p.input_id, pa.int32()),
        "split": col(lambda p, o: p.split), "instruction_set": col(lambda p, o: instr.name),
        "instruction_id": col(lambda p, o: p.instruction_id, pa.int64()),
        "instruction": col(lambda p, o: p.instruction), "steering_prompt": col(lambda p, o: p.steering_prompt),
        "magnitude": col(lambda p, o: p.magnitude, pa.float64()),
        "magnitude_source": col(lambda p, o: p.magnitude_source),
        "strength": col(lambda p, o: None if p.magnitude is None else p.factor * p.magnitude, pa.float64()),
        "seed": col(lambda p, o: p.seed, pa.int64()), "generation": col(lambda p, o: o.text),
        "n_tokens": col(lambda p, o: len(o.token_ids), pa.int32()), "finished": col(lambda p, o: o.finished),
        "method_config_hash": col(lambda p, o: p.method_config_hash),
        "config_hash": col(lambda p, o: p.config_hash),
    })


def _model_plan(cat: Catalog, cfg: SteerConfig, method, mchash: str, model: str, layer: int,
                instr: InstructionSet, concept_ids: list[int]) -> _Plan:
    """A method that edits the model: its trained weights per concept, one factor."""
    from axwarehouse.methods.base import Artifact

    mine = limited_concepts(cat, cfg.concept_set, concept_ids, method.concept_limit())
    arts = cat.arrow("SELECT concept_id, weights_path, extra FROM method_artifacts WHERE method = ? "
                     "AND model = ? AND layer = ? AND concept_set = ? AND config_hash = ?",
                     [method.name, model, layer, cfg.concept_set, mchash]).to_pylist()
    found = {int(r["concept_id"]): Artifact.from_row(r) for r in arts if r["weights_path"]}
    missing_ = [c for c in mine if c not in found]
    if missing_:
        raise AxwError(f"no trained {method.name} weights for concept(s) {missing_[:10]} of {cfg.concept_set!r} "
                       f"at {model} layer {layer} (run `axw train --method {method.name}` first, with the same "
                       "--set options)")
    return _Plan(method.name, steer_hash(mchash, instr, cfg, {"edit": "model", "factor": FACTOR_FREE}), mchash, {},
                 {}, mine, (FACTOR_FREE,), method, found)


def _addition_plan(cat: Catalog, cfg: SteerConfig, method, mchash: str, model: str, layer: int,
                   instr: InstructionSet, concept_ids: list[int], factors: tuple[float, ...]) -> _Plan:
    """A method that adds a direction: its direction and magnitude per concept, every factor."""
    arts = cat.arrow("SELECT concept_id, direction FROM method_artifacts WHERE method = ? AND model = ? "
                     "AND layer = ? AND concept_set = ? AND config_hash = ?",
                     [method.name, model, layer, cfg.concept_set, mchash])
    dirs = {c: np.asarray(d, dtype=np.float32) for c, d in zip(arts.column("concept_id").to_pylist(),
                                                               arts.column("direction").to_pylist())
            if d is not None}
    missing_ = [c for c in concept_ids if c not in dirs]
    if missing_:
        raise AxwError(f"no trained {method.name} direction for concept(s) {missing_[:10]} of {cfg.concept_set!r} "
                       f"at {model} layer {layer} (run `axw train --method {method.name}` first)")
    mags = magnitudes(cat, method.name, model, layer, cfg.concept_set, mchash, concept_ids,
                      "latent" in method.evaluations)
    return _Plan(method.name, steer_hash(mchash, instr, cfg), mchash, dirs, mags, concept_ids, factors, method)


def _plans(cat: Catalog, cfg: SteerConfig, methods: list[str], model: str, layer: int, instr: InstructionSet,
           concept_ids: list[int], factors: tuple[float, ...]) -> list[_Plan]:
    """What each method steers with, before any model or LLM is loaded."""
    from axwarehouse.methods.registry import parse_overrides

    overrides = parse_overrides(cfg.overrides)
    plans: list[_Plan] = []
    for name in methods:
        method = get(name)(overrides.get(name), seed=cfg.method_seed)
        if method.steering == "prompt":  # no trained rows: the generations depend on the LLM that writes prompts
            chash = steer_hash(None, instr, cfg, {"method": name, "llm": cfg.llm})
            plans.append(_Plan(name, chash, None, {}, {}, concept_ids, (PROMPT_FACTOR,), method))
            continue
        args = (cat, cfg, method, method_hash(method), model, layer, instr, concept_ids)
        plans.append(_model_plan(*args) if method.steering == "model" else _addition_plan(*args, factors))
    return plans


def _plan_rows(plan: _Plan, cfg: SteerConfig, model: str, layer: int, instr: InstructionSet,
               draws: dict[int, list[tuple[int, int, str]]]) -> list[_Pending]:
    """Every row of ``plan`` (prompt-baseline rows get their steering prompt later)."""
    rows = []
    for c in plan.concepts:
        for input_id, iid, split in draws[c]:
            text = instr.instructions[iid]
            seed = row_seed(cfg.seed, cfg.concept_set, c, input_id)
            for f in plan.factors:
                oid = output_id(plan.name, model, layer, cfg.concept_set, c, f, input_id, plan.chash)
                direction, (mag, src) = None, (None, "n/a")
                if plan.kind == "addition":
                    direction, (mag, src) = plan.dirs[c], plan.mags[c]
                rows.append(_Pending(plan.name, c, f, input_id, iid, split, text, text, direction, mag, src, None,
                                     plan.mchash, plan.chash, oid, seed))
    return rows


def _todo(cat: Catalog, plans: list[_Plan], cfg: SteerConfig, model: str, layer: int, instr: InstructionSet,
          draws: dict, result: SteerResult) -> list[_Pending]:
    """The rows with no output yet (one anti-join per method on output_id), prompt-steered ones last."""
    pending, prompt_rows = [], []
    for plan in plans:
        rows = _plan_rows(plan, cfg, model, layer, instr, draws)
        todo = set(missing(cat, "SELECT unnest(?::VARCHAR[]) AS output_id", [[r.output_id for r in rows]],
                           "steering_outputs", ("output_id",), {"method": plan.name, "config_hash": plan.chash}
                           ).column("output_id").to_pylist()) if rows else set()
        result.skipped[plan.name] = result.skipped.get(plan.name, 0) + len(rows) - len(todo)
        result.generated[plan.name] = len(todo)
        (prompt_rows if plan.kind == "prompt" else pending).extend(r for r in rows if r.output_id in todo)
    return pending + prompt_rows


@shardable()
def run_steer(cat: Catalog, cfg: SteerConfig, progress: bool = True) -> SteerResult:
    """Generate every (method, concept, factor, instruction) of ``cfg`` that has no output yet."""
    methods = _validate(cfg)
    factors = _factors(cfg)
    check_device(cfg.device)
    resolve_dtype(cfg.dtype, cfg.device)  # an unknown --dtype is a one-line error before any work
    reuse_large_buffers()  # the model's large temporaries reuse heap memory (axwarehouse/heap.py)
    info = model_info(cfg.model)
    layer = info.check_layer(cfg.layer)
    concepts = concept_table(cat, cfg.concept_set, cfg.concepts)
    concept_ids = [c for c, _, _ in concepts]
    instr = load_instructions(cfg.instructions_file)
    draws = {c: instr.draw(c, cfg.n_inputs) for c in concept_ids}  # validates n before anything is written
    result = SteerResult()
    plans = _plans(cat, cfg, methods, info.name, layer, instr, concept_ids, factors)
    pending = _todo(cat, plans, cfg, info.name, layer, instr, draws, result)
    concept_text = {c: t for c, t, _ in concepts}

    def prepare(run: Run) -> None:
        ensure_instructions(cat, lambda: run, instr)
        ensure_inputs(cat, lambda: run, instr, cfg.concept_set, draws, cfg.n_inputs)
        for plan in plans:
            rows = [p for p in pending if p.method == plan.name] if plan.kind == "prompt" else []
            if rows:
                prompts = _steering_prompts(cat, run, cfg, plan.method, {p.concept_id: concept_text[p.concept_id]
                                                                         for p in rows})
                for p in rows:
                    p.steering_prompt = prompts[p.concept_id]
                    p.user_text = plan.method.steered_input(p.steering_prompt, p.instruction)

    config = {"concept_set": cfg.concept_set, "model": info.name, "layer": layer, "factors": list(factors),
              "n_inputs": cfg.n_inputs, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
              "seed": cfg.seed, "instruction_set": instr.name, "methods": {p.name: p.chash for p in plans}}
    edits = {p.name: p for p in plans if p.kind == "model"}
    started = time.perf_counter()
    work = Work("steering_outputs", pending, flush_rows=cfg.flush_rows, flush_on_error=True,
                batches=lambda units, emit: _generate(cat, cfg, info.name, layer, instr, units, result, edits, emit),
                status=lambda: f"{result.tokens / max(time.perf_counter() - started, 1e-9):,.0f} tok/s")
    if pending:
        run_stage(cat, "steer", config, [work], desc="steer", unit="gen", progress=progress, prepare=prepare)
    else:  # nothing to generate: the instruction set and draws are still recorded
        with cat.run("steer", config) as run:
            prepare(run)
    return result


def _steering_prompts(cat: Catalog, run: Run, cfg: SteerConfig, method, concepts: dict[int, str]) -> dict[int, str]:
    """A prompt-steering method's prompts for ``concepts``, written by ``cfg.llm`` (cached in `llm_calls`)."""
    from axwarehouse.llm import LLMClient, ResponseCache, make_backend

    cache = ResponseCache(cat, run, stage="steer")
    backend = make_backend(cfg.llm, base_url=cfg.llm_base_url)
    try:
        with LLMClient(backend, cache) as client:
            return method.steering_prompts(client, concepts, seed=cfg.seed)
    finally:
        cache.flush()


def _generate(cat: Catalog, cfg: SteerConfig, model: str, layer: int, instr: InstructionSet,
              pending: Sequence[_Pending], result: SteerResult, edits: dict[str, _Plan], emit: Emit) -> None:
    """Generate ``pending``: the addition and prompt rows in one pool, then each (method, concept) of a
    model-editing method under its ``steering_edit``; each finished batch goes to ``emit`` as output rows."""
    from contextlib import nullcontext

    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.model.loader import load
    from axwarehouse.methods.base import Context
    from axwarehouse.steering import GenRow, Steerer, generate_rows

    started = time.perf_counter()
    lm = load(cfg.model, resolve_dtype(cfg.dtype, cfg.device))
    if cfg.engine != "vllm" or edits:  # vLLM puts its own copy of the weights on the device
        lm.model.to(cfg.device)
    chat = ChatFormat.of(lm.tokenizer)
    steerer = Steerer(lm.model, layer)
    result.backend = steerer.backend + (f" (pyvene unavailable: {steerer.fallback_reason})"
                                        if steerer.fallback_reason else "")
    if cfg.engine == "vllm":  # addition rows steer inside vLLM's worker; model-editing methods still use hf
        result.backend = f"a forward hook in vLLM's worker ({result.backend} for model edits)"
    rows = [GenRow(tuple(chat.prompt_ids(p.user_text)), p.direction, p.factor * (p.magnitude or 0.0), p.seed)
            for p in pending]

    def on_batch(idx: list[int], outs: list, _seconds: float) -> None:
        result.tokens += sum(len(o.token_ids) for o in outs)
        emit([pending[i] for i in idx], _rows_table(model, layer, cfg.concept_set, instr,
                                                    [(pending[i], o) for i, o in zip(idx, outs)]))

    groups: dict[tuple[str, int] | None, list[int]] = {}
    for i, p in enumerate(pending):
        groups.setdefault((p.method, p.concept_id) if p.method in edits else None, []).append(i)
    ctx = Context(cfg.model, layer, str(next(lm.model.parameters()).device), cat.warehouse, _lm=lm, _chat=chat)
    try:
        for key, group in groups.items():
            if key is None:
                edit = nullcontext()
            else:
                plan = edits[key[0]]
                edit = plan.method.steering_edit(lm, plan.artifacts[key[1]], ctx)
            with edit:  # a model edit may hook the padded prompt of `generate` (LoReFT): those rows use hf
                generate_rows(lm, steerer, [rows[i] for i in group], max_new_tokens=cfg.max_new_tokens,
                              temperature=cfg.temperature, batch_size=cfg.batch_size,
                              on_batch=lambda idx, outs, sec, g=group: on_batch([g[i] for i in idx], outs, sec),
                              engine=cfg.engine if key is None else "hf")
    finally:
        result.seconds = time.perf_counter() - started
