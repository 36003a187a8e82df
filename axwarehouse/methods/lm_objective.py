"""Shared machinery of the methods trained with the language-modelling objective through the frozen target model
(ReFT-r1, SSV; spec §2.2 "LM-style", §2.3): example tensorisation, an edit of the block-L output, the training loop.

Not a method (nothing registered here). The edit is a forward hook on decoder block L that replaces its output
hidden state: the same place pyvene's ``block_output`` intervention writes to. Gradients flow only through the
edit's parameters and the blocks above L (the model is frozen, so the blocks below build no graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from axwarehouse.lm.chat import MAX_LENGTH, ChatFormat


@dataclass
class LMExample:
    """prompt (chat rendering with generation prompt) + raw response, as ids; loss only on the response."""

    ids: list[int]
    n_prompt: int
    label: int


def lm_examples(chat: ChatFormat, inputs: list[str], outputs: list[str], labels) -> list[LMExample]:
    """AxBench's ``make_data_module``: ids = prompt + response (no end-of-turn appended), truncated like training."""
    tok = chat.tokenizer
    out = []
    for instruction, response, label in zip(inputs, outputs, labels):
        prompt = chat.prompt_ids(instruction)
        resp = list(tok(response, add_special_tokens=False)["input_ids"])
        out.append(LMExample((prompt + resp)[:MAX_LENGTH], len(prompt), int(label)))
    return out


@dataclass
class LMBatch:
    ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], -100 on prompt and padding
    edit_mask: torch.Tensor  # [B, T] bool: real tokens at positions >= P (prompt after the chat prefix + response)
    #: positions of the batch's examples in the list given to train_edit (set by train_edit; reft-r1-joint reads it
    #: to pick each example's dictionary row)
    index: torch.Tensor | None = None


def collate(batch: list[LMExample], pad_id: int, prefix_len: int, device: str = "cpu") -> LMBatch:
    """Right-padded tensors of a batch (AxBench's collator, without its extra trailing pad token)."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    edit = torch.zeros((len(batch), width), dtype=torch.bool)
    for r, e in enumerate(batch):
        n = len(e.ids)
        ids[r, :n] = torch.tensor(e.ids)
        labels[r, e.n_prompt:n] = ids[r, e.n_prompt:n]
        mask[r, :n] = 1
        edit[r, prefix_len:n] = True
    return LMBatch(ids.to(device), mask.to(device), labels.to(device), edit.to(device))


@contextmanager
def edit_block_output(block: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace the hidden-state output of ``block`` by ``fn(hidden)`` while the context is open."""
    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (fn(output[0]),) + tuple(output[1:])
        return fn(output)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


EditFn = Callable[[torch.Tensor, LMBatch, dict], torch.Tensor]


def train_edit(lm, layer: int, examples: list[LMExample], prefix_len: int, params: list[torch.nn.Parameter],
               edit: EditFn, *, lr: float, weight_decay: float, epochs: int, batch_size: int, seed: int,
               device: str = "cpu", aux_loss: Callable[[dict, float], torch.Tensor] | None = None,
               before_step: Callable[[], None] | None = None) -> float:
    """AdamW with linear decay to 0 (no warmup), one step per batch, output-token cross-entropy of the edited model.

    ``edit(h, batch, state)`` returns block L's new output and may stash tensors in ``state`` for ``aux_loss(state,
    progress)`` (progress = step / total steps, e.g. ReFT-r1's L1 ramp). ``before_step`` runs after backward (clipping,
    renormalisation). Returns the last batch loss.
    """
    block = lm.decoder_layers()[layer]
    pad_id = lm.tokenizer.pad_token_id
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total = max(1, epochs * math.ceil(len(examples) / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / total)
    gen = torch.Generator().manual_seed(seed)
    step, last = 0, float("nan")
    for _ in range(epochs):
        for idx in torch.randperm(len(examples), generator=gen).split(batch_size):
            batch = collate([examples[i] for i in idx.tolist()], pad_id, prefix_len, device)
            batch.index = idx
            state: dict = {}
            with edit_block_output(block, lambda h: edit(h, batch, state)):
                out = lm.model(input_ids=batch.ids, attention_mask=batch.attention_mask, labels=batch.labels,
                               use_cache=False)
            loss = out.loss
            if aux_loss is not None:
                loss = loss + aux_loss(state, step / total)
            opt.zero_grad()
            loss.backward()
            if before_step is not None:
                before_step()
            opt.step()
            sched.step()
            step += 1
            last = float(loss.detach())
    return last


def max_relu_activation(data, w: torch.Tensor) -> float:
    """Max of ReLU(h . w) over the positive examples' scored training tokens (cached activations)."""
    rows = torch.from_numpy((data.token_labels == 1) & ~data.tokens.is_prefix)
    h = data.tokens.acts[rows]
    return float(torch.relu(h @ w.detach().cpu()).max()) if len(h) else 0.0
