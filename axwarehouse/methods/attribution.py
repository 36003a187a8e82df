"""Shared by IG and IxG (docs/axbench-recipes.md §2.3, §2.4): a classifier head on the frozen LM and gradients of p(positive) with
respect to the residual stream at layer L. Not a method (nothing registered here).

Head: last real token's final-layer hidden state → dropout 0.3 → Linear(d, d/2) → ReLU → dropout 0.3 →
Linear(d/2, 2) → softmax, trained with cross-entropy applied to the softmax output (AxBench's double softmax,
docs/axbench-recipes.md §7.9) on the binarized training texts; AdamW, linear decay, gradient accumulation. Attribution target: p(positive).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from axwarehouse import lazy_imports

from axwarehouse.model.capture import length_batches, pad_batch
from axwarehouse.methods.lm_objective import edit_block_output

# final hidden states of training texts, shared by IG and IxG (and across concepts: the negatives repeat)
_FEATURES: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}


def _final_hidden_states(lm, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden state (after the final norm) without the LM head: the vocabulary projection is a
    large share of a small model's compute and the classifier never reads logits."""
    return lm.model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


def make_head(d: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(d, d // 2), torch.nn.ReLU(),
                               torch.nn.Dropout(0.3), torch.nn.Linear(d // 2, 2))


def head_from_state(state: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    head = make_head(state["1.weight"].shape[1])
    head.load_state_dict(state)
    return head.eval()


def batches(seqs: list[list[int]], batch_tokens: int = 2048) -> Iterator[list[int]]:
    yield from length_batches([len(s) for s in seqs], batch_tokens, max_batch=16)


@lazy_imports.no_grad
def final_hidden(lm, seqs: list[list[int]], device: str) -> torch.Tensor:
    """Final-layer hidden state [n, d] at each sequence's last token (cached per model and sequence)."""
    out = torch.empty(len(seqs), lm.hidden_size)
    todo = [i for i, s in enumerate(seqs) if (lm.name, tuple(s)) not in _FEATURES]
    for idx in batches([seqs[i] for i in todo]):
        rows = [todo[j] for j in idx]
        ids, mask = pad_batch([seqs[i] for i in rows], lm.tokenizer.pad_token_id)
        hs = _final_hidden_states(lm, ids.to(device), mask.to(device))
        last = mask.sum(1) - 1
        for r, i in enumerate(rows):
            _FEATURES[(lm.name, tuple(seqs[i]))] = hs[r, last[r]].float().cpu()
    for i, s in enumerate(seqs):
        out[i] = _FEATURES[(lm.name, tuple(s))]
    return out


def train_head(x: torch.Tensor, y: np.ndarray, *, lr: float, weight_decay: float, epochs: int, batch_size: int,
               grad_accum: int, seed: int) -> tuple[torch.nn.Sequential, float]:
    """Fit the classifier head on features ``x`` [n, d]; returns (head in eval mode, last loss)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    head = make_head(x.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n_batches = math.ceil(len(x) / batch_size)
    total = max(1, epochs * max(1, n_batches // grad_accum))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    last = float("nan")
    head.train()
    for _ in range(epochs):
        for b, idx in enumerate(torch.randperm(len(x), generator=gen).split(batch_size)):
            probs = torch.softmax(head(x[idx]), -1)
            loss = torch.nn.functional.cross_entropy(probs, labels[idx])  # CE on probabilities, as AxBench
            (loss / grad_accum).backward()
            if (b + 1) % grad_accum == 0 or b + 1 == n_batches:
                opt.step()
                sched.step()
                opt.zero_grad()
            last = float(loss.detach())
    return head.eval(), last


def p_positive(lm, head, layer: int, ids: torch.Tensor, mask: torch.Tensor, layer_output: torch.Tensor
               ) -> torch.Tensor:
    """p(positive) [B] when block ``layer`` outputs ``layer_output`` [B, T, d] (which may require grad)."""
    with edit_block_output(lm.decoder_layers()[layer], lambda h: layer_output.to(h.dtype)):
        hs = _final_hidden_states(lm, ids, mask)
    last = mask.sum(1) - 1
    feats = hs[torch.arange(len(ids)), last]
    return torch.softmax(head(feats.to(next(head.parameters()).dtype)), -1)[:, 1]


def layer_output(lm, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Block ``layer``'s output hidden state [B, T, d] (float32, no graph; a normal tensor that can require grad)."""
    from axwarehouse.model.capture import forward_to_layer

    return forward_to_layer(lm.model, lm.decoder_layers(), layer, ids, mask).float().clone()


def grad_x_input(lm, head, layer: int, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Signed h ⊙ ∂p/∂h [B, T, d] at block ``layer``'s output."""
    h = layer_output(lm, layer, ids, mask).requires_grad_()
    p = p_positive(lm, head, layer, ids, mask, h)
    (grad,) = torch.autograd.grad(p.sum(), h)
    return h.detach() * grad


def integrated_gradients(lm, head, layer: int, ids: torch.Tensor, mask: torch.Tensor, baseline: torch.Tensor,
                         steps: int = 50, chunk: int = 5) -> torch.Tensor:
    """Signed IG attributions [B, T, d]: (h − b) ⊙ mean over α = k/steps (k = 0..steps−1, left Riemann) of ∂p/∂x at
    x = b + α(h − b), with the layer-L output replaced by x at every position. Σ ≈ p(h) − p(b) (completeness)."""
    h = layer_output(lm, layer, ids, mask)
    delta = h - baseline
    total = torch.zeros_like(h)
    alphas = torch.arange(steps, dtype=torch.float32) / steps
    for group in alphas.split(chunk):
        for a in group.tolist():  # AxBench runs 5 α per chunk; one forward per α keeps memory at one batch
            x = (baseline + a * delta).requires_grad_()
            p = p_positive(lm, head, layer, ids, mask, x)
            (grad,) = torch.autograd.grad(p.sum(), x)
            total += grad
    return delta * total / steps


def token_scores(attr: torch.Tensor, mask: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """Σ_d |attribution| per real token of each row."""
    s = attr.abs().sum(-1)
    return [s[r, :n] for r, n in enumerate(lengths)]


class HeadAttribution:
    """Mixin of IG and IxG: fit = the classifier head (weights in safetensors); score = per-token attributions."""

    evaluations = ("latent",)
    needs = frozenset({"activations", "model"})
    scoring = "tokens"

    def fit_head(self, data):
        from axwarehouse.methods.base import Artifact

        cfg, ctx = self.config, data.ctx
        chat = ctx.chat
        seqs = [chat.train_ids(i, o) for i, o in zip(data.inputs, data.outputs)]
        x = final_hidden(ctx.lm, seqs, ctx.device)
        head, loss = train_head(x, data.labels, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                                batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, seed=self.seed)
        with torch.no_grad():
            acc = float(((torch.softmax(head(x), -1)[:, 1] > 0.5).numpy() == (data.labels == 1)).mean())
        return Artifact(None, 0.0, None, extra={"final_loss": loss, "train_accuracy": acc},
                        weights={k: v.detach().clone() for k, v in head.state_dict().items()})

    def attributions(self, ctx, head, ids, mask) -> torch.Tensor:  # pragma: no cover - per method
        raise NotImplementedError

    def score_tokens(self, artifact, tokens, ctx) -> torch.Tensor:
        from axwarehouse.weights import load_weights

        state, _ = load_weights(ctx.warehouse, artifact.weights_path)
        head = head_from_state(state).to(ctx.device)
        lm = ctx.lm
        tok_ids = lm.tokenizer.convert_tokens_to_ids(tokens.tokens)  # stored token strings are vocabulary entries
        seqs = [tok_ids[tokens.offsets[i]:tokens.offsets[i + 1]] for i in range(tokens.n_examples)]
        per_example: list[torch.Tensor] = [torch.zeros(0)] * len(seqs)
        for idx in batches(seqs, 1024):
            ids, mask = pad_batch([seqs[i] for i in idx], lm.tokenizer.pad_token_id)
            attr = self.attributions(ctx, head, ids.to(ctx.device), mask.to(ctx.device))
            for i, s in zip(idx, token_scores(attr, mask, [len(seqs[i]) for i in idx])):
                per_example[i] = s.detach().float().cpu()
        return torch.cat(per_example)
