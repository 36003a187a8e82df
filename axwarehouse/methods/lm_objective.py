"""Shared machinery of the methods trained with the language-modelling objective through the target model
(ReFT-r1, SSV, LoReFT, LoRA, SFT; docs/axbench-recipes.md §2.2 "LM-style", §2.3): example tensorisation, an edit of the block-L output,
the training loop.

Not a method (nothing registered here). :func:`train_lm` is the one loop (AdamW, linear decay to 0 without warmup,
gradient accumulation, optional clipping); what a method changes in the model during a batch is a context manager
it passes in (``around_batch``). :func:`train_edit` is the rank-1 case: a forward hook on decoder block L that
replaces its output hidden state, the same place pyvene's ``block_output`` intervention writes to. Gradients flow
only through the trained parameters and what lies above them (the model is frozen unless a method unfreezes it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch

from axwarehouse.errors import AxwError

from axwarehouse.model.chat import MAX_LENGTH, ChatFormat
from axwarehouse.model.token_nll import token_nll


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



def concept_lm_examples(chat: ChatFormat, data, with_negatives: bool = False) -> list[LMExample]:
    """A concept's LM-style training examples (docs/axbench-recipes.md §2.2): its positives, and its genre negatives when
    ``with_negatives`` (ReFT-r1's ``train_on_negative``), in the order of ``data``."""
    keep = [i for i, y in enumerate(data.labels) if with_negatives or y == 1]
    return lm_examples(chat, [data.inputs[i] for i in keep], [data.outputs[i] for i in keep], data.labels[keep])

@dataclass
class LMBatch:
    ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], -100 on prompt and padding
    edit_mask: torch.Tensor  # [B, T] bool: real tokens at positions >= P (prompt after the chat prefix + response)
    prompt_len: torch.Tensor | None = None  # [B] prompt tokens per row (right padding: positions 0..len-1)
    #: positions of the batch's examples in the list given to train_edit (set by train_lm; reft-r1-joint reads it
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
    return LMBatch(ids.to(device), mask.to(device), labels.to(device), edit.to(device),
                   torch.tensor([e.n_prompt for e in batch], device=device))


def output_token_loss(model, batch: LMBatch) -> torch.Tensor:
    """Mean cross-entropy of the response tokens: what the model's own ``labels=`` loss gives, with the output head
    run only where a response token is predicted (:func:`axwarehouse.model.token_nll.token_nll`; prompts are 29 % of
    the tokens of the Concept10 training examples with SmolLM2's chat template, plus padding)."""
    return token_nll(model, batch.ids, batch.attention_mask, batch.labels != -100).mean()


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


EditFn = Callable[["torch.Tensor", LMBatch, dict], "torch.Tensor"]  # strings: no torch at import
BatchContext = Callable[[LMBatch, dict], AbstractContextManager]


def train_lm(lm, examples: list[LMExample], prefix_len: int, params: list[torch.nn.Parameter],
             around_batch: BatchContext | None, *, lr: float, weight_decay: float, epochs: int, batch_size: int,
             seed: int, device: str = "cpu", grad_accum: int = 1, clip_norm: float | None = None,
             accum_mean: bool = True, aux_loss: Callable[[dict, float], torch.Tensor] | None = None,
             before_step: Callable[[], None] | None = None) -> float:
    """Output-token cross-entropy of the model as changed by ``around_batch(batch, state)`` (a context manager open
    during each forward: hooks, adapters; None = the model itself, e.g. SFT), minimised over ``params``.

    AxBench's loop (``LoRA.train``, ``LoReFT.train``, ``SFT._train``): AdamW, shuffled batches of ``batch_size``,
    the loss divided by ``grad_accum`` (``accum_mean=False``: not divided, so accumulated gradients add up, as
    upstream LoReFT, which divides only after ``backward``), an optimizer step every ``grad_accum`` batches and
    after an epoch's last batch, the gradient norm of ``params`` clipped to ``clip_norm`` first (None: no
    clipping), learning rate decaying linearly from ``lr`` to 0 without warmup over
    ``epochs × max(1, n_batches // grad_accum)`` steps (held at 0 past that, as transformers' linear schedule). ``around_batch`` may stash tensors in ``state`` for
    ``aux_loss(state, progress)`` (progress = optimizer step / total steps, e.g. ReFT-r1's L1 ramp);
    ``before_step`` runs after clipping, before each optimizer step (renormalisation). Returns the last batch loss
    (not divided by ``grad_accum``).
    """
    if grad_accum < 1:
        raise ValueError("grad_accum must be at least 1")
    pad_id = lm.tokenizer.pad_token_id
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    n_batches = math.ceil(len(examples) / batch_size)
    total = max(1, epochs * max(1, n_batches // grad_accum))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    gen = torch.Generator().manual_seed(seed)
    step, last = 0, float("nan")
    opt.zero_grad()
    for _ in range(epochs):
        for k, idx in enumerate(torch.randperm(len(examples), generator=gen).split(batch_size)):
            batch = collate([examples[i] for i in idx.tolist()], pad_id, prefix_len, device)
            batch.index = idx
            state: dict = {}
            with around_batch(batch, state) if around_batch is not None else _nothing():
                loss = output_token_loss(lm.model, batch)
            if aux_loss is not None:
                loss = loss + aux_loss(state, step / total)
            (loss / grad_accum if grad_accum > 1 and accum_mean else loss).backward()
            last = float(loss.detach())
            if (k + 1) % grad_accum == 0 or k + 1 == n_batches:
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_norm)
                if before_step is not None:
                    before_step()
                opt.step()
                sched.step()
                opt.zero_grad()
                step += 1
    return last


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def train_edit(lm, layer: int, examples: list[LMExample], prefix_len: int, params: list[torch.nn.Parameter],
               edit: EditFn, *, lr: float, weight_decay: float, epochs: int, batch_size: int, seed: int,
               device: str = "cpu", aux_loss: Callable[[dict, float], torch.Tensor] | None = None,
               before_step: Callable[[], None] | None = None) -> float:
    """:func:`train_lm` with block L's output replaced by ``edit(h, batch, state)``, one step per batch (ReFT-r1,
    SSV). ``before_step`` runs after backward (clipping, renormalisation)."""
    block = lm.decoder_layers()[layer]
    return train_lm(lm, examples, prefix_len, params,
                    lambda batch, state: edit_block_output(block, lambda h: edit(h, batch, state)),
                    lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size, seed=seed, device=device,
                    aux_loss=aux_loss, before_step=before_step)


def existing_layers(spec: str, n_layers: int) -> tuple[list[int], list[int]]:
    """(layers of the comma-separated ``spec`` that exist in a model of ``n_layers`` blocks, the ones dropped).

    AxBench trains LoReFT and LoRA at layers 5, 10, 15, 20 of Gemma-2-2B (26 blocks); a shallower model keeps the
    listed layers it has."""
    try:
        wanted = [int(x) for x in str(spec).replace(" ", "").split(",") if x != ""]
    except ValueError as exc:
        raise ValueError(f"layers must be comma-separated integers, got {spec!r}") from exc
    keep = sorted({x for x in wanted if 0 <= x < n_layers})
    return keep, sorted({x for x in wanted if not 0 <= x < n_layers})



class LayerListMethod:
    """Mixin for methods trained at the blocks listed in ``Config.layers`` (LoReFT, LoRA): a model with fewer blocks
    keeps the listed ones it has; with none left the method is unavailable for that model."""

    def layers_or_reason(self, n_layers: int) -> tuple[list[int], str | None]:
        """(the listed layers the model has, None) or ([], why the method cannot run on it)."""
        spec = self.config.layers
        try:
            keep, _dropped = existing_layers(spec, n_layers)
        except ValueError as exc:
            return [], str(exc)
        if not keep:
            return [], (f"none of its layers {spec} exist in a model with {n_layers} blocks "
                        f"(choose some with --set {self.name}.layers=...)")
        return keep, None

    def unavailable(self, ctx) -> str | None:
        from axwarehouse.model.info import model_info

        return self.layers_or_reason(model_info(ctx.model).n_layers)[1]

    def train_layers(self, n_layers: int) -> list[int]:
        """The layers to train at; a clear error when there are none."""
        layers, why = self.layers_or_reason(n_layers)
        if why:
            raise AxwError(f"{self.name}: {why}")
        return layers

def max_relu_activation(data, w: torch.Tensor) -> float:
    """Max of ReLU(h . w) over the positive examples' scored training tokens (cached activations)."""
    rows = torch.from_numpy((data.token_labels == 1) & ~data.tokens.is_prefix)
    h = data.tokens.acts[rows]
    return float(torch.relu(h @ w.detach().cpu()).max()) if len(h) else 0.0
