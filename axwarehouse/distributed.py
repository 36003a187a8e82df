"""Run a stage over concept shards on Ray: ``--workers N`` (a local Ray cluster) or ``--ray-address ADDR``.

The driver (the ``axw`` process, which holds the catalog) splits the concepts into shards and submits one Ray task
per shard. A task runs the stage's ordinary function — the same code as a single-process run — with ``concepts`` set
to its shard, against a :class:`~axwarehouse.staging.WorkerCatalog`: it reads the warehouse's Parquet files and
stages its part files (never opening ``catalog.duckdb``). The driver commits each finished shard into the tables
(:func:`~axwarehouse.staging.commit_shard`) inside one ``runs`` row. Ray retries a task whose worker process died
(``retries``); a shard that still fails is reported, the others stay committed, and a re-run computes only what is
missing (every stage is incremental by key). Ray is imported only here, only when asked for (``pip install
'axwarehouse[ray]'``).

Placement: every task declares one CPU (the Python loop that feeds the model), and on GPUs one GPU
(``num_gpus=1``), running on ``cuda`` — Ray's CUDA_VISIBLE_DEVICES makes that the GPU it was given. ``--workers N``
bounds the tasks alive at once to N twice over: a local cluster is started with exactly N CPUs (and N GPUs with
``--device cuda``, 0 otherwise), and the driver never has more than N tasks submitted at a time — which also holds
on a cluster joined with ``--ray-address``. A local cluster cannot have more workers than GPUs (one-line error); on
a joined cluster tasks beyond its free GPUs wait for one.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.staging import FAULT_ENV, commit_shard, complete_shard, new_shard_folder, shard_folder


@dataclasses.dataclass(frozen=True)
class RayOptions:
    workers: int = 0  # local Ray cluster with this many worker slots (0 = single process unless an address is set)
    address: str | None = None  # join an existing cluster (ray://host:10001 or host:6379)
    retries: int = 2  # re-runs of a shard whose worker died

    @property
    def requested(self) -> bool:
        return self.workers > 0 or bool(self.address)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise AxwError("--workers/--ray-address need Ray: pip install 'axwarehouse[ray]'") from exc
    return ray


def shards_of(concepts: Sequence[int], slots: int) -> list[tuple[int, ...]]:
    """Concepts split into about 4 shards per worker slot (small shards: a retry redoes little), in order."""
    concepts = list(concepts)
    if not concepts:
        return []
    size = max(1, math.ceil(len(concepts) / max(1, 4 * slots)))
    return [tuple(concepts[i: i + size]) for i in range(0, len(concepts), size)]


def visible_gpus() -> int:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES applies); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_cluster_resources(workers: int, gpu: bool, gpus_present: int) -> dict[str, int]:
    """``ray.init`` resources of a local cluster for ``--workers N``: N CPU slots, and N GPUs with ``--device cuda``
    (none otherwise, so Ray never hands out a GPU it found by itself). More workers than GPUs is an error."""
    if workers < 1:
        raise AxwError("--workers must be at least 1")
    if gpu and workers > gpus_present:
        raise AxwError(f"--workers {workers} asks for one GPU per worker but {gpus_present} GPU(s) are visible: "
                       f"give --workers {gpus_present} or fewer" if gpus_present else
                       f"--workers {workers} with --device cuda needs GPUs, and none is visible")
    return {"num_cpus": workers, "num_gpus": workers if gpu else 0}


def task_resources(gpu: bool) -> dict[str, int]:
    """What one shard task declares: the CPU that drives it, and its own GPU on ``cuda``."""
    return {"num_cpus": 1, "num_gpus": 1 if gpu else 0}


def _run_shard(fn_path: str, cfg_type: str, cfg: dict[str, Any], warehouse: str, stage: str, run_id: str,
               shard: int, fault: str | None) -> dict[str, Any]:
    """Inside a Ray worker: run the stage function on one shard with staged writes; return its summary."""
    from axwarehouse.staging import WorkerCatalog

    module, _, name = fn_path.partition(":")
    fn = getattr(importlib.import_module(module), name)
    cmod, _, cname = cfg_type.partition(":")
    cfg_cls = getattr(importlib.import_module(cmod), cname)
    folder = new_shard_folder(Path(warehouse), stage, run_id, shard)
    cat = WorkerCatalog(Path(warehouse), folder, run_id, shard, fault)
    try:
        result = fn(cat, cfg_cls(**cfg))
    finally:
        cat.close()
    complete_shard(folder)
    summary = result.summary() if hasattr(result, "summary") else str(result)
    return {"shard": shard, "summary": summary}


def run_sharded(cat: Catalog, stage: str, fn_path: str, cfg: Any, shards: list[tuple[int, ...]],
                opts: RayOptions, gpu: bool = False, concepts_field: str = "concepts") -> list[str]:
    """Run ``fn_path`` (``module:function(cat, cfg)``) once per shard on Ray; commit each finished shard.

    Returns the shards' summaries. Raises AxwError naming the shards that failed after their retries (the others are
    committed; running the same command again computes only what is missing).
    """
    ray = _import_ray()
    cfg_type = f"{type(cfg).__module__}:{type(cfg).__qualname__}"
    base = dataclasses.asdict(cfg)
    config = {**base, "workers": opts.workers, "ray_address": bool(opts.address), "shards": len(shards)}
    fault = os.environ.get(FAULT_ENV)
    if not ray.is_initialized():
        if opts.address:
            try:
                ray.init(address=opts.address, log_to_driver=False)
            except Exception as exc:  # ConnectionError and Ray's own errors: one line, not a traceback
                raise AxwError(f"cannot join the Ray cluster at {opts.address}: {str(exc).splitlines()[0]}") from exc
        else:
            resources = local_cluster_resources(opts.workers, gpu, visible_gpus() if gpu else 0)
            ray.init(**resources, include_dashboard=False, log_to_driver=False, configure_logging=False)
    if gpu and ray.cluster_resources().get("GPU", 0) < 1:
        raise AxwError("--device cuda on Ray needs a GPU in the cluster, and it has none")
    task = ray.remote(_run_shard).options(max_retries=opts.retries, **task_resources(gpu))
    window = opts.workers or len(shards)  # tasks submitted at once: --workers N never has more than N alive
    summaries: list[str] = []
    failures: list[tuple[tuple[int, ...], str]] = []
    with cat.run(stage, config) as run:  # (what a dead driver left was settled when `cat` was opened)
        refs: dict[Any, int] = {}
        pending: list[Any] = []

        def submit(k: int) -> None:
            shard_cfg = {**base, concepts_field: tuple(shards[k])}
            ref = task.remote(fn_path, cfg_type, shard_cfg, str(cat.warehouse), stage, run.run_id, k, fault)
            refs[ref] = k
            pending.append(ref)

        queue = iter(range(len(shards)))
        for k in itertools.islice(queue, window):
            submit(k)
        while pending:
            done, pending[:] = ray.wait(pending, num_returns=1)
            for k in itertools.islice(queue, len(done)):  # a finished task makes room for the next shard
                submit(k)
            for ref in done:
                k = refs[ref]
                try:
                    out = ray.get(ref)
                except ray.exceptions.WorkerCrashedError:
                    failures.append((shards[k], f"its worker died in every attempt ({1 + opts.retries})"))
                    continue
                except Exception as exc:  # the task raised: the stage's own error, one line
                    cause = getattr(exc, "cause", None)
                    msg = str(cause) if cause is not None else str(exc)
                    failures.append((shards[k], msg.strip().splitlines()[-1] if msg.strip() else type(exc).__name__))
                    continue
                commit_shard(cat, shard_folder(cat.warehouse, stage, run.run_id, k), run)
                summaries.append(out["summary"])
        if failures:
            (first, why), n = failures[0], len(failures)
            raise AxwError(f"{n} of {len(shards)} shards failed (concepts {list(first)}: {why}); the other shards "
                           "are committed: run the same command again to compute what is missing")
    return summaries
