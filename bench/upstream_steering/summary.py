"""The figures of one timed run: exact token counts and times from ``timing.json``, cross-checked against upstream's
own output file.

Why two counts: the exact one comes from the generate outputs (new tokens before the first EOS); re-tokenising the
decoded texts upstream saves in ``steering_data.parquet`` with the same slow tokenizer upstream loads shows the
outputs are the rows that were timed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def file_tokens(texts: list[str], tokenizer_dir: Path) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), use_fast=False, model_max_length=1024)
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def lines(timing: dict[str, Any], df: pd.DataFrame, recounted: int) -> list[str]:
    rows, calls = timing["rows"], timing["generate_calls"]
    exact = sum(r["before_eos"] for r in rows)
    n_eos = sum(r["eos"] for r in rows)
    slots = sum(c["batch"] * c["steps"] for c in calls)
    gen, loop = timing["generate_s"], timing["predict_steer_s"]
    forced = timing.get("max_act_overridden")
    max_act = (f" (forced by --max-act; upstream's own: {timing.get('max_activations_upstream')})" if forced is not None
               else " (upstream's own, from its latent run)")
    return [
        f"rows generated: {len(rows)} (output file rows: {len(df)}; factors {sorted(df['factor'].unique().tolist())}; "
        f"concepts {sorted(df['concept_id'].unique().tolist())}; instructions/concept "
        f"{df.groupby('concept_id')['input_id'].nunique().tolist()})",
        f"generate calls: {len(calls)}: " + ", ".join(
            f"{c['batch']}x{c['steps']} steps (prompt width {c['prompt_width']}) {c['seconds']:.2f}s" for c in calls),
        f"generate kwargs: {calls[0]['kwargs']}",
        f"torch threads {timing['torch_threads']}; model dtype {timing.get('model_dtype')}; max_act per concept "
        f"{timing['max_activations']}{max_act}",
        f"prompt tokens per row: min {min(r['prompt_tokens'] for r in rows)} "
        f"max {max(r['prompt_tokens'] for r in rows)}",
        f"rows ended by EOS (<|im_end|>): {n_eos}/{len(rows)}",
        f"generated tokens, exact (new tokens before the first EOS, EOS not counted): {exact}",
        f"generated tokens incl. the EOS token: {exact + n_eos}",
        f"decode slots computed (batch x steps, incl. padding after EOS): {slots}",
        "generated tokens re-counted from steering_data.parquet (decoded text, skip_special_tokens, re-tokenized "
        f"with the same slow tokenizer): {recounted}",
        f"model load: {timing['load_s']:.2f}s",
        f"steering generation wall (sum of the steered generate calls, excludes model load): {gen:.2f}s",
        f"upstream steering loop wall (predict_steer: generate + its perplexity forward pass + decode): {loop:.2f}s",
        f"whole inference.py main() (load, data prep, steering, save): {timing['process_main_s']:.2f}s",
        f"generated tokens/s (exact tokens / generate wall): {exact / gen:.1f}",
        f"generated tokens/s incl. EOS: {(exact + n_eos) / gen:.1f}",
        f"generated tokens/s over upstream's whole steering loop (predict_steer): {exact / loop:.1f}",
        f"decode slots/s (batch x steps / generate wall): {slots / gen:.1f}",
    ]


def summarise(run: Path, tokenizer_dir: Path, column: str = "DiffMean_steered_generation") -> list[str]:
    timing = json.loads((run / "timing.json").read_text())
    df = pd.read_parquet(run / "inference" / "steering_data.parquet")
    return lines(timing, df, file_tokens(df[column].tolist(), tokenizer_dir))
