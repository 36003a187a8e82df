"""`axw generate`: AxBench's LLM-in-the-loop data generation (docs/axbench-recipes.md §1) from `concepts` into `generations`.

Per concept set (all of it seeded, all of it cached in `llm_calls`):

1. **genre** — one LLM call per concept without a genre (text / code / math), stored back on `concepts`.
2. **shared negatives** — for each genre, ``n_train`` train-pool instructions answered by the *target model*
   (greedy, ``1.5 × output_length`` new tokens, not cut): split `train`, concept_id −1, output_concept ``EEEEE``.
3. **train positives** — ``n_train`` instructions of the concept's genre answered with the concept woven in.
4. **latent_eval** — ``n_eval`` positives; ``n_eval`` genre-balanced negatives (15 % math, 15 % code, rest text)
   answered while avoiding the concept; hard negatives from contrast concepts (related word → other meaning →
   unrelatedness check → answer using the word in that other meaning).

LLM texts are stripped and cut to ``output_length`` tokens of the target model's tokenizer, as AxBench does.

Incremental: concepts are processed in chunks; each chunk's calls, failures and rows are written atomically before
the next starts. A concept is complete when it has rows and no recorded failure; complete concepts are skipped, and
redoing an incomplete one replays its answers from the cache, so a re-run with the same config makes no call and
writes no row. ``example_id`` values are fixed slots (see :func:`train_slot` / :func:`eval_slot`), so a failed
request leaves a visible gap instead of shifting ids, and re-runs never duplicate.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from axwarehouse.catalog import Catalog, Run
from axwarehouse.warehouse_files import atomic_write_parquet
from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash
from axwarehouse.llm import LLMClient, LLMRequest, Outcome, ResponseCache, make_backend, parse_llm
from axwarehouse.llm.prices import price_for
from axwarehouse import DATA_DIR
from axwarehouse.model.loader import DEFAULT_MODEL
from axwarehouse.progress import Progress
from axwarehouse import datagen_prompts as P

SEED_POOLS = DATA_DIR / "seed_instructions"
STAGE = "generate"
NEG_SHARE = 0.15  # AxBench: int(0.15 m) math and code negatives each, the rest text
GENRE_INDEX = {g: i for i, g in enumerate(("text", "math", "code"))}  # shared-negative order in AxBench's files
DERIVED_TABLES = ("activations", "latent_scores", "method_artifacts")


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines the generated data (hashed into config_hash) plus operational knobs."""

    concept_set: str
    n_train: int = 72
    n_eval: int = 36
    llm: str = "embedded:smollm2"
    target_model: str = DEFAULT_MODEL  # writes the shared negatives and defines output_length tokens
    output_length: int = 128
    seed: int = 42
    temperature: float = 1.0
    max_contrast: int = 10
    max_attempts: int = 3
    seed_pools: str | None = None  # folder with text/math/code.jsonl; default: the shipped pools
    # operational: not part of the result
    llm_base_url: str | None = None
    concurrency: int = 8
    max_retries: int = 4
    timeout: float = 60.0
    chunk_concepts: int = 16
    batch_size: int = 16  # embedded backends: prompts per model.generate call
    backoff_s: float = 1.0

    def result_config(self, pools_hash: str) -> dict:
        keys = ("concept_set", "n_train", "n_eval", "llm", "target_model", "output_length", "seed", "temperature",
                "max_contrast", "max_attempts")
        out = {k: getattr(self, k) for k in keys}
        out["seed_pools"] = pools_hash
        return out

    def validate(self) -> None:
        for name in ("n_train", "n_eval", "output_length", "max_attempts", "chunk_concepts", "batch_size"):
            if getattr(self, name) < 1:
                raise AxwError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_contrast < 0:
            raise AxwError("--max-contrast must be 0 or more")
        if not 0 <= self.temperature <= 2:
            raise AxwError("--temperature must be between 0 and 2")
        parse_llm(self.llm)


@dataclass
class GenerateResult:
    concept_set: str
    concepts_done: int = 0
    concepts_skipped: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # "split/category" -> rows written
    failures: int = 0  # failure rows now recorded for the set (new or still open)
    new_failures: int = 0
    calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: bool = False
    seconds: float = 0.0
    dry_run: str = ""

    def summary(self) -> str:
        if self.dry_run:
            return self.dry_run
        if not self.concepts_done:
            msg = f"generate {self.concept_set}: all {self.concepts_skipped} concepts complete, nothing to do"
            return msg + (f" ({self.failures} recorded failures; see generation_failures)" if self.failures else "")
        rows = ", ".join(f"{k} {v}" for k, v in sorted(self.rows.items())) or "no new rows"
        cost = "$?" if self.cost_unknown else f"${self.cost_usd:.4f}"
        return (f"generate {self.concept_set}: {self.concepts_done} concepts in {self.seconds:.1f}s "
                f"({self.concepts_skipped} already complete); rows: {rows}; LLM calls {self.calls}, "
                f"cache hits {self.cache_hits}, tokens {self.tokens}, cost {cost}; failures: {self.failures} "
                f"({self.new_failures} new) — see `axw sql \"select * from generation_failures\"`")


# -- seed pools -----------------------------------------------------------------------------------------------
def load_pools(folder: str | Path | None) -> tuple[dict[str, dict[str, list[str]]], str]:
    """{genre: {train: [...], test: [...]}} and a hash of the files (part of config_hash)."""
    root = Path(folder) if folder else SEED_POOLS
    pools: dict[str, dict[str, list[str]]] = {}
    digest = hashlib.sha256()
    for genre in P.GENRES:
        path = root / f"{genre}.jsonl"
        if not path.is_file():
            raise AxwError(f"seed pool {path} is missing (need text.jsonl, math.jsonl, code.jsonl)")
        data = path.read_bytes()
        digest.update(data)
        split: dict[str, list[str]] = {"train": [], "test": []}
        for lineno, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                split[row["split"]].append(P.clean_instruction(row["instruction"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise AxwError(f"{path}:{lineno}: expected {{split: train|test, instruction}}") from exc
        pools[genre] = split
    return pools, digest.hexdigest()[:16]


def _rng(*parts: object) -> random.Random:
    # one generator per (concept, purpose): draws never depend on which other concepts ran before (docs/axbench-recipes.md §7.8)
    return random.Random(hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest())


def _seed(*parts: object) -> int:
    return int(hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def _draw(pool: list[str], k: int, rng: random.Random, what: str) -> list[str]:
    if k > len(pool):
        raise AxwError(f"{what}: need {k} instructions but the seed pool has {len(pool)}; lower the counts or "
                       "pass --seed-pools with larger pools")
    return [pool[i] for i in rng.sample(range(len(pool)), k)]


# -- example-id slots -----------------------------------------------------------------------------------------
def train_slot(cfg: GenerateConfig, concept_id: int, i: int, genre: str | None = None) -> int:
    """train ids: shared negatives 0..3n−1 (text, math, code), then n per concept in concept order."""
    if concept_id < 0:
        return GENRE_INDEX[genre] * cfg.n_train + i
    return 3 * cfg.n_train + concept_id * cfg.n_train + i


def eval_slot(cfg: GenerateConfig, concept_id: int, offset: int) -> int:
    """latent_eval ids: per concept m positives, m negatives, up to max(max_contrast, m) hard negatives."""
    return concept_id * (2 * cfg.n_eval + cfg.max_contrast) + offset


# -- catalog helpers ------------------------------------------------------------------------------------------
def _concepts(cat: Catalog, concept_set: str) -> list[dict]:
    rows = cat.arrow("SELECT concept_id, concept, genre, ref, sae_id FROM concepts WHERE concept_set = ? "
                     "ORDER BY concept_id", [concept_set]).to_pylist()
    if not rows:
        raise AxwError(f"concept set {concept_set!r} has no concepts (run `axw concepts import FILE` first)")
    for r in rows:
        if r["genre"] is not None and r["genre"] not in P.GENRES:
            raise AxwError(f"concept {r['concept']!r} has genre {r['genre']!r}; expected text, code or math")
    return rows


def _check_existing(cat: Catalog, cfg: GenerateConfig, chash: str, replace: bool) -> None:
    """Refuse to mix generated data of another config (or imported data) into the set, unless --replace."""
    other = cat.con.execute("SELECT count(*), any_value(source) FROM generations WHERE concept_set = ? "
                    "AND (config_hash IS DISTINCT FROM ? OR source NOT LIKE 'generate:%')",
                    [cfg.concept_set, chash]).fetchall()[0]
    if not other[0]:
        return
    if not replace:
        raise AxwError(f"concept set {cfg.concept_set!r} already has {other[0]} generations from {other[1]} with a "
                       "different config; pass --replace to regenerate (drops its generations and everything "
                       "derived from them) or import the concepts under another --concept-set")
    for table in ("generations", "generation_failures", *DERIVED_TABLES):
        cat.delete_where(table, "concept_set = ?", [cfg.concept_set])


def _existing_ids(cat: Catalog, concept_set: str) -> set[tuple[str, int]]:
    return {(s, int(e)) for s, e in cat.sql("SELECT split, example_id FROM generations WHERE concept_set = ?",
                                           [concept_set]).fetchall()}


def _open_failures(cat: Catalog, concept_set: str) -> dict[tuple, dict]:
    rows = cat.arrow("SELECT * FROM generation_failures WHERE concept_set = ?", [concept_set]).to_pylist()
    return {(r["concept_id"], r["split"], r["purpose"], r["item"]): r for r in rows}


def store_genres(cat: Catalog, concept_set: str, genres: dict[int, list[str]]) -> int:
    """Fill ``genre``/``genres`` of concepts that had none, rewriting their Parquet files atomically in place
    (rows keep their import lineage; the genre call itself is in llm_calls)."""
    changed = 0
    for path in cat.table_files("concepts"):
        table = pq.read_table(path)
        rows = table.to_pylist()
        touched = False
        for r in rows:
            if r["concept_set"] == concept_set and r["genre"] is None and r["concept_id"] in genres:
                r["genres"] = genres[r["concept_id"]]
                r["genre"] = r["genres"][0]
                touched = True
                changed += 1
        if touched:
            atomic_write_parquet(pa.Table.from_pylist(rows, schema=table.schema), path)
    cat.refresh_views()
    return changed


# -- the stage ------------------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    cfg: GenerateConfig
    chash: str
    llm: LLMClient
    target: LLMClient
    tokenizer: object | None
    failures: list[dict]
    rows: list[dict]
    tick: Callable[[int], None]


def _request(ctx: _Ctx, prompt: str, purpose: str, tag: str, max_tokens: int, temperature: float | None = None,
             ) -> LLMRequest:
    return LLMRequest.user(prompt, temperature=ctx.cfg.temperature if temperature is None else temperature,
                           max_tokens=max_tokens, seed=_seed(ctx.cfg.seed, purpose, tag), purpose=purpose, tag=tag)


def _run(ctx: _Ctx, client: LLMClient, reqs: list[LLMRequest], parse, meta: list[dict]) -> list[Outcome]:
    """Run requests; record failures (with their meta: concept_id, split, item, input) in ctx.failures."""
    ctx.tick(len(reqs))
    outs = client.run(reqs, parse)
    for out, m in zip(outs, meta):
        if not out.ok:
            ctx.failures.append({**m, "purpose": out.request.purpose, "error": out.error,
                                 "history": "; ".join(out.history), "attempts": out.attempts,
                                 "llm": _label(client)})
    return outs


def _label(client: LLMClient) -> str:
    """BACKEND:MODEL of a client, without doubling 'embedded:' for embedded model specs."""
    b = client.backend
    return b.model if b.model.startswith(f"{b.name}:") else f"{b.name}:{b.model}"


def _cut(ctx: _Ctx, texts: list[str]) -> list[str]:
    """Cut texts to output_length tokens of the target tokenizer (AxBench's truncation)."""
    if not texts:
        return []
    tok = ctx.tokenizer
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    return [tok.decode(x[: ctx.cfg.output_length], skip_special_tokens=True) for x in ids]


def _row(ctx: _Ctx, split: str, example_id: int, concept: dict | None, category: str, genre: str, instruction: str,
         output: str, output_concept: str, generator: str) -> dict:
    return {"concept_set": ctx.cfg.concept_set, "split": split, "example_id": example_id,
            "concept_id": concept["concept_id"] if concept else -1, "category": category, "genre": genre,
            "input": instruction, "output": output, "output_concept": output_concept,
            "dataset_category": "instruction", "source": f"generate:{ctx.cfg.llm}", "generator_model": generator,
            "sae_link": concept["ref"] if concept else None, "sae_id": concept["sae_id"] if concept else None}


def _shared_negatives(ctx: _Ctx, pools: dict) -> None:
    cfg = ctx.cfg
    reqs, meta, where = [], [], []
    for genre in ("text", "math", "code"):
        for i, instr in enumerate(_draw(pools[genre]["train"], cfg.n_train, _rng(cfg.seed, "shared", genre),
                                        f"shared negatives ({genre})")):
            # AxBench answers these with the target model itself, greedy, 1.5 × output_length new tokens
            reqs.append(_request(ctx, instr, "shared_negative", f"{genre}:{i}", int(1.5 * cfg.output_length), 0.0))
            meta.append({"concept_id": -1, "split": "train", "item": f"{genre}:{i}", "input": instr})
            where.append((genre, i, instr))
    outs = _run(ctx, ctx.target, reqs, P.parse_text, meta)
    gen = ctx.target.backend.model  # the target model's canonical name, as activations/train record it
    for (genre, i, instr), out in zip(where, outs):
        if out.ok:  # not cut: AxBench keeps the target model's full answer
            ctx.rows.append(_row(ctx, "train", train_slot(cfg, -1, i, genre), None, "negative", genre, instr,
                                 out.value, P.EMPTY_CONCEPT, gen))


def _genres(ctx: _Ctx, cat: Catalog, concepts: list[dict]) -> list[dict]:
    """Assign genres to concepts that lack one; concepts whose genre stays unknown are returned without it."""
    todo = [c for c in concepts if c["genre"] is None]
    if not todo:
        return concepts
    reqs = [_request(ctx, P.GENRE_PROMPT.format(concept=c["concept"]), "genre", c["concept"], 32) for c in todo]
    meta = [{"concept_id": c["concept_id"], "split": None, "item": "genre", "input": c["concept"]} for c in todo]
    outs = _run(ctx, ctx.llm, reqs, P.parse_genre, meta)
    got = {c["concept_id"]: o.value for c, o in zip(todo, outs) if o.ok}
    if got:
        store_genres(cat, ctx.cfg.concept_set, got)
    for c in todo:
        if c["concept_id"] in got:
            c["genre"] = got[c["concept_id"]][0]
    return concepts


def _concept_texts(ctx: _Ctx, pools: dict, concepts: list[dict]) -> None:
    """Train positives, eval positives and eval negatives of a chunk of concepts: one batch of requests."""
    cfg, m = ctx.cfg, ctx.cfg.n_eval
    n_side = int(NEG_SHARE * m)
    reqs, meta, where = [], [], []
    max_tok = int(1.5 * cfg.output_length)
    for c in concepts:
        name, cid, genre = c["concept"], c["concept_id"], c["genre"]
        train = _draw(pools[genre]["train"], cfg.n_train, _rng(cfg.seed, name, "train"), f"concept {name!r} train")
        for i, instr in enumerate(train):
            reqs.append(_request(ctx, P.POSITIVE_PROMPT.format(concept=name, instruction=instr), "positive",
                                 f"{name}:train:{i}", max_tok))
            meta.append({"concept_id": cid, "split": "train", "item": f"positive:{i}", "input": instr})
            where.append(("train", train_slot(cfg, cid, i), c, "positive", genre, instr, name))
        c["_eval_instr"] = drawn = _draw(pools[genre]["test"], 2 * m, _rng(cfg.seed, name, "eval"),
                                         f"concept {name!r} latent_eval")
        for i, instr in enumerate(drawn[:m]):
            reqs.append(_request(ctx, P.POSITIVE_PROMPT.format(concept=name, instruction=instr), "positive",
                                 f"{name}:eval:{i}", max_tok))
            meta.append({"concept_id": cid, "split": "latent_eval", "item": f"positive:{i}", "input": instr})
            where.append(("latent_eval", eval_slot(cfg, cid, i), c, "positive", genre, instr, name))
        offset = m
        for g, count in (("text", m - 2 * n_side), ("math", n_side), ("code", n_side)):
            for j, instr in enumerate(_draw(pools[g]["test"], count, _rng(cfg.seed, name, "negative", g),
                                            f"concept {name!r} negatives ({g})")):
                reqs.append(_request(ctx, P.NEGATIVE_PROMPT.format(concept=name, instruction=instr), "negative",
                                     f"{name}:{g}:{j}", max_tok))
                meta.append({"concept_id": cid, "split": "latent_eval", "item": f"negative:{g}:{j}", "input": instr})
                where.append(("latent_eval", eval_slot(cfg, cid, offset), c, "negative", g, instr, name))
                offset += 1
    outs = _run(ctx, ctx.llm, reqs, P.parse_text, meta)
    ok = [(w, o) for w, o in zip(where, outs) if o.ok]
    for (split, eid, c, cat_, genre, instr, oc), text in zip([w for w, _ in ok], _cut(ctx, [o.value for _, o in ok])):
        ctx.rows.append(_row(ctx, split, eid, c, cat_, genre, instr, text, oc, cfg.llm))


def _hard_negatives(ctx: _Ctx, concepts: list[dict]) -> None:
    """docs/axbench-recipes.md §1.5 contrast pipeline, each step batched over the chunk's concepts."""
    cfg = ctx.cfg
    if cfg.max_contrast == 0:
        return
    limit = min(cfg.max_contrast, cfg.n_eval)  # hard negatives use instructions m .. m+k-1 of the 2m drawn
    reqs = [_request(ctx, P.WORDS_PROMPT.format(concept=c["concept"]), "contrast_words", c["concept"], 96)
            for c in concepts]
    meta = [{"concept_id": c["concept_id"], "split": "latent_eval", "item": "words", "input": c["concept"]}
            for c in concepts]
    words = _run(ctx, ctx.llm, reqs, lambda comp: P.parse_words(comp, limit), meta)
    pairs = [(c, w) for c, o in zip(concepts, words) if o.ok for w in o.value]
    reqs = [_request(ctx, P.MEANING_PROMPT.format(concept=c["concept"], word=w), "contrast_meaning",
                     f"{c['concept']}:{w}", 64) for c, w in pairs]
    meta = [{"concept_id": c["concept_id"], "split": "latent_eval", "item": f"meaning:{w}", "input": w}
            for c, w in pairs]
    meanings = _run(ctx, ctx.llm, reqs, P.parse_meaning, meta)
    kept = [(c, w, o.value) for (c, w), o in zip(pairs, meanings) if o.ok and o.value]
    reqs = [_request(ctx, P.JUDGE_PROMPT.format(concept=c["concept"], word=w, meaning=mn), "contrast_judge",
                     f"{c['concept']}:{w}", 160) for c, w, mn in kept]
    meta = [{"concept_id": c["concept_id"], "split": "latent_eval", "item": f"judge:{w}", "input": mn}
            for c, w, mn in kept]
    verdicts = _run(ctx, ctx.llm, reqs, P.parse_judge, meta)
    by_concept: dict[int, list[tuple[str, str]]] = {}
    for (c, w, mn), o in zip(kept, verdicts):
        if o.ok and o.value:
            by_concept.setdefault(c["concept_id"], []).append((w, mn))
    reqs, meta, where = [], [], []
    for c in concepts:
        for k, (w, mn) in enumerate(by_concept.get(c["concept_id"], [])[:limit]):
            instr = c["_eval_instr"][cfg.n_eval + k]
            reqs.append(_request(ctx, P.HARD_NEGATIVE_PROMPT.format(word=w, meaning=mn, concept=c["concept"],
                                                                    instruction=instr),
                                 "hard_negative", f"{c['concept']}:{w}", int(1.5 * cfg.output_length)))
            meta.append({"concept_id": c["concept_id"], "split": "latent_eval", "item": f"hard_negative:{w}",
                         "input": instr})
            where.append((eval_slot(cfg, c["concept_id"], 2 * cfg.n_eval + k), c, instr, f"{w}//{mn}"))
    outs = _run(ctx, ctx.llm, reqs, P.parse_hard_negative, meta)
    ok = [(w, o) for w, o in zip(where, outs) if o.ok]
    for (eid, c, instr, oc), text in zip([w for w, _ in ok], _cut(ctx, [o.value for _, o in ok])):
        ctx.rows.append(_row(ctx, "latent_eval", eid, c, "hard_negative", c["genre"], instr, text, oc, cfg.llm))


def _complete(cat: Catalog, concept_set: str, open_fail: dict) -> tuple[set[int], bool]:
    """(ids of complete concepts, shared negatives complete)."""
    have = {int(r[0]) for r in cat.sql(
        "SELECT concept_id FROM generations WHERE concept_set = ? GROUP BY concept_id "
        "HAVING count(*) FILTER (split = 'train') > 0 AND count(*) FILTER (split = 'latent_eval') > 0 "
        "OR concept_id = -1", [concept_set]).fetchall()}
    failed = {k[0] for k in open_fail}
    return {c for c in have if c not in failed and c >= 0}, (-1 in have and -1 not in failed)


def estimate(cfg: GenerateConfig, todo: list[dict], shared_todo: bool) -> str:
    """Dry-run report: call counts and an upper-bound cost estimate (contrast calls depend on the LLM's answers)."""
    spec = parse_llm(cfg.llm)
    price = price_for(spec.backend, spec.model)
    m, n, L = cfg.n_eval, cfg.n_train, cfg.output_length
    k = min(cfg.max_contrast, m)
    text_out = int(1.5 * L)
    # (phase, calls, prompt tokens per call, completion tokens per call): tokens ≈ characters / 4
    phases = [
        ("genre", sum(1 for c in todo if c["genre"] is None), len(P.GENRE_PROMPT) // 4 + 10, 5),
        ("train positives", n * len(todo), len(P.POSITIVE_PROMPT) // 4 + 30, text_out),
        ("eval positives", m * len(todo), len(P.POSITIVE_PROMPT) // 4 + 30, text_out),
        ("eval negatives", m * len(todo), len(P.NEGATIVE_PROMPT) // 4 + 30, text_out),
        ("contrast words", len(todo) if k else 0, len(P.WORDS_PROMPT) // 4 + 10, 30),
        ("contrast meanings (≤)", k * len(todo), len(P.MEANING_PROMPT) // 4 + 12, 30),
        ("contrast judge (≤)", k * len(todo), len(P.JUDGE_PROMPT) // 4 + 40, 80),
        ("hard negatives (≤)", k * len(todo), len(P.HARD_NEGATIVE_PROMPT) // 4 + 50, text_out),
    ]
    lines = [f"dry run: {len(todo)} concepts to generate with {cfg.llm} "
             f"(n_train={n}, n_eval={m}, output_length={L}, max_contrast={cfg.max_contrast})",
             f"{'phase':<24}{'calls':>8}{'tokens':>12}{'est. $':>10}"]
    total_calls = total_tok = 0
    total_cost = 0.0
    for name, calls, pin, pout in phases:
        tok = calls * (pin + pout)
        cost = None if price is None else calls * (pin * price[0] + pout * price[1]) / 1e6
        total_calls += calls
        total_tok += tok
        total_cost += cost or 0.0
        lines.append(f"{name:<24}{calls:>8}{tok:>12,}{'?' if cost is None else f'{cost:.4f}':>10}")
    if shared_todo:
        lines.append(f"{'shared negatives':<24}{3 * n:>8}{'':>12}{'0 (target model ' + cfg.target_model + ')':>10}")
    cost_txt = "unknown (no price for this model)" if price is None else f"${total_cost:.4f}"
    lines.append(f"total LLM calls ≤ {total_calls} (+ retries), ~{total_tok:,} tokens, estimated cost ≤ {cost_txt}; "
                 "answers already in llm_calls are free")
    return "\n".join(lines)


def run_generate(cat: Catalog, cfg: GenerateConfig, *, dry_run: bool = False, replace: bool = False,
                 progress: bool = True, echo: Callable[[str], None] = print) -> GenerateResult:
    """Generate (or complete) the AxBench data of ``cfg.concept_set``; see the module docstring."""
    cfg.validate()
    pools, pools_hash = load_pools(cfg.seed_pools)
    result_cfg = cfg.result_config(pools_hash)
    chash = config_hash(result_cfg)
    concepts = _concepts(cat, cfg.concept_set)
    result = GenerateResult(cfg.concept_set)
    if not replace:
        _check_existing(cat, cfg, chash, replace=False)
    open_fail = _open_failures(cat, cfg.concept_set)
    done, shared_done = _complete(cat, cfg.concept_set, open_fail)
    todo = [c for c in concepts if c["concept_id"] not in done]
    if replace:
        todo, shared_done = concepts, False
    result.concepts_skipped = len(concepts) - len(todo)
    result.failures = len(open_fail)
    if dry_run:
        result.dry_run = estimate(cfg, todo, not shared_done)
        return result
    if not todo and shared_done:
        return result

    t0 = time.perf_counter()
    with cat.run(STAGE, result_cfg) as run:
        if replace:
            _check_existing(cat, cfg, chash, replace=True)
            open_fail = {}
        cache = ResponseCache(cat, run, stage=STAGE)
        bar = Progress(0, f"generate {cfg.concept_set}", "req", enabled=progress)
        try:
            _generate_concepts(cat, run, cfg, chash, cache, bar, pools, todo, shared_done, open_fail, result)
        finally:
            cache.flush()  # calls already paid for survive an interrupt or an error
            bar.close()
    result.failures = len(_open_failures(cat, cfg.concept_set))
    result.seconds = time.perf_counter() - t0
    return result


def _generate_concepts(cat: Catalog, run: Run, cfg: GenerateConfig, chash: str, cache: ResponseCache, bar: Progress,
                       pools, todo: list[dict], shared_done: bool, open_fail: dict, result: GenerateResult) -> None:
    """The LLM and the target model at work: shared negatives first (when missing), then the concepts in chunks,
    each chunk committed when done."""
    from axwarehouse.model.loader import load

    def on_progress(stats) -> None:
        bar.update(1)
        bar.set_postfix(_progress_line(llm, target))

    llm_backend = make_backend(cfg.llm, base_url=cfg.llm_base_url, timeout=cfg.timeout,
                               concurrency=cfg.concurrency, batch_size=cfg.batch_size)
    target_backend = make_backend(f"embedded:{cfg.target_model.removeprefix('embedded:')}",
                                  batch_size=cfg.batch_size)
    opts = dict(concurrency=cfg.concurrency, max_retries=cfg.max_retries, max_attempts=cfg.max_attempts,
                backoff_s=cfg.backoff_s, on_progress=on_progress)
    existing = _existing_ids(cat, cfg.concept_set)
    with LLMClient(llm_backend, cache, **opts) as llm, LLMClient(target_backend, cache, **opts) as target:
        ctx = _Ctx(cfg, chash, llm, target, load(cfg.target_model).tokenizer, [], [], bar.add_total)
        if not shared_done:
            _shared_negatives(ctx, pools)
            _commit(cat, run, ctx, cache, existing, open_fail, {-1}, result)
        for start in range(0, len(todo), cfg.chunk_concepts):
            chunk = [dict(c) for c in todo[start:start + cfg.chunk_concepts]]
            chunk_ids = {c["concept_id"] for c in chunk}
            chunk = [c for c in _genres(ctx, cat, chunk) if c["genre"] is not None]
            _concept_texts(ctx, pools, chunk)
            _hard_negatives(ctx, chunk)
            _commit(cat, run, ctx, cache, existing, open_fail, chunk_ids, result)
            result.concepts_done += len(chunk_ids)
        result.calls = llm.stats.calls + target.stats.calls
        result.cache_hits = llm.stats.cache_hits + target.stats.cache_hits
        result.tokens = sum(s.prompt_tokens + s.completion_tokens for s in (llm.stats, target.stats))
        result.cost_usd = llm.stats.cost_usd + target.stats.cost_usd
        result.cost_unknown = llm.stats.cost_unknown


def _progress_line(llm: LLMClient, target: LLMClient) -> str:
    s, t = llm.stats, target.stats
    cost = "$?" if s.cost_unknown else f"${s.cost_usd + t.cost_usd:.4f}"
    return (f"calls {s.calls + t.calls} hits {s.cache_hits + t.cache_hits} "
            f"tok {s.prompt_tokens + s.completion_tokens + t.prompt_tokens + t.completion_tokens} {cost} "
            f"failed {s.failures + t.failures}")


def _commit(cat: Catalog, run, ctx: _Ctx, cache: ResponseCache, existing: set, open_fail: dict,
            concept_ids: set[int], result: GenerateResult) -> None:
    """Write a unit of work: calls first, then failures, then rows (each an atomic file)."""
    cache.flush()
    new_fail = {(f["concept_id"], f["split"], f["purpose"], f["item"]): f for f in ctx.failures}
    resolved = [k for k in open_fail if k[0] in concept_ids and k not in new_fail]
    for cid, split, purpose, item in resolved:
        cat.delete_where("generation_failures", "concept_set = ? AND concept_id = ? AND split IS NOT DISTINCT FROM ? "
                         "AND purpose = ? AND item = ?", [ctx.cfg.concept_set, cid, split, purpose, item])
        open_fail.pop((cid, split, purpose, item))
    fresh = [dict(f, concept_set=ctx.cfg.concept_set) for k, f in new_fail.items() if k not in open_fail]
    if fresh:
        run.write("generation_failures", pa.Table.from_pylist(fresh))
        result.new_failures += len(fresh)
        open_fail.update({(f["concept_id"], f["split"], f["purpose"], f["item"]): f for f in fresh})
    rows = [r for r in ctx.rows if (r["split"], r["example_id"]) not in existing]
    if rows:
        run.write("generations", pa.Table.from_pylist(rows))
        existing.update((r["split"], r["example_id"]) for r in rows)
        for r in rows:
            key = f"{r['split']}/{r['category']}"
            result.rows[key] = result.rows.get(key, 0) + 1
    ctx.failures.clear()
    ctx.rows.clear()
