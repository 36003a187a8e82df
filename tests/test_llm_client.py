"""LLM client against a real chat-completions HTTP server on 127.0.0.1: retries, timeouts, concurrency, validation,
the response cache in a real catalog, and the wire format of the openai backend."""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest

from axwarehouse.catalog import Catalog
from axwarehouse.errors import AxwError
from axwarehouse.llm import LLMClient, LLMRequest, ResponseCache, make_backend
from axwarehouse.llm.fake_server import FakeChatServer

SECRET = "sk-test-DO-NOT-LEAK-4f1d9a7b"


@pytest.fixture
def server():
    with FakeChatServer(responder=lambda body: "pong: " + body["messages"][-1]["content"]) as srv:
        yield srv


def _client(srv, cache=None, **kw) -> LLMClient:
    backend = make_backend("openai-compatible:fake-model", base_url=srv.base_url, timeout=kw.pop("timeout", 5.0),
                           concurrency=kw.get("concurrency", 8))
    kw.setdefault("backoff_s", 0.01)
    return LLMClient(backend, cache or ResponseCache(None), **kw)


def _reqs(n: int) -> list[LLMRequest]:
    return [LLMRequest.user(f"ping {i}", seed=i, max_tokens=20) for i in range(n)]


def test_answers_in_order_with_tokens(server):
    with _client(server) as client:
        out = client.run(_reqs(5))
    assert [o.value for o in out] == [f"pong: ping {i}" for i in range(5)]
    assert all(o.ok and o.calls == 1 for o in out)
    assert client.stats.calls == 5 and server.chat_requests == 5
    assert client.stats.prompt_tokens == 10 and client.stats.completion_tokens == 15  # server's usage block


@pytest.mark.parametrize("status", ["429", "500"])
def test_retries_transient_status(server, status):
    server.faults.extend([status, status])
    with _client(server, max_retries=3) as client:
        out = client.run(_reqs(1))
    assert out[0].ok and out[0].value == "pong: ping 0"
    assert server.chat_requests == 3  # two failures + the success
    assert client.stats.transport_retries == 2


def test_gives_up_after_max_retries(server):
    server.faults.extend(["500"] * 10)
    with _client(server, max_retries=2) as client:
        out = client.run(_reqs(1))
    assert not out[0].ok and out[0].error.startswith("transport: HTTP 500")
    assert server.chat_requests == 3
    assert client.stats.failures == 1


def test_timeout_is_retried_then_succeeds(server):
    server.faults.append("sleep:1.5")
    with _client(server, timeout=0.5, max_retries=2) as client:
        t0 = time.perf_counter()
        out = client.run(_reqs(1))
        elapsed = time.perf_counter() - t0
    assert out[0].ok
    assert client.stats.transport_retries == 1
    assert elapsed < 1.4  # the slow answer was abandoned at the 0.5 s timeout, not waited for


def test_timeout_exhausted_is_a_failure(server):
    server.fault_for["ping 0"] = "sleep:1.0"
    with _client(server, timeout=0.3, max_retries=1) as client:
        out = client.run(_reqs(2))
    assert not out[0].ok and "timeout" in out[0].error
    assert out[1].ok


def test_concurrency_bound_is_respected(server):
    server.delay_s = 0.15
    with _client(server, concurrency=3) as client:
        t0 = time.perf_counter()
        out = client.run(_reqs(12))
        elapsed = time.perf_counter() - t0
    assert all(o.ok for o in out)
    assert server.max_in_flight == 3  # measured by the server: never more, and the bound was actually used
    assert elapsed >= 4 * 0.15 * 0.9  # 12 requests / 3 at a time = 4 waves


def test_bad_answers_are_retried_then_counted(server):
    server.faults.extend(["malformed", "empty"])  # the next two answers are bad, the third is good
    with _client(server, max_attempts=3) as client:
        first = client.run(_reqs(1))[0]
        server.fault_for["ping 1"] = "refuse"  # request 1 always refuses
        server.fault_for["ping 2"] = "truncate"  # request 2 always hits max_tokens
        out = client.run(_reqs(3))
    assert first.ok and first.history == ["malformed", "empty"] and first.calls == 3
    assert not out[1].ok and out[1].history == ["refused"] * 3
    assert not out[2].ok and out[2].error == "truncated"
    # ping 0 in the second batch replays its three cached attempts (2 bad + 1 good) without a call
    assert out[0].ok and out[0].cache_hits == 3 and out[0].calls == 0
    assert client.stats.failures == 2 and client.stats.bad_answers == 2 + 2 + 6


def test_auth_error_aborts_with_clear_message(server):
    server.faults.append("401")
    with _client(server) as client, pytest.raises(AxwError, match="rejected the credentials"):
        client.run(_reqs(1))


def test_cache_in_catalog_makes_warm_run_free(server, tmp_path):
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        with cat.run("test", {}) as run:
            cache = ResponseCache(cat, run, stage="test")
            with _client(server, cache=cache) as client:
                cold = client.run(_reqs(4))
            cache.flush()
        assert server.chat_requests == 4
        with cat.run("test", {}) as run:
            cache = ResponseCache(cat, run, stage="test")
            with _client(server, cache=cache) as client:
                warm = client.run(_reqs(4))
            assert cache.flush() == 0
        assert server.chat_requests == 4  # nothing sent
        assert [o.value for o in warm] == [o.value for o in cold]
        assert client.stats.cache_hits == 4 and client.stats.calls == 0
        rows = cat.sql("SELECT backend, model, endpoint, ok, prompt_tokens, cost_usd FROM llm_calls").fetchall()
        assert len(rows) == 4
        assert rows[0][:4] == ("openai-compatible", "fake-model", server.base_url, True)


def test_bad_answer_sequence_replays_from_cache(server, tmp_path):
    server.faults.extend(["empty"])
    with Catalog(tmp_path / "catalog.duckdb") as cat:
        for expected_calls in (2, 2):
            with cat.run("test", {}) as run:
                cache = ResponseCache(cat, run, stage="test")
                with _client(server, cache=cache) as client:
                    out = client.run(_reqs(1))
                cache.flush()
            assert out[0].ok and out[0].history == ["empty"]
            assert server.chat_requests == expected_calls
        assert cat.count("llm_calls") == 2  # attempt 0 (empty) and attempt 1 (good), each cached once


def test_openai_backend_sends_what_the_sdk_sends(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    req = LLMRequest.user("hello there", temperature=0.7, max_tokens=33, seed=5)
    backend = make_backend("openai:gpt-4o-mini", base_url=server.base_url)
    with LLMClient(backend, ResponseCache(None)) as client:
        assert client.run([req])[0].ok

    async def reference() -> None:  # the SDK used directly, reading OPENAI_API_KEY like our backend
        async with openai.AsyncOpenAI(base_url=server.base_url, max_retries=0) as sdk:
            await sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}],
                                              temperature=0.7, max_tokens=33, seed=5)

    asyncio.run(reference())
    ours, theirs = server.requests
    assert ours.path == theirs.path == "/v1/chat/completions"
    assert ours.body == theirs.body
    assert ours.headers["authorization"] == theirs.headers["authorization"] == f"Bearer {SECRET}"
    for h in ("content-type", "x-stainless-lang", "x-stainless-package-version"):
        assert ours.headers[h] == theirs.headers[h]
    assert ours.headers["user-agent"] == theirs.headers["user-agent"]


def test_openai_key_is_not_sent_to_compatible_servers(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("AXW_LLM_API_KEY", raising=False)
    with _client(server) as client:
        client.run(_reqs(1))
    assert SECRET not in json.dumps(server.requests[0].headers)


def test_missing_key_and_bad_spec_are_clear_errors(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AxwError, match="OPENAI_API_KEY"):
        make_backend("openai:gpt-4o-mini")
    with pytest.raises(AxwError, match="BACKEND:MODEL"):
        make_backend("gpt-4o-mini")
    with pytest.raises(AxwError, match="--llm-base-url"):
        make_backend("openai-compatible:x")
