"""Residual-stream capture at the output of decoder layer L, stopping the forward pass right after it.

Sequences are sorted by length and packed into right-padded batches under a padded-token budget, so padding waste
is small and memory bounded. A forward hook on block L stores its output and raises :class:`_StopForward`, so
layers above L never run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from axwarehouse import lazy_imports


# Padded tokens per forward batch when the user does not choose. On CPU a smaller batch's intermediate tensors stay
# in cache and less padding is computed, so 1024 beats 4096 there (bench/capture_batch.py in BENCHMARKS.md). GPUs want large batches (raise it until memory is full, README).
CPU_BATCH_TOKENS = 1024
ACCELERATOR_BATCH_TOKENS = 4096


class _StopForward(Exception):
    pass


def default_batch_tokens(device: str) -> int:
    """The forward batch budget (padded tokens) for ``device`` when none is given."""
    return CPU_BATCH_TOKENS if str(device).split(":")[0] == "cpu" else ACCELERATOR_BATCH_TOKENS


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = 64) -> list[list[int]]:
    """Indices grouped into batches of similar length with ``batch_size × max_len ≤ batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending: the newcomer is the longest
        if current and ((len(current) + 1) * longest > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``seqs`` padded on the left (each row's last token in the last
    column), as generation and a last-position readout take them."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
        mask[row, width - len(s):] = 1
    return {"input_ids": ids, "attention_mask": mask}


@lazy_imports.inference_mode
def forward_to_layers(model, layers, wanted: Sequence[int], ids: torch.Tensor,
                      mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """Hidden states [batch, seq, d] at the output of each ``layers[L]`` for L in ``wanted``, from one forward
    pass; blocks above the deepest one are not run."""
    captured: dict[int, torch.Tensor] = {}
    top = max(wanted)

    def hook(layer: int, output) -> None:
        captured[layer] = output[0] if isinstance(output, tuple) else output
        if layer == top:
            raise _StopForward

    handles = [layers[L].register_forward_hook(lambda _m, _i, out, L=L: hook(L, out)) for L in set(wanted)]
    try:
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


def forward_to_layer(model, layers, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden states [batch, seq, d] at the output of ``layers[layer]``; blocks above it are not run."""
    return forward_to_layers(model, layers, [layer], ids, mask)[layer]


def capture(model, layers, layer: int, seqs: Sequence[Sequence[int]], pad_id: int,
            batch_tokens: int = 4096, as_tensors: bool = False) -> Iterator[tuple[list[int], list]]:
    """Yield ``(indices, [acts of shape (len_i, d)])`` per length-sorted batch of ``seqs``: float32 numpy arrays,
    or (``as_tensors``) CPU tensors in the model's own dtype, so bfloat16 activations reach the store unrounded."""
    device = next(model.parameters()).device
    for idx in length_batches([len(s) for s in seqs], batch_tokens):
        ids, mask = pad_batch([seqs[i] for i in idx], pad_id)
        hidden = forward_to_layer(model, layers, layer, ids.to(device), mask.to(device))
        if as_tensors:
            out = hidden.to("cpu")
            yield idx, [out[row, : len(seqs[i])] for row, i in enumerate(idx)]
            continue
        out = hidden.to("cpu", torch.float32).numpy()
        yield idx, [out[row, : len(seqs[i])] for row, i in enumerate(idx)]
