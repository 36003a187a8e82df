"""The ``embedded`` backend: a local causal LM (SmolLM2-135M-Instruct by default) answering in process, offline.

Requests are answered in batches through one ``model.generate`` call each (left padding, chat template with the
generation prompt), which is ~batch-size times faster than one prompt at a time on CPU. ``temperature == 0`` means
greedy decoding (AxBench's setting for the target model's shared negatives).

Determinism: sampling is seeded per batch from the requests' seeds, so a cold run with the same batches reproduces
its answers; a warm run is exact anyway because answers come from the ``llm_calls`` cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from axwarehouse.llm.types import Completion, LLMRequest

DEFAULT_MAX_NEW_TOKENS = 256


class EmbeddedBackend:
    """Answer chat requests with a model loaded by :func:`axwarehouse.model.loader.load`."""

    batched = True
    endpoint = None

    def __init__(self, model: str = "embedded:smollm2", batch_size: int = 8):
        from axwarehouse.model.loader import resolve, resolve_dtype

        self.name = "embedded"
        self.model = resolve(model).name  # validates the spec now (AxwError), loads weights on first use
        self._spec = model
        self.batch_size = batch_size
        # bfloat16 where the CPU/GPU does it natively (AxBench itself runs bf16); `axw judge --dtype` sets it
        self.dtype = resolve_dtype("auto")

    def _lm(self):
        from axwarehouse.model.loader import load

        return load(self._spec, self.dtype)

    async def complete_batch(self, reqs: list[LLMRequest]) -> list[Completion]:
        """Answer ``reqs`` (same sampling parameters expected; mixed ones are split) in a worker thread."""
        return await asyncio.to_thread(self._generate_all, reqs)

    def _generate_all(self, reqs: list[LLMRequest]) -> list[Completion]:
        out: dict[int, Completion] = {}
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault((r.temperature, r.max_tokens, r.top_p), []).append(i)
        for idx in groups.values():
            for j, comp in zip(idx, self._generate([reqs[i] for i in idx])):
                out[j] = comp
        return [out[i] for i in range(len(reqs))]

    def _generate(self, reqs: list[LLMRequest]) -> list[Completion]:
        import torch

        lm = self._lm()
        tok, model = lm.tokenizer, lm.model
        prompts = [tok.apply_chat_template(r.message_dicts(), tokenize=False, add_generation_prompt=True)
                   for r in reqs]
        first = reqs[0]
        side = tok.padding_side
        tok.padding_side = "left"  # generation continues from the last position of every row
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        enc = enc.to(model.device)  # wherever the stage put the model (judge --device)
        sample = first.temperature > 0
        gen_kwargs = {"max_new_tokens": first.max_tokens or DEFAULT_MAX_NEW_TOKENS, "do_sample": sample,
                      "pad_token_id": tok.pad_token_id}
        if sample:
            gen_kwargs["temperature"] = first.temperature
            gen_kwargs["top_p"] = first.top_p if first.top_p is not None else 1.0
            gen_kwargs["top_k"] = 0  # plain temperature sampling, as the hosted APIs do
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        seeds = ",".join(str(r.seed) for r in reqs)
        torch.manual_seed(int(hashlib.sha256(seeds.encode()).hexdigest()[:8], 16))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **gen_kwargs)
        latency = (time.perf_counter() - t0) / len(reqs)  # the batch's wall time shared equally
        new = out[:, enc["input_ids"].shape[1]:]
        eos_cfg = model.generation_config.eos_token_id
        eos = set(eos_cfg if isinstance(eos_cfg, list) else [eos_cfg]) | {tok.eos_token_id}
        eos.discard(None)
        results = []
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        for row, plen in zip(new.tolist(), prompt_lens):
            stop_at = next((k for k, t in enumerate(row) if t in eos), None)
            body = row if stop_at is None else row[:stop_at]
            text = tok.decode(body, skip_special_tokens=True).strip()
            finish = "length" if stop_at is None else "stop"
            results.append(Completion(text, finish, int(plen), len(body) + (stop_at is not None), False, latency))
        return results

    async def aclose(self) -> None:
        return None
