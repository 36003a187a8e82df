"""Tiny stage functions for the commit and placement tests: no model, a few rows in two tables and two partitions
each, so that a commit has several file moves and a Ray task costs milliseconds. Importable by Ray workers (the
tests put this folder on their PYTHONPATH)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import pyarrow as pa

from axwarehouse.catalog import Catalog

CONCEPT_SET = "toy"
CONCEPTS = (0, 1, 2, 3)
METHODS = ("toy-a", "toy-b")  # the partition column of both tables: two files per table per write
EXAMPLES = 3


@dataclass(frozen=True)
class ToyConfig:
    concepts: tuple[int, ...] = ()


def _score(method: str, concept: int, example: int) -> float:
    return (1 + METHODS.index(method)) * 0.1 + concept / 7 + example / 13


def run_toy(cat: Catalog, cfg: ToyConfig) -> str:
    """Write the missing concepts' rows: latent_scores first, then method_artifacts (what is missing is read from
    method_artifacts), like a stage that writes two tables."""
    have = {c for (c,) in cat.sql("SELECT DISTINCT concept_id FROM method_artifacts WHERE concept_set = ?",
                                  [CONCEPT_SET]).fetchall()}
    todo = [c for c in (cfg.concepts or CONCEPTS) if c not in have]
    if not todo:
        return "toy: nothing to do"
    with cat.run("toy", {"concepts": list(cfg.concepts)}) as run:
        for c in todo:
            rows = [(m, e) for m in METHODS for e in range(EXAMPLES)]
            run.write("latent_scores", pa.table({
                "method": [m for m, _ in rows], "model": ["toy"] * len(rows), "layer": pa.array([1] * len(rows),
                                                                                                pa.int32()),
                "concept_set": [CONCEPT_SET] * len(rows), "concept_id": [c] * len(rows),
                "split": ["latent_eval"] * len(rows), "example_id": [e for _, e in rows],
                "score": [_score(m, c, e) for m, e in rows], "max_position": pa.array([e for _, e in rows], pa.int32()),
                "max_token": ["tok"] * len(rows),
                "token_scores": pa.array([[_score(m, c, e)] * 2 for m, e in rows], pa.list_(pa.float32()))}))
            run.write("method_artifacts", pa.table({
                "method": list(METHODS), "model": ["toy"] * 2, "layer": pa.array([1, 1], pa.int32()),
                "concept_set": [CONCEPT_SET] * 2, "concept_id": [c] * 2,
                "direction": pa.array([[_score(m, c, 0), 1.0 / 3] for m in METHODS], pa.list_(pa.float32())),
                "bias": [_score(m, c, 1) for m in METHODS], "max_train_activation": [1.5, 2.5],
                "weights_path": [None, None], "extra": ["{}", "{}"]}))
    return f"toy: {len(todo)} concepts"


@dataclass(frozen=True)
class PlacementConfig:
    record_dir: str = ""
    seconds: float = 0.3
    concepts: tuple[int, ...] = ()


def record_placement(cat: Catalog, cfg: PlacementConfig) -> str:
    """A task that writes nothing: it records when it ran and which GPU Ray gave it, then sleeps."""
    import ray

    start = time.time()
    time.sleep(cfg.seconds)
    record = {"start": start, "end": time.time(), "pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "concepts": list(cfg.concepts),
              "resources": {k: v for k, v in ray.get_runtime_context().get_assigned_resources().items()
                            if k in ("CPU", "GPU")}}
    name = "-".join(str(c) for c in cfg.concepts)
    with open(os.path.join(cfg.record_dir, f"{name}.json"), "w") as fh:
        json.dump(record, fh)
    return f"placement: {name}"
