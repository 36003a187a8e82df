"""The response cache: the ``llm_calls`` table, keyed by a hash of everything that defines a response.

Key = sha256 of canonical JSON {backend, model, messages, params, seed, attempt}. The endpoint URL is stored but is
not part of the key (the same model behind a restarted server on a new port keeps its cache), and no header, key or
token is ever part of a request, so nothing secret can reach the table.

Rows are buffered in memory and appended through the stage's :class:`~axwarehouse.catalog.Run` on :meth:`flush`
(atomic Parquet files), so a killed stage keeps every flushed call and a re-run pays only for the rest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

from axwarehouse.llm.types import Completion, LLMRequest
from axwarehouse.schemas import data_columns

if TYPE_CHECKING:
    from axwarehouse.catalog import Catalog, Run

TABLE = "llm_calls"


def request_json(req: LLMRequest, attempt: int) -> str:
    """What is stored in ``llm_calls.request`` (and hashed with backend/model): messages, params, seed, attempt."""
    body = {"messages": req.message_dicts(), "params": req.params(), "seed": req.seed, "attempt": attempt}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_hash(backend: str, model: str, req: LLMRequest, attempt: int = 0) -> str:
    """Cache key of one call. Attempt n>0 is the n-th retry after a bad answer: a distinct draw, cached on its own."""
    text = json.dumps({"backend": backend, "model": model}, sort_keys=True) + request_json(req, attempt)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Look up and record calls in ``llm_calls`` of a catalog (or only in memory when ``catalog`` is None)."""

    def __init__(self, catalog: Catalog | None, run: Run | None = None, stage: str = ""):
        self.catalog = catalog
        self.run = run
        self.stage = stage
        self._pending: list[dict] = []
        self._memory: dict[str, Completion] = {}

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        """Cached completions for the keys that have one (unflushed rows included)."""
        keys = list(dict.fromkeys(keys))
        found = {k: self._memory[k] for k in keys if k in self._memory}
        rest = [k for k in keys if k not in found]
        if rest and self.catalog is not None and self.catalog.table_files(TABLE):
            rows = self.catalog.con.execute(
                "SELECT request_hash, any_value(response), any_value(finish_reason), any_value(prompt_tokens),"
                " any_value(completion_tokens), any_value(tokens_estimated), any_value(error)"
                f" FROM {TABLE} WHERE request_hash IN (SELECT unnest(?)) GROUP BY request_hash", [rest]).fetchall()
            for key, text, finish, pt, ct, est, error in rows:
                malformed = error if error == "malformed" and text is None else None
                found[key] = Completion(text, finish, int(pt or 0), int(ct or 0), bool(est), 0.0,
                                        malformed=malformed, cached=True)
        return found

    def put(self, key: str, backend: str, model: str, endpoint: str | None, req: LLMRequest, attempt: int,
            comp: Completion, ok: bool, error: str | None, cost: float | None) -> None:
        """Record a call that was made (good or bad answer: both cost money and both are replayed on re-runs)."""
        self._memory[key] = Completion(comp.text, comp.finish_reason, comp.prompt_tokens, comp.completion_tokens,
                                       comp.tokens_estimated, 0.0, comp.malformed, cached=True)
        self._pending.append({
            "request_hash": key, "backend": backend, "model": model, "endpoint": endpoint, "stage": self.stage,
            "purpose": req.purpose, "request": request_json(req, attempt), "response": comp.text,
            "finish_reason": comp.finish_reason, "ok": ok, "error": error, "prompt_tokens": comp.prompt_tokens,
            "completion_tokens": comp.completion_tokens, "tokens_estimated": comp.tokens_estimated,
            "cost_usd": cost, "latency_s": comp.latency_s, "attempt": attempt,
            "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        })

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Append buffered rows to ``llm_calls`` (one atomic file). Returns rows written."""
        if not self._pending or self.run is None:
            return 0
        cols = data_columns(TABLE)
        table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in self._pending])
        n = self.run.write(TABLE, table)
        self._pending.clear()
        return n
