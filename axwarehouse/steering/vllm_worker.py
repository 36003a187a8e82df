"""The vLLM worker side of ``axw steer --engine vllm``: per-request steering inside vLLM's own dynamic batch.

Imported only inside vLLM's engine process (the optional ``vllm`` extra), never by the rest of the project. Three
pieces, each on one of vLLM's documented extension points rather than a fork or a patched copy:

* :class:`RowSampler`, a batch-level logits processor (``LLM(logits_processors=[...])``). vLLM tells it which
  request sits at which batch index (``update_state``); it keeps, per index, the request's steering direction,
  strength, seed and temperature from ``SamplingParams.extra_args["axw"]``, and at every step picks each row's
  token with :func:`axwarehouse.steering.sampling.sample_tokens` (the counter-based draw the other engines use), so
  a seeded row draws the same uniforms whatever shares its batch. The request runs with vLLM's greedy sampler,
  which then takes the one token left finite.
* A forward hook on decoder block L that adds a per-token delta to the block's output: AxBench's intervention
  (``factor · magnitude · w`` at every position, prompt included). vLLM's blocks hand the residual stream on as
  ``(hidden, residual)`` and the next block (or the final norm) adds the two; the hook hands on the summed stream
  plus the delta as ``residual`` and zeros as ``hidden``.
* A worker subclass (``LLM(worker_cls=...)``) that installs the hook right after the model loads (before vLLM
  compiles it, so the hook is part of the traced graph) and wraps the model runner's ``_model_forward`` (vLLM's
  stated override point) to fill the delta buffer for the step: each scheduled token gets its request's row of the
  direction table times its strength, from the batch's ``query_start_loc``. The table arrives once per sweep by
  ``collective_rpc("axw_set_directions")``. Per step this is a handful of tensor operations; no Python loop over
  rows except the sampler's read of each row's output length.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from axwarehouse.model.loader import decoder_layers
from axwarehouse.steering.sampling import sample_tokens

try:  # the base class must be vLLM's for the engine to accept the processor
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
except ImportError:  # pragma: no cover - only imported where vLLM is installed
    LogitsProcessor = object  # type: ignore[assignment,misc]

LAYER_KEY = "axw_steering_layer"  # vllm_config.additional_config entry naming block L
ARGS_KEY = "axw"  # SamplingParams.extra_args entry of a steered or counter-sampled row


class RowSampler(LogitsProcessor):
    """Counter-based sampling per request, and the per-index steering parameters the forward hook reads."""

    def __init__(self, vllm_config, device, is_pin_memory: bool):
        n = vllm_config.scheduler_config.max_num_seqs
        self.direction = torch.full((n,), -1, dtype=torch.long)  # row of the direction table; -1: unsteered
        self.strength = torch.zeros(n, dtype=torch.float32)
        self.seed = torch.zeros(n, dtype=torch.long)
        self.temperature = torch.zeros(n, dtype=torch.float64)
        self.outputs: list[list[int] | None] = [None] * n  # vLLM's live list of each row's output tokens

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        args = (sampling_params.extra_args or {}).get(ARGS_KEY)
        if args is not None and sampling_params.temperature != 0.0:
            raise ValueError("axw rows sample through the logits processor: give vLLM temperature 0")

    def is_argmax_invariant(self) -> bool:
        return False

    def _clear(self, i: int) -> None:
        self.direction[i], self.strength[i], self.outputs[i] = -1, 0.0, None

    def _swap(self, a: int, b: int) -> None:
        for t in (self.direction, self.strength, self.seed, self.temperature):
            t[[a, b]] = t[[b, a]]
        self.outputs[a], self.outputs[b] = self.outputs[b], self.outputs[a]

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update:
            return
        for i in batch_update.removed:
            self._clear(i)
        for i, params, _prompt, out in batch_update.added:
            args = (params.extra_args or {}).get(ARGS_KEY) if params is not None else None
            if args is None:
                self._clear(i)
                continue
            self.direction[i] = int(args["direction"])
            self.strength[i] = float(args["strength"])
            self.seed[i] = int(args["seed"])
            self.temperature[i] = float(args["temperature"])
            self.outputs[i] = out
        for a, b, kind in batch_update.moved:
            if kind == MoveDirectionality.SWAP:
                self._swap(a, b)
            else:
                for t in (self.direction, self.strength, self.seed, self.temperature):
                    t[b] = t[a]
                self.outputs[b] = self.outputs[a]
                self._clear(a)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows = [i for i in range(logits.shape[0]) if self.outputs[i] is not None]
        if not rows:
            return logits
        idx = torch.tensor(rows, dtype=torch.long)
        steps = torch.tensor([len(self.outputs[i]) for i in rows], dtype=torch.long)
        picked = torch.empty(len(rows), dtype=torch.long)
        temps = self.temperature[idx]
        for temp in temps.unique().tolist():  # one temperature per sweep in practice
            sel = (temps == temp).nonzero()[:, 0]
            picked[sel] = sample_tokens(logits[idx[sel].to(logits.device)], self.seed[idx[sel]], steps[sel],
                                        temp).cpu()
        target = idx.to(logits.device)
        logits[target] = float("-inf")
        logits[target, picked.to(logits.device)] = 0.0
        return logits


class _Steering:
    """What the worker holds for steering: block L's hook, the direction table and the per-token delta buffer."""

    def __init__(self, runner, layer: int):
        model = runner.get_model()
        blocks = decoder_layers(model)  # the block list the other engines index L in
        if not 0 <= layer < len(blocks):
            raise ValueError(f"steering layer {layer} is outside the model's {len(blocks)} blocks")
        self.runner = runner
        self.sampler = next(p for p in runner.input_batch.logitsprocs.all if isinstance(p, RowSampler))
        weight = next(model.parameters())
        hidden = int(runner.model_config.get_hidden_size())
        self.table = torch.zeros((1, hidden), dtype=torch.float32, device=weight.device)  # row 0: no steering
        # one buffer for the whole run, so a compiled graph that reads it always reads the same storage
        self.delta = torch.zeros((runner.max_num_tokens, hidden), dtype=weight.dtype, device=weight.device)
        self._filled = 0
        blocks[layer].register_forward_hook(self._add)
        forward = runner._model_forward

        def steered_forward(*args, **kwargs):
            self._fill()
            return forward(*args, **kwargs)

        runner._model_forward = steered_forward

    def set_directions(self, data: bytes, shape: list[int]) -> None:
        table = torch.from_numpy(np.frombuffer(data, dtype=np.float32).reshape(shape).copy())
        self.table = torch.cat([torch.zeros((1, table.shape[1])), table]).to(self.table.device)

    def _fill(self) -> None:
        """Each scheduled token's delta: its request's direction times strength (zeros past the last token)."""
        n = self.runner.input_batch.num_reqs
        counts = torch.from_numpy(np.diff(self.runner.query_start_loc.np[: n + 1]).astype(np.int64))
        which = torch.repeat_interleave(self.sampler.direction[:n] + 1, counts)
        strength = torch.repeat_interleave(self.sampler.strength[:n], counts)
        tokens = int(which.shape[0])
        dev = self.delta.device
        self.delta[:tokens] = self.table[which.to(dev)] * strength.to(dev)[:, None]
        if self._filled > tokens:
            self.delta[tokens:self._filled].zero_()
        self._filled = tokens

    def _add(self, _module, _inputs, output):
        if isinstance(output, tuple) and len(output) == 2 and output[1] is not None:
            # sum the stream first, as transformers' block does, then add the delta: the same roundings as the
            # other engines in bfloat16 (adding it to the residual alone rounds differently); the next block adds
            # the zero hidden part back exactly
            hidden, residual = output
            stream = hidden + residual
            return torch.zeros_like(hidden), stream + self.delta[: stream.shape[0]]
        return output + self.delta[: output.shape[0]]


class _SteeringWorker:
    """Mixed in front of vLLM's worker class: hook installed at load time, table set by ``collective_rpc``."""

    def load_model(self, *args, **kwargs):
        super().load_model(*args, **kwargs)
        layer = (self.vllm_config.additional_config or {}).get(LAYER_KEY)
        self.axw_steering = None if layer is None else _Steering(self.model_runner, int(layer))

    def axw_set_directions(self, data: bytes, shape: list[int]) -> int:
        """The sweep's directions, float32 [k, d] as raw bytes (row j of the table is a request's direction j)."""
        self.axw_steering.set_directions(data, shape)
        return int(self.axw_steering.table.shape[0] - 1)


_BASES = {"CPUSteeringWorker": "vllm.v1.worker.cpu_worker:CPUWorker",
          "GPUSteeringWorker": "vllm.v1.worker.gpu_worker:Worker"}


def __getattr__(name: str):
    """The worker class for a platform, built on first use: importing vLLM's CPU worker on a GPU box (or the
    reverse) is not needed and may not work."""
    if name not in _BASES:
        raise AttributeError(name)
    module, cls = _BASES[name].split(":")
    built = type(name, (_SteeringWorker, getattr(importlib.import_module(module), cls)), {"__module__": __name__})
    globals()[name] = built
    return built
