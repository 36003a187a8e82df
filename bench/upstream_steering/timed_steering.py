"""Upstream's ``axbench/scripts/inference.py`` main(), unchanged, with timers put around it from outside.

Why: the figure must be upstream's own steering code, so nothing of it is edited for timing. Launched by torchrun
with upstream's argv (``--config --dump_dir --mode steering``); before main() runs, this module wraps:

* ``AutoModelForCausalLM.from_pretrained`` as inference.py sees it -> model load time, model dtype;
* ``pyvene.IntervenableModel.generate`` (the steered Hugging Face generate) -> generation time and, from its
  outputs, the exact new tokens of each row before its first EOS;
* ``Model.predict_steer`` (generate + upstream's perplexity pass + decode) -> the steering loop's time;
* ``Model.pre_compute_mean_activations`` -> the per-concept max activation; with ``AXW_BENCH_MAX_ACT`` set, every
  concept's is replaced by that value (strength = factor x it, as ``bench/steer.py --magnitude``).

Writes ``<dump_dir>/timing.json`` (rank 0).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))

import axbench.models.model as axmodel  # noqa: E402
import axbench.scripts.inference as inference  # noqa: E402
import pyvene  # noqa: E402

TIMING: dict[str, Any] = {"load_s": 0.0, "generate_s": 0.0, "predict_steer_s": 0.0, "generate_calls": [],
                          "rows": [], "torch_threads": torch.get_num_threads(), "max_activations": None}


def wrap_load() -> None:
    real = inference.AutoModelForCausalLM

    class TimedAuto:
        @staticmethod
        def from_pretrained(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            model = real.from_pretrained(*args, **kwargs)
            TIMING["load_s"] += time.perf_counter() - t0
            TIMING["model_dtype"] = str(model.dtype)
            return model

    inference.AutoModelForCausalLM = TimedAuto


def record_rows(new_tokens: torch.Tensor, attention_mask: torch.Tensor, eos_ids: set[int]) -> None:
    """One entry per generated row: new tokens before its first EOS, whether it had one, its prompt length."""
    for row, prompt in zip(new_tokens.tolist(), attention_mask.sum(1).tolist()):
        end = next((i for i, t in enumerate(row) if t in eos_ids), None)
        TIMING["rows"].append({"before_eos": len(row) if end is None else end, "eos": end is not None,
                               "prompt_tokens": int(prompt)})


def wrap_generate() -> None:
    real = pyvene.IntervenableModel.generate

    def timed(self: Any, base: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = real(self, base, *args, **kwargs)
        seconds = time.perf_counter() - t0
        width = base["input_ids"].shape[1]
        new = out[1][:, width:]
        eos = self.model.generation_config.eos_token_id
        record_rows(new, base["attention_mask"], set(eos if isinstance(eos, list) else [eos]))
        TIMING["generate_s"] += seconds
        TIMING["generate_calls"].append({"seconds": seconds, "batch": int(new.shape[0]), "prompt_width": int(width),
                                         "steps": int(new.shape[1]),
                                         "kwargs": {k: str(v) for k, v in kwargs.items() if k != "subspaces"}})
        return out

    pyvene.IntervenableModel.generate = timed


def wrap_predict_steer() -> None:
    real = axmodel.Model.predict_steer

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = real(self, *args, **kwargs)
        TIMING["predict_steer_s"] += time.perf_counter() - t0
        return result

    axmodel.Model.predict_steer = timed


class ForcedMaxAct(dict):
    """predict_steer reads ``self.max_activations.get(concept_id, 1.0)``: every concept gets the same value."""

    def __init__(self, value: float, concepts: Any) -> None:
        super().__init__({c: value for c in concepts})
        self.value = value

    def get(self, key: Any, default: Any = None) -> float:
        return self.value


def wrap_max_act(forced: float | None) -> None:
    real = axmodel.Model.pre_compute_mean_activations

    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        upstream = real(self, *args, **kwargs) or {}
        if forced is not None:
            self.max_activations = ForcedMaxAct(forced, upstream)
            TIMING["max_act_overridden"] = forced
            TIMING["max_activations_upstream"] = {str(c): float(v) for c, v in upstream.items()}
        TIMING["max_activations"] = {str(c): float(v) for c, v in self.max_activations.items()}
        return self.max_activations

    axmodel.Model.pre_compute_mean_activations = recorded


def main() -> None:
    forced = os.environ.get("AXW_BENCH_MAX_ACT")
    wrap_load()
    wrap_generate()
    wrap_predict_steer()
    wrap_max_act(float(forced) if forced else None)
    t0 = time.perf_counter()
    inference.main()
    TIMING["process_main_s"] = time.perf_counter() - t0
    if int(os.environ.get("RANK", "0")) == 0:
        dump = Path(sys.argv[sys.argv.index("--dump_dir") + 1])
        (dump / "timing.json").write_text(json.dumps(TIMING, indent=1))


if __name__ == "__main__":
    main()
