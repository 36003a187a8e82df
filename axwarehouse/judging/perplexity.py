"""`output_perplexity`: each steered output's perplexity under its unsteered target model, conditional on the
plain instruction prompt — which outputs lack it, computing it, and writing rows the proxy judge measured already."""

from __future__ import annotations

import math

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.judging.config import JudgeConfig
from axwarehouse.judging.selection import output_filter
from axwarehouse.lineage import config_hash

DEFINITION = {"perplexity": "conditional-on-plain-prompt"}  # every row's config_hash is this one's


def missing_perplexity(cat: Catalog, cfg: JudgeConfig) -> list[tuple]:
    """(output_id, model, instruction, generation) of the covered outputs with no perplexity yet."""
    where, params = output_filter(cfg)
    return cat.sql(f"""SELECT o.output_id, o.model, o.instruction, o.generation FROM steering_outputs o
                       WHERE {where} AND NOT EXISTS (SELECT 1 FROM output_perplexity p
                                                     WHERE p.output_id = o.output_id AND p.model = o.model)
                       ORDER BY o.model, o.output_id""", params).fetchall()


def write_perplexity(cat: Catalog, run: Run, cfg: JudgeConfig) -> int:
    """Compute and write the missing perplexities, one target model at a time; the rows written."""
    from axwarehouse.model.chat import ChatFormat
    from axwarehouse.model.loader import load, resolve_dtype
    from axwarehouse.judging.conditional_perplexity import conditional_perplexity

    rows = missing_perplexity(cat, cfg)
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
            "config_hash": [config_hash(DEFINITION)] * len(mine)}))
    return written


def write_measured_perplexity(run: Run, model: str, rows: list[tuple[str, float | None, int]]) -> None:
    """Rows from (output_id, log p(output | instruction) per token, tokens) measured elsewhere (the proxy judge's
    pass): the same definition as :func:`write_perplexity`."""
    if not rows:
        return
    run.write("output_perplexity", pa.table({
        "output_id": [oid for oid, _, _ in rows], "model": [model] * len(rows),
        "perplexity": pa.array([None if lp is None else math.exp(-lp) for _, lp, _ in rows], pa.float64()),
        "n_tokens": pa.array([n for _, _, n in rows], pa.int32()),
        "config_hash": [config_hash(DEFINITION)] * len(rows)}))
