"""The config upstream's scripts run with: upstream's own DiffMean sweep file, with the matched workload's fields set.

Why not a yaml of our own: every field not set here stays upstream's (its DiffMean training settings, latent
batch, addition steering on AlpacaEval, batch 10, 128 new tokens, temperature 1.0), read from the checkout.
What changes: SmolLM2-135M-Instruct for gemma-2-2b-it, layer 21 for 20, float32 (the CPU has no native bf16),
2 Concept10 concepts, factors 0.4/1.0/2.0 instead of upstream's 14, data directories in the workdir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SWEEP = "axbench/sweep/wuzhengx/2b/l20/16k_diffmean.yaml"
CONCEPT10 = "axbench/concept10/prod_2b_l10_v1"  # upstream's shipped Concept10 (generated data + latent eval set)
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LAYER = 21
CONCEPTS = 2


def base_config(upstream: Path, workdir: Path) -> dict[str, Any]:
    """Upstream's sweep config with the fields of the matched workload (training and latent runs use it as is)."""
    cfg = yaml.safe_load((upstream / SWEEP).read_text())
    data = str(workdir / "data")
    cfg["generate"].pop("concept_path")  # only generate.py reads it; the concepts come from Concept10's metadata
    cfg["generate"].update(max_concepts=CONCEPTS, master_data_dir=data)
    cfg["train"].update(model_name=MODEL, layer=LAYER, use_bf16=False, max_concepts=CONCEPTS,
                        overwrite_data_dir=str(upstream / CONCEPT10 / "generate"))
    cfg["inference"].update(use_bf16=False, model_name=MODEL, steering_model_name=MODEL, steering_layers=[LAYER],
                            steering_factors=[0.4, 1.0, 2.0], master_data_dir=data)
    return cfg


def steering_config(base: dict[str, Any], factors: list[float], instructions: int, max_new_tokens: int,
                    batch_size: int, temperature: float) -> dict[str, Any]:
    """``base`` with the timed run's steering fields."""
    cfg = {section: dict(fields) for section, fields in base.items()}
    cfg["inference"].update(steering_factors=factors, steering_num_of_examples=instructions,
                            steering_output_length=max_new_tokens, steering_batch_size=batch_size,
                            temperature=temperature)
    return cfg


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def write(cfg: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
