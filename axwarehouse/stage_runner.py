"""One runner for the stages that compute rows unit by unit (activations, train, latent, steer, the LLM judge).

A stage declares *what* to compute and the runner does the rest:

* **which units are missing** — :func:`missing`: the stage's candidate units as one SQL query, anti-joined on the
  output table's key (``NOT EXISTS``), every value bound as a parameter (lists too: :func:`in_list`);
* **the per-unit function** — pure: a unit and its concept's inputs in, Arrow rows out (``Work.compute``), or a
  batched form for stages whose model runs many units per call (``Work.batches``);
* **its output table** — ``Work.table``.

:func:`run_stage` then opens the run (lineage: run id, config hash, code version are stamped on every row by
``Catalog.run``), reads each concept's inputs once for consecutive units of that concept, writes rows in files of
whole units every ``flush_rows`` rows or ``flush_seconds`` seconds (each file atomic, so a killed run keeps what it
flushed and a re-run computes the rest), and shows progress (:mod:`axwarehouse.progress`). Units whose rows replace
older ones (``Work.before_write``) are written one by one, right after that hook.

``--workers``/``--ray-address`` distribute a stage over concept shards (:func:`run_on_ray`): every shard runs the
same stage function with ``concepts`` set to the shard, so the stage itself never sees Ray. A stage says how it may
be split with :func:`shardable`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pyarrow as pa

from axwarehouse.catalog import Catalog, Run
from axwarehouse.errors import AxwError
from axwarehouse.progress import Progress

U = TypeVar("U")


def in_list(column: str, values: Sequence[Any], sql_type: str = "BIGINT") -> tuple[str, list[Any]]:
    """``AND column IN (values)`` with the list bound as one parameter ("" when ``values`` is empty: no filter)."""
    if not values:
        return "", []
    return f" AND {column} IN (SELECT unnest(?::{sql_type}[]))", [list(values)]


def missing(cat: Catalog, candidates: str, params: Sequence[Any], table: str, key: Sequence[str],
            fixed: dict[str, Any] | None = None, order_by: Sequence[str] = ()) -> pa.Table:
    """Rows of ``candidates`` (a SELECT that names the ``key`` columns) with no row in ``table`` yet.

    One anti-join: a candidate is done when ``table`` has a row with the same ``key`` values and the ``fixed`` ones
    (columns constant over the stage run: model, layer, method, config hash, ...), in ``order_by`` order.
    """
    fixed = fixed or {}
    match = [f'o."{k}" = u."{k}"' for k in key] + [f'o."{k}" = ?' for k in fixed]
    sql = (f'SELECT u.* FROM ({candidates}) u WHERE NOT EXISTS '
           f'(SELECT 1 FROM "{table}" o WHERE {" AND ".join(match)})')
    if order_by:
        sql += " ORDER BY " + ", ".join(f'u."{c}"' for c in order_by)
    return cat.arrow(sql, [*params, *fixed.values()])


def _one(_unit: object) -> int:
    return 1


Emit = Callable[[Sequence[Any], pa.Table], None]


@dataclass
class Work(Generic[U]):
    """One output table's units of a stage run, and how to compute them.

    Give ``compute(unit, inputs) -> rows`` (``inputs`` = ``read(concept(unit))``, read once for consecutive units
    of one concept; None without ``read``), or ``batches(units, emit)`` for stages whose model computes many units
    per call: it calls ``emit(units done, their rows)`` as batches finish.
    """

    table: str
    units: Sequence[U]
    compute: Callable[[U, Any], pa.Table] | None = None
    batches: Callable[[Sequence[U], Emit], None] | None = None
    concept: Callable[[U], int] | None = None
    read: Callable[[int], Any] | None = None
    weight: Callable[[U], int] = _one  # progress counts (e.g. tokens of an example)
    flush_rows: int | None = None  # write once this many rows wait (None: at the end)
    flush_seconds: float | None = None  # ...or once this long has passed since the last write
    before_write: Callable[[U], None] | None = None  # e.g. delete the rows a unit's rows replace
    done: Callable[[U, float], None] | None = None  # after each unit: (unit, seconds it took)
    flush_on_error: bool = False  # an interrupted run still writes the units it finished
    label: str = ""  # shown beside the progress counts while this work runs (e.g. the method)
    status: Callable[[], str] | None = None  # ...or this, asked after every batch (e.g. tokens/s)

    def produce(self, emit: Emit) -> None:
        """Compute every unit, handing (units, their rows) to ``emit`` as they are done."""
        if self.batches is not None:
            self.batches(self.units, emit)
            return
        if self.compute is None:
            raise TypeError("Work needs compute or batches")
        cached: tuple[int, Any] | None = None
        for unit in self.units:
            inputs = None
            if self.read is not None and self.concept is not None:
                cid = self.concept(unit)
                if cached is None or cached[0] != cid:
                    cached = None  # the previous concept's inputs go before the next ones are read
                    cached = (cid, self.read(cid))
                inputs = cached[1]
            started = time.perf_counter()
            rows = self.compute(unit, inputs)
            if self.done is not None:
                self.done(unit, time.perf_counter() - started)
            emit((unit,), rows)


class _Buffer:
    """Rows waiting to be written to one table; written as one append (files of whole units)."""

    def __init__(self, run: Run, table: str, rows: int | None, seconds: float | None) -> None:
        self.run, self.table, self.rows, self.seconds = run, table, rows, seconds
        self.parts: list[pa.Table] = []
        self.n = 0
        self.since = time.perf_counter()

    def add(self, rows: pa.Table | None) -> None:
        if rows is not None and rows.num_rows:
            self.parts.append(rows)
            self.n += rows.num_rows

    def due(self) -> bool:
        return ((self.rows is not None and self.n >= self.rows)
                or (self.seconds is not None and time.perf_counter() - self.since > self.seconds))

    def flush(self) -> None:
        if self.parts:
            self.run.write(self.table, pa.concat_tables(self.parts, promote_options="default"))
        self.parts, self.n, self.since = [], 0, time.perf_counter()


def run_work(run: Run, work: Work, bar: Progress) -> None:
    """Compute ``work``'s units inside ``run``, writing rows as the flush rules say."""
    buffer = _Buffer(run, work.table, work.flush_rows, work.flush_seconds)
    if work.label:
        bar.set_postfix(work.label)

    def emit(units: Sequence[Any], rows: pa.Table) -> None:
        if work.before_write is not None:
            buffer.flush()
            for unit in units:
                work.before_write(unit)
            buffer.add(rows)
            buffer.flush()
        else:
            buffer.add(rows)
            if buffer.due():
                buffer.flush()
        bar.update(sum(work.weight(u) for u in units))
        if work.status is not None:
            bar.set_postfix(work.status())

    try:
        work.produce(emit)
    except BaseException:
        if work.flush_on_error:
            buffer.flush()
        raise
    buffer.flush()


def run_stage(cat: Catalog, stage: str, config: dict[str, Any], works: Sequence[Work], *, desc: str,
              unit: str = "unit", progress: bool = True, prepare: Callable[[Run], None] | None = None) -> Run:
    """Run ``works`` in one ``runs`` row of ``stage`` with lineage ``config``; ``prepare(run)`` first (rows the
    units need, e.g. the instruction sets). One progress display counts every work's units."""
    total = sum(w.weight(u) for w in works for u in w.units)
    with cat.run(stage, config) as run, Progress(total, desc, unit, enabled=progress) as bar:
        if prepare is not None:
            prepare(run)
        for work in works:
            run_work(run, work, bar)
    return run


# -- concept shards on Ray -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sharding:
    """How a stage splits into concept shards."""

    negatives: bool = False  # the shared negatives (concept -1) are a shard of their own
    check: Callable[[Any], None] | None = None  # raise AxwError when ``cfg`` cannot run as shards


def shardable(negatives: bool = False, check: Callable[[Any], None] | None = None) -> Callable:
    """Decorator: the stage function ``fn(cat, cfg)`` (``cfg.concepts`` a tuple) may run over concept shards."""

    def mark(fn: Callable) -> Callable:
        fn.sharding = Sharding(negatives, check)
        return fn

    return mark


def _shard_concepts(cat: Catalog, cfg: Any, sharding: Sharding) -> list[int]:
    from axwarehouse.concept_queries import concept_table

    ids = [c for c, _, _ in concept_table(cat, cfg.concept_set, tuple(getattr(cfg, "concepts", ()) or ()))]
    if sharding.negatives and not cfg.concepts:
        ids = [-1, *ids]
    return ids


def run_on_ray(cat: Catalog, fn: Callable, cfg: Any, opts: Any) -> str:
    """Run the stage function ``fn`` with ``cfg`` over concept shards on Ray; a summary of what the shards did."""
    from axwarehouse.distributed import run_sharded, shards_of
    from axwarehouse.model.loader import check_device

    sharding: Sharding | None = getattr(fn, "sharding", None)
    stage = fn.__module__.rpartition(".")[2]
    if sharding is None:
        raise AxwError(f"{stage} does not run on Ray shards")
    if sharding.check is not None:
        sharding.check(cfg)
    device = getattr(cfg, "device", "cpu")
    gpu = device.startswith("cuda")
    if gpu and opts.address is None:
        check_device(device)
    if opts.workers < 0:
        raise AxwError("--workers must be at least 1")
    ids = _shard_concepts(cat, cfg, sharding)
    if gpu:
        cfg = dataclasses.replace(cfg, device="cuda")  # each task sees only the GPU Ray gave it, as cuda:0
    shards = shards_of(ids, max(1, opts.workers))
    summaries = run_sharded(cat, stage, f"{fn.__module__}:{fn.__name__}", cfg, shards, opts, gpu=gpu)
    lines = [f"{stage}: {len(shards)} concept shards on Ray ({opts.workers or 'cluster'} workers), all committed"]
    return "\n".join(lines + [f"  {line}" for s in summaries for line in s.splitlines() if line.strip()])
