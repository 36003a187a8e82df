"""Benchmark `axw generate`: LLM calls/s on a cold run, and the speed-up of warm re-runs served by `llm_calls`.

The LLM is a real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol
(:class:`axwarehouse.llm.fake_server.FakeChatServer`) with a fixed per-call latency standing in for a hosted model;
the target model that writes the shared negatives is a tiny random-init Llama with SmolLM2's tokenizer (built here,
offline), so the figures measure the generation pipeline — client, cache, catalog — not a language model.

Three runs on the same catalog:
  cold     every call goes to the server
  warm     same config again: all concepts complete, skipped (no call, no row)
  replay   generations deleted, llm_calls kept (e.g. a crash before the rows were written, or a lost warehouse
           folder with the ledger kept): every answer is replayed from the cache, 0 calls

Usage: python bench/generate.py [--concepts 10] [--n-train 72] [--n-eval 36] [--latency 0.05] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from axwarehouse.catalog import Catalog  # noqa: E402
from axwarehouse.llm.fake_server import FakeChatServer  # noqa: E402
from axwarehouse.stages.concepts import import_concepts  # noqa: E402
from axwarehouse.stages.generate import GenerateConfig, run_generate  # noqa: E402

CONCEPTS = ["references to rivers and lakes", "Python exceptions", "fractions and ratios", "legal contracts",
            "music theory terms", "weather forecasts", "SQL joins", "probability of events", "cooking techniques",
            "sports scores", "ancient Rome", "recursion in programs", "geometry of circles", "emotions of sadness",
            "space exploration", "HTTP status codes"]


def tiny_target(root: Path) -> Path:
    """A 2-layer random-init Llama with SmolLM2's tokenizer (suppressing special/blank tokens)."""
    import torch
    import transformers

    from axwarehouse.model.loader import resolve
    from axwarehouse.model.tokenizer import load_tokenizer

    src = resolve("embedded:smollm2")
    tok = load_tokenizer(src.path, src.gguf_file)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    out = root / "tiny-target"
    transformers.LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    gen = transformers.GenerationConfig.from_pretrained(out)
    blank = [i for i in range(len(tok)) if not tok.decode([i], skip_special_tokens=True).strip()]
    gen.suppress_tokens = sorted(set(tok.all_special_ids) | set(blank))
    gen.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=72)
    ap.add_argument("--n-eval", type=int, default=36)
    ap.add_argument("--output-length", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.05, help="server seconds per call")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeChatServer(delay_s=args.latency) as srv:
        root = Path(tmp)
        target = tiny_target(root)
        lst = root / "bench.txt"
        lst.write_text("\n".join(CONCEPTS[: args.concepts]) + "\n")
        cfg = GenerateConfig(concept_set="bench", n_train=args.n_train, n_eval=args.n_eval,
                             output_length=args.output_length, llm="openai-compatible:bench-model",
                             llm_base_url=srv.base_url, target_model=str(target), concurrency=args.concurrency,
                             chunk_concepts=16)
        with Catalog(root / "catalog.duckdb") as cat:
            import_concepts(cat, lst, "bench")
            from axwarehouse.model.loader import load

            load(str(target))  # load once outside the timings

            t0 = time.perf_counter()
            cold = run_generate(cat, cfg, progress=False)
            t_cold = time.perf_counter() - t0
            http_cold = srv.chat_requests
            rows = cat.count("generations", "concept_set = 'bench'")
            # embedded latency = batch wall time shared by its requests, so the sum is the phase's wall time
            t_target = cat.sql("SELECT coalesce(sum(latency_s), 0) FROM llm_calls "
                               "WHERE purpose = 'shared_negative'").fetchall()[0][0]

            t0 = time.perf_counter()
            warm = run_generate(cat, cfg, progress=False)
            t_warm = time.perf_counter() - t0

            cat.delete_where("generations", "concept_set = 'bench'")
            t0 = time.perf_counter()
            replay = run_generate(cat, cfg, progress=False)
            t_replay = time.perf_counter() - t0
            rows_replay = cat.count("generations", "concept_set = 'bench'")
        http_total = srv.chat_requests

    llm_calls = http_cold  # HTTP calls; the target model's shared negatives are extra, in-process calls
    print(f"config: {args.concepts} concepts, n_train={args.n_train}, n_eval={args.n_eval}, "
          f"output_length={args.output_length}, server latency {args.latency * 1000:.0f} ms, "
          f"concurrency {args.concurrency}")
    print(f"cold:   {t_cold:7.2f} s  {cold.calls} calls ({llm_calls} HTTP + {cold.calls - llm_calls} target-model "
          f"in {t_target:.1f} s), {rows} rows; {llm_calls / (t_cold - t_target):.1f} HTTP calls/s in the LLM phases "
          f"({llm_calls / t_cold:.1f}/s overall)")
    print(f"warm:   {t_warm:7.2f} s  {warm.calls} calls, {http_total - http_cold} HTTP requests "
          f"(all concepts complete, skipped) -> {t_cold / t_warm:,.0f}x faster")
    print(f"replay: {t_replay:7.2f} s  {replay.calls} calls, {replay.cache_hits} cache hits, {rows_replay} rows "
          f"rebuilt -> {t_cold / t_replay:,.1f}x faster, {replay.cache_hits / t_replay:,.0f} cache hits/s")
    assert http_total == http_cold and replay.calls == 0 and rows_replay == rows


if __name__ == "__main__":
    main()
