"""`axw judge`: rate every steered generation on concept, instruction relevance and fluency (0–2) with an LLM
judge into `judge_scores`, and its perplexity under the unsteered target model into `output_perplexity`.

* Calls go through the cached LLM client (`llm_calls`): a re-run, or a second judge run over the same outputs,
  asks nothing again. One attempt per rating (as AxBench): a bad answer is recorded, not redrawn. Transport
  failures write no row, so the next run retries them.
* Unparseable answers keep the reason and the raw text; the table stores no score for them (NULL) and the steering
  views apply the rule: scored 0 as AxBench does (default), or left out (``--judge-failures drop``). The embedded
  judge's rating slot is decoded under constraint instead (``score_source = 'constrained'``, see
  :mod:`axwarehouse.steering.judge`), which also gives every embedded rating an expected score Σ p(k)·k.
* The rubric is ours by default; ``--rubric-from PATH`` reads AxBench's own templates from a checkout
  (:mod:`axwarehouse.steering.rubric`). Each row names its rubric; ``judge_configs`` records the settings.
* Incremental by (output_id, judge, criterion, config_hash); config_hash = the rubric's templates (and its name
  when not ours), temperature, max tokens and seed. Work is written in chunks, each one atomic file (plus the
  cache rows it paid for).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.lm.loader import check_device, resolve_dtype
from axwarehouse.lineage import config_hash
from axwarehouse.stage_runner import shardable
from axwarehouse.steering.judge import CRITERIA
from axwarehouse.steering.rubric import Rubric, ours, read_axbench_rubric
from stages.judge_rater import Item, LLMJudge, Rating, check_criteria, is_proxy, llm_judge_name, open_llm_judge

DEFAULT_JUDGE = "proxy"  # offline, measured (stages.judge_proxy); embedded:smollm2 is the offline LLM judge
AXBENCH_JUDGE = "openai:gpt-4o-mini"


@dataclass(frozen=True)
class JudgeConfig:
    judge: str = DEFAULT_JUDGE
    base_url: str | None = None
    concept_set: str | None = None  # None = every concept set
    methods: tuple[str, ...] = ()  # empty = every method with outputs
    criteria: tuple[str, ...] = CRITERIA
    temperature: float = 0.7  # AxBench's judge temperature
    max_tokens: int = 256
    seed: int = 42
    concurrency: int = 8
    timeout: float = 60.0
    chunk: int = 96  # ratings per written file
    batch_size: int = 16  # embedded judge: ratings per generate batch
    perplexity: bool = True
    device: str = "cpu"  # where embedded models run: the embedded judge and the perplexity model (not hashed)
    dtype: str = "auto"  # their dtype (auto = bfloat16 where native | bfloat16 | float32)
    concepts: tuple[int, ...] = ()  # only outputs of these concepts (a distributed shard; needs concept_set)
    rubric_from: str | None = None  # an AxBench checkout (or its prompt_templates.py) to read the rubric from

    def rubric(self) -> Rubric:
        return read_axbench_rubric(self.rubric_from) if self.rubric_from else ours()


@dataclass
class JudgeResult:
    judge: str = ""
    rubric: str = ""
    rated: int = 0
    skipped: int = 0
    parse_failures: dict[str, int] = field(default_factory=dict)
    transport_failures: int = 0
    expected: int = 0
    constrained: int = 0
    failed: int = 0  # ratings written with no score (parse failure not rescued by constrained decoding)
    perplexities: int = 0
    seconds: float = 0.0
    calls: int = 0
    cache_hits: int = 0

    def summary(self) -> str:
        if not self.rated and not self.perplexities:
            return f"judge {self.judge}: all {self.skipped} ratings present, nothing to do"
        fails = sum(self.parse_failures.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.parse_failures.items()))
        lines = [f"judge {self.judge} (rubric {self.rubric}): {self.rated} ratings in {self.seconds:.1f}s "
                 f"({self.calls} calls, {self.cache_hits} cache hits), {self.skipped} already present; "
                 f"parse failures {fails}" + (f" ({detail})" if detail else "")
                 + f"; constrained ratings {self.constrained}; expected scores {self.expected}"]
        if self.rated:
            lines.append(failed_line(self.failed))
        if self.transport_failures:
            lines.append(f"judge: {self.transport_failures} calls failed in transport (no row written; re-run to "
                         "retry)")
        if self.perplexities:
            lines.append(f"perplexity: {self.perplexities} outputs")
        return "\n".join(lines)


def failed_line(n: int) -> str:
    """The status line for ratings without a score, saying what the leaderboard does with them."""
    return (f"judge failures: {n} ratings without a valid rating (scored 0 on the steering leaderboard, AxBench's "
            "rule; `axw leaderboard steering --judge-failures drop` leaves them out)")


def judge_hash(cfg: JudgeConfig, rubric: Rubric | None = None) -> str:
    """What defines a rating besides the output: the rubric texts and the sampling parameters. The rubric's name
    joins the hash only when it is not ours, so ratings made with our wording before rubrics were named keep
    their hash (their templates are the same)."""
    rubric = rubric or ours()
    spec = {"prompts": {k: rubric.templates[k] for k in sorted(rubric.templates)}, "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if not rubric.is_ours:
        spec["rubric"] = rubric.name
    return config_hash(spec)


def _filters(cfg: JudgeConfig) -> tuple[str, list]:
    where, params = ["true"], []
    if cfg.concept_set:
        where.append("o.concept_set = ?")
        params.append(cfg.concept_set)
    if cfg.concepts:
        where.append(f"o.concept_id IN ({', '.join(str(int(c)) for c in cfg.concepts)})")
    if cfg.methods:
        where.append(f"o.method IN ({', '.join('?' for _ in cfg.methods)})")
        params += list(cfg.methods)
    return " AND ".join(where), params


def pending_ratings(cat: Catalog, cfg: JudgeConfig, judge: str, jhash: str) -> tuple[list[tuple], int]:
    """(output_id, criterion, concept, instruction, generation) still to rate, and how many are already rated."""
    where, params = _filters(cfg)
    crit = ", ".join(f"('{c}')" for c in cfg.criteria)
    rows = cat.sql(f"""
        WITH crit(criterion) AS (VALUES {crit}),
             o AS (SELECT o.output_id, o.concept_set, o.concept_id, o.instruction, o.generation
                   FROM steering_outputs o WHERE {where}),
             todo AS (SELECT o.*, crit.criterion FROM o CROSS JOIN crit)
        SELECT t.output_id, t.criterion, c.concept, t.instruction, t.generation,
               EXISTS (SELECT 1 FROM judge_scores j WHERE j.output_id = t.output_id AND j.judge = ?
                         AND j.criterion = t.criterion AND j.config_hash = ?) AS done
        FROM todo t LEFT JOIN concepts c ON c.concept_set = t.concept_set AND c.concept_id = t.concept_id
        ORDER BY t.output_id, t.criterion""", params + [judge, jhash]).fetchall()
    return [r[:5] for r in rows if not r[5]], sum(1 for r in rows if r[5])


def _shard_check(cfg: JudgeConfig) -> None:
    if not cfg.concept_set:
        raise AxwError("judge on Ray shards a concept set's outputs: give -c/--concept-set")
    if not cfg.judge.startswith("embedded"):
        raise AxwError("judge on Ray runs the embedded judge; an HTTP judge already runs concurrently "
                       "(--judge-concurrency)")


@shardable(check=_shard_check)
def run_judge(cat: Catalog, cfg: JudgeConfig, progress: bool = True) -> JudgeResult:
    """Rate every output of the selection that has no rating by this judge and config yet; then perplexities."""
    from axwarehouse.heap import reuse_large_buffers
    from axwarehouse.llm import parse_llm

    reuse_large_buffers()  # the judge's model runs: its large temporaries reuse heap memory (axwarehouse/heap.py)

    if is_proxy(cfg.judge):
        from stages.judge_proxy import run_proxy_judge

        return run_proxy_judge(cat, cfg, progress)
    check_criteria(cfg.criteria)
    if not 0 <= cfg.temperature <= 2:
        raise AxwError("--judge-temperature must be between 0 and 2")
    parse_llm(cfg.judge)
    check_device(cfg.device)
    resolve_dtype(cfg.dtype, cfg.device)
    if cat.count("steering_outputs") == 0:
        raise AxwError("no steering outputs to judge (run `axw steer` first)")
    rubric = cfg.rubric()
    jhash = judge_hash(cfg, rubric)
    judge = llm_judge_name(cfg)
    result = JudgeResult(judge=judge, rubric=rubric.name)
    todo, result.skipped = pending_ratings(cat, cfg, judge, jhash)
    config = {"judge": judge, "judge_config_hash": jhash, "concept_set": cfg.concept_set,
              "methods": list(cfg.methods), "criteria": list(cfg.criteria), "rubric": rubric.name,
              "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if not todo and not (cfg.perplexity and _missing_perplexity(cat, cfg)):
        return result
    started = time.perf_counter()
    with cat.run("judge", config) as run:
        if todo:
            _write_config(run, judge, jhash, rubric, cfg)
            with open_llm_judge(cat, run, cfg) as llm:
                _rate_outputs(run, llm, cfg, todo, result, progress)
        if cfg.perplexity:
            result.perplexities = _perplexity(cat, run, cfg)
    result.seconds = time.perf_counter() - started
    return result


def _write_config(run: Run, judge: str, jhash: str, rubric: Rubric, cfg: JudgeConfig) -> None:
    run.write("judge_configs", pa.table({
        "judge": [judge], "judge_config_hash": [jhash], "rubric": [rubric.name],
        "rubric_source": pa.array([rubric.source], pa.string()),
        "temperature": pa.array([cfg.temperature], pa.float64()),
        "max_tokens": pa.array([cfg.max_tokens], pa.int32()), "seed": pa.array([cfg.seed], pa.int64())}))


def output_batches(todo: list[tuple], chunk: int) -> Iterator[tuple[list[Item], tuple[str, ...]]]:
    """(items, criteria) batches of about ``chunk`` ratings from pending (output_id, criterion, concept, instruction,
    generation) rows: the outputs missing the same criteria go together."""
    missing: dict[str, list[str]] = {}
    item: dict[str, Item] = {}
    for oid, crit, concept, instr, gen in todo:
        missing.setdefault(oid, []).append(crit)
        item[oid] = Item(oid, "", 0, concept or "", instr or "", gen or "")
    groups: dict[tuple[str, ...], list[Item]] = {}
    for oid, crits in missing.items():
        groups.setdefault(tuple(crits), []).append(item[oid])
    for crits, items in groups.items():
        per = max(1, chunk // len(crits))
        for start in range(0, len(items), per):
            yield items[start:start + per], crits


def _rate_outputs(run: Run, llm: LLMJudge, cfg: JudgeConfig, todo: list[tuple], result: JudgeResult,
                  progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="judge", unit="rating", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for items, crits in output_batches(todo, cfg.chunk):
            ratings = llm.rate(items, crits)
            write_scores(run, llm.name, llm.config_hash, llm.rubric, ratings, result)
            bar.update(len(ratings))
            bar.set_postfix_str(llm.client.stats.line())
    finally:
        bar.close()
        result.calls, result.cache_hits = llm.client.stats.calls, llm.client.stats.cache_hits


def write_scores(run: Run, judge: str, jhash: str, rubric: str, ratings: list[Rating], result: JudgeResult) -> None:
    """`judge_scores` rows of the ratings that got an answer (a transport failure writes none: retried next run)."""
    keep = [r for r in ratings if not r.transport_error]
    result.transport_failures += len(ratings) - len(keep)
    if not keep:
        return
    for r in keep:
        if not r.parse_ok:
            result.parse_failures[r.parse_error] = result.parse_failures.get(r.parse_error, 0) + 1
    result.rated += len(keep)
    result.expected += sum(r.expected_score is not None for r in keep)
    result.constrained += sum(r.score_source == "constrained" for r in keep)
    result.failed += sum(r.score is None for r in keep)
    run.write("judge_scores", pa.table({
        "output_id": [r.item_id for r in keep], "judge": [judge] * len(keep), "criterion": [r.criterion for r in keep],
        "score": pa.array([r.score for r in keep], pa.float64()),
        "score_source": pa.array([r.score_source for r in keep], pa.string()),
        "expected_score": pa.array([r.expected_score for r in keep], pa.float64()),
        "parse_ok": [r.parse_ok for r in keep], "parse_error": pa.array([r.parse_error for r in keep], pa.string()),
        "raw": [r.raw for r in keep], "request_hash": pa.array([r.request_hash for r in keep], pa.string()),
        "rubric": [rubric] * len(keep), "config_hash": [jhash] * len(keep)}))


def _missing_perplexity(cat: Catalog, cfg: JudgeConfig) -> list[tuple]:
    where, params = _filters(cfg)
    return cat.sql(f"""SELECT o.output_id, o.model, o.instruction, o.generation FROM steering_outputs o
                       WHERE {where} AND NOT EXISTS (SELECT 1 FROM output_perplexity p
                                                     WHERE p.output_id = o.output_id AND p.model = o.model)
                       ORDER BY o.model, o.output_id""", params).fetchall()


def _perplexity(cat: Catalog, run: Run, cfg: JudgeConfig) -> int:
    from axwarehouse.lm.chat import ChatFormat
    from axwarehouse.lm.loader import load
    from axwarehouse.steering.perplexity import conditional_perplexity

    rows = _missing_perplexity(cat, cfg)
    written = 0
    for model in sorted({r[1] for r in rows}):
        mine = [r for r in rows if r[1] == model]
        lm = load(model, resolve_dtype(cfg.dtype, cfg.device))
        lm.model.to(cfg.device)
        chat = ChatFormat.of(lm.tokenizer)
        prompts = [chat.prompt_ids(r[2] or "") for r in mine]
        gens = [lm.tokenizer.encode(r[3] or "", add_special_tokens=False) for r in mine]
        ppl = conditional_perplexity(lm, prompts, gens)
        written += run.write("output_perplexity", pa.table({
            "output_id": [r[0] for r in mine], "model": [model] * len(mine),
            "perplexity": pa.array(ppl, pa.float64()), "n_tokens": pa.array([len(g) for g in gens], pa.int32()),
            "config_hash": [config_hash({"perplexity": "conditional-on-plain-prompt"})] * len(mine)}))
    return written
