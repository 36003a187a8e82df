"""Rows of `steering_outputs` for tests that need steered outputs without steering: ``n`` outputs of concept 0,
the first half in the selection split and the rest in the test split."""

from __future__ import annotations


def steered_outputs(concept_set: str, n: int = 4) -> list[dict]:
    return [{"output_id": f"o{i}", "method": "diffmean", "model": "tiny", "layer": 2, "concept_set": concept_set,
             "concept_id": 0, "factor": 1.0, "input_id": i, "split": "selection" if i < n // 2 else "test",
             "instruction_set": "t", "instruction_id": i, "instruction": f"Say thing {i}.", "steering_prompt": None,
             "magnitude": 1.0, "magnitude_source": "test", "strength": 1.0, "seed": i,
             "generation": f"generated text {i}", "n_tokens": 3, "finished": True, "method_config_hash": None,
             "config_hash": "st"} for i in range(n)]
