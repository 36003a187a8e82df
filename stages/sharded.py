"""`--workers N` / `--ray-address ADDR` for activations, train, latent, steer and judge (embedded judge): the stage
split into concept shards on Ray (axwarehouse/distributed.py). Each shard runs the stage's own function with
``concepts`` set to the shard, so its rows are those a single process writes for those concepts.
"""

from __future__ import annotations

import dataclasses

from axwarehouse.catalog import Catalog
from axwarehouse.concept_queries import concept_table
from axwarehouse.distributed import RayOptions, run_sharded, shards_of
from axwarehouse.errors import AxwError

STAGES = {
    "activations": "stages.activations:run_activations",
    "train": "stages.train:run_train",
    "latent": "stages.latent:run_latent",
    "steer": "stages.steer:run_steer",
    "judge": "stages.judge:run_judge",
}


def _concepts(cat: Catalog, stage: str, cfg) -> list[int]:
    ids = [c for c, _, _ in concept_table(cat, cfg.concept_set, tuple(getattr(cfg, "concepts", ()) or ()))]
    if stage == "activations" and not cfg.concepts:
        ids = [-1, *ids]  # the shared negatives are a shard of their own
    return ids


def run_on_ray(cat: Catalog, stage: str, cfg, opts: RayOptions) -> str:
    """Run ``stage`` with ``cfg`` over concept shards on Ray; a summary of what the shards did."""
    from axwarehouse.lm.loader import check_device

    if stage == "judge" and not cfg.concept_set:
        raise AxwError("judge on Ray shards a concept set's outputs: give -c/--concept-set")
    if stage == "judge" and not cfg.judge.startswith("embedded"):
        raise AxwError("judge on Ray runs the embedded judge; an HTTP judge already runs concurrently "
                       "(--judge-concurrency)")
    if stage == "train":
        from axwarehouse.methods import get, method_names

        joint = [n for n in method_names(list(cfg.methods)) if get(n).joint]
        if joint:
            raise AxwError(f"joint methods ({', '.join(joint)}) fit every concept at once in one process: train them "
                           "without --workers / --ray-address")
        if cfg.replace:
            raise AxwError("--replace deletes rows, which only a single process may do: run it without --workers")
    device = getattr(cfg, "device", "cpu")
    gpu = device.startswith("cuda")
    if gpu and opts.address is None:
        check_device(device)
    if opts.workers < 0:
        raise AxwError("--workers must be at least 1")
    ids = _concepts(cat, stage, cfg)
    if gpu:
        cfg = dataclasses.replace(cfg, device="cuda")  # each task sees only the GPU Ray gave it, as cuda:0
    shards = shards_of(ids, max(1, opts.workers))
    summaries = run_sharded(cat, stage, STAGES[stage], cfg, shards, opts, gpu=gpu)
    lines = [f"{stage}: {len(shards)} concept shards on Ray ({opts.workers or 'cluster'} workers), all committed"]
    return "\n".join(lines + [f"  {line}" for s in summaries for line in s.splitlines() if line.strip()])
