"""ReFT-r1, SSV, IG, IxG and Prompt on a tiny random-init Llama: each test fails if the method's math is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axwarehouse.methods import get
from axwarehouse.methods.base import Context


@pytest.fixture(scope="module")
def ctx(tiny_model_dir):
    return Context(str(tiny_model_dir), 2)


def _data(ctx, n=12, concept_word="banana"):
    """ConceptData with LM-style texts: positives answer with the concept word, negatives with plain text."""
    from axwarehouse.activation_store import TokenMatrix
    from axwarehouse.methods import ConceptData

    labels = np.array([1, 0] * (n // 2))
    inputs = [f"Tell me something number {i}." for i in range(n)]
    outputs = [(f"{concept_word} " * 12).strip() if y else "The weather is mild and the river is calm today."
               for y in labels]
    # cached activations are only used for max_train_activation here: 3 tokens per example, non-prefix
    d = ctx.lm.hidden_size
    acts = torch.randn(n * 3, d, generator=torch.Generator().manual_seed(0))
    tokens = TokenMatrix(acts, np.arange(n), np.arange(0, 3 * n + 1, 3), np.tile(np.arange(3, dtype=np.int32), n),
                         np.zeros(3 * n, bool))
    return ConceptData(0, concept_word, tokens, labels, inputs, outputs, ctx)


def _positive_loss(ctx, data, add: torch.Tensor | None = None, topk_w: torch.Tensor | None = None, k: int = 2
                   ) -> float:
    """Mean response CE on the positives with block L edited: ``+ add`` at every edited position, or ReFT-r1's
    training edit (``+ mean top-k ReLU(h·w) · w``) when ``topk_w`` is given."""
    from axwarehouse.methods.lm_objective import collate, edit_block_output, lm_examples
    from axwarehouse.methods.reft_r1 import topk_edit

    pos = [i for i, y in enumerate(data.labels) if y == 1]
    ex = lm_examples(ctx.chat, [data.inputs[i] for i in pos], [data.outputs[i] for i in pos], data.labels[pos])
    batch = collate(ex, ctx.lm.tokenizer.pad_token_id, ctx.chat.prefix_len)

    def edit(h):
        if topk_w is not None:
            return topk_edit(h, topk_w, batch.edit_mask, k)[0]
        return h + batch.edit_mask.unsqueeze(-1) * add

    with torch.no_grad(), edit_block_output(ctx.lm.decoder_layers()[ctx.layer], edit):
        return float(ctx.lm.model(input_ids=batch.ids, attention_mask=batch.attention_mask, labels=batch.labels).loss)


def test_output_token_loss_is_the_labels_loss_with_the_head_only_where_it_counts(ctx):
    """Training's loss runs the output head only at positions that predict a response token; loss and gradients
    equal the model's own ``labels=`` loss (which runs it everywhere) on a right-padded batch of uneven rows."""
    from axwarehouse.methods.lm_objective import collate, lm_examples, output_token_loss
    from axwarehouse.model import token_nll

    data = _data(ctx, n=4)
    ex = lm_examples(ctx.chat, data.inputs, data.outputs, data.labels)
    assert len({len(e.ids) for e in ex}) > 1 and len({e.n_prompt for e in ex}) == 1  # padding in the batch
    batch = collate(ex, ctx.lm.tokenizer.pad_token_id, ctx.chat.prefix_len)
    model = ctx.lm.model
    rows = []
    head = model.get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, inp, _o: rows.append(inp[0].reshape(-1, inp[0].shape[-1]).shape[0]))
    block = model.model.layers[1]
    try:
        block.requires_grad_(True)
        ours = output_token_loss(model, batch)
        (g_ours,) = torch.autograd.grad(ours, block.mlp.down_proj.weight)
        ref = model(input_ids=batch.ids, attention_mask=batch.attention_mask, labels=batch.labels,
                    use_cache=False).loss
        (g_ref,) = torch.autograd.grad(ref, block.mlp.down_proj.weight)
    finally:
        block.requires_grad_(False)
        hook.remove()
    n_response = sum(len(e.ids) - e.n_prompt for e in ex)
    # ours: the position before each response token; transformers without a boolean logits_to_keep take columns,
    # and there the head runs at every row's copy of a column any row keeps
    columns = int((batch.labels[:, 1:] != -100).any(dim=0).sum())
    n_head = n_response if token_nll._bool_logits_to_keep() else len(ex) * columns
    assert rows == [n_head, batch.ids.numel()]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-7)


def test_reft_r1_topk_edit_math():
    from axwarehouse.methods.reft_r1 import topk_edit

    h = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [5.0, 0.0]]])  # z = ReLU(h·w) = 1, 3, 2, (masked)
    w = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[True, True, True, False]])
    new, l1 = topk_edit(h, w, mask, k=2)
    m = (3.0 + 2.0) / 2  # mean of the top-2 latents among the masked-in positions
    expect = h.clone()
    expect[0, :3, 0] += m
    torch.testing.assert_close(new, expect)
    torch.testing.assert_close(l1, torch.tensor([1.0 / 3]))  # the non-top-k latent (1) over 3 positions


def test_reft_r1_trains_a_unit_direction_that_lowers_the_loss_and_leaves_the_model_frozen(ctx):
    data = _data(ctx, n=8)
    before = {k: v.clone() for k, v in ctx.lm.model.state_dict().items()}
    cfg = {"epochs": 4, "batch_size": 4, "topk": 2, "lr": 0.05, "train_on_negative": False}
    art = get("reft-r1")(cfg, seed=3).fit(data)
    w = torch.tensor(art.direction)
    assert abs(float(w.norm()) - 1) < 1e-5
    assert all(torch.equal(v, before[k]) for k, v in ctx.lm.model.state_dict().items())
    # the learned encoder's own edit must fit the positives better than the starting direction (constant 0.01)
    w0 = torch.full_like(w, 0.01)
    assert _positive_loss(ctx, data, topk_w=w) < _positive_loss(ctx, data, topk_w=w0 / w0.norm()) - 0.01
    again = get("reft-r1")(cfg, seed=3).fit(data)
    np.testing.assert_allclose(again.direction, art.direction, atol=1e-6)


def test_ssv_vector_lowers_the_positive_loss(ctx):
    data = _data(ctx, n=8)
    art = get("ssv")({"epochs": 6, "batch_size": 2}, seed=1).fit(data)
    v = torch.tensor(art.direction)
    assert abs(float(v.norm()) - 1) > 1e-3  # SSV keeps its raw, non-unit vector
    assert _positive_loss(ctx, data, v) < _positive_loss(ctx, data, torch.zeros_like(v)) - 0.05


def _head_and_batch(ctx):
    from axwarehouse.model.capture import pad_batch
    from axwarehouse.methods.attribution import make_head

    torch.manual_seed(0)
    head = make_head(ctx.lm.hidden_size).eval()
    seqs = [ctx.chat.eval_ids("Name a fruit.", "A banana is yellow.")[-12:], ctx.chat.eval_ids("Hi", "Hello there")[-8:]]
    ids, mask = pad_batch(seqs, ctx.lm.tokenizer.pad_token_id)
    return head, ids, mask


def test_ig_satisfies_completeness(ctx):
    """Σ attributions = p(h) − p(b) (the Riemann sum converges to it), for a padded batch of two examples."""
    from axwarehouse.methods.attribution import integrated_gradients, layer_output, p_positive
    from axwarehouse.methods.ig import embedding_baseline

    head, ids, mask = _head_and_batch(ctx)
    with torch.no_grad():
        h = layer_output(ctx.lm, ctx.layer, ids, mask)
    # the tiny random model's residual stream has norm ~0.1, where RMSNorm makes the path from a far-away embedding
    # baseline steep; a baseline at the stream's own scale keeps the 128-point Riemann sum within 2 %
    b = h[mask.bool()].mean(0)
    attr = integrated_gradients(ctx.lm, head, ctx.layer, ids, mask, b, steps=128)
    with torch.no_grad():
        gap = p_positive(ctx.lm, head, ctx.layer, ids, mask, h) - p_positive(
            ctx.lm, head, ctx.layer, ids, mask, b.expand_as(h))
    assert float(gap.abs().min()) > 1e-3  # the check is not vacuous
    torch.testing.assert_close(attr.sum((1, 2)), gap, rtol=0.02, atol=2e-4)
    assert embedding_baseline(ctx.lm, 1000, seed=0).shape == (ctx.lm.hidden_size,)


def test_ixg_is_input_times_gradient(ctx):
    """Σ_d h·∂p/∂h equals the directional derivative of p along h (finite differences)."""
    from axwarehouse.methods.attribution import grad_x_input, layer_output, p_positive

    head, ids, mask = _head_and_batch(ctx)
    attr = grad_x_input(ctx.lm, head, ctx.layer, ids, mask)
    with torch.no_grad():
        h = layer_output(ctx.lm, ctx.layer, ids, mask).double()
        eps = 1e-3
        ctx.lm.model.double()
        try:
            fd = (p_positive(ctx.lm, head.double(), ctx.layer, ids, mask, h * (1 + eps))
                  - p_positive(ctx.lm, head.double(), ctx.layer, ids, mask, h * (1 - eps))) / (2 * eps)
        finally:
            ctx.lm.model.float()
            head.float()
    torch.testing.assert_close(attr.sum((1, 2)).double(), fd, rtol=1e-3, atol=1e-6)


def test_attribution_head_learns_separable_features():
    from axwarehouse.methods.attribution import train_head

    g = torch.Generator().manual_seed(0)
    x = torch.randn(72, 16, generator=g)
    y = (x[:, 0] > 0).numpy().astype(int)
    x[:, 0] *= 4
    head, _ = train_head(x, y, lr=3e-2, weight_decay=0.0, epochs=20, batch_size=18, grad_accum=1, seed=0)
    with torch.no_grad():
        acc = ((torch.softmax(head(x), -1)[:, 1] > 0.5).numpy() == (y == 1)).mean()
    assert acc > 0.95


def test_prompt_detection_parsing_and_expected_mode(ctx):
    from axwarehouse.methods.base import Artifact
    from axwarehouse.methods.prompt import parse_rating

    assert parse_rating("The concept is there.\nRating: [[2]]") == 2.0
    assert parse_rating("Rating: [[1]] then Rating: [[0.5]].") == 0.5  # the last "Rating:" wins
    assert parse_rating("Rating: [[3]]") is None and parse_rating("no verdict") is None
    m = get("prompt")({"mode": "expected"})
    art = Artifact(None, extra={"concept": "bananas"})
    outs = ["bananas and more bananas", "taxes are due in April"]
    s1 = m.score_examples(art, "bananas", ["", ""], outs, ctx)
    s2 = m.score_examples(art, "bananas", ["", ""], outs[::-1], ctx)
    assert s1.shape == (2,) and np.all((s1 >= 0) & (s1 <= 2))
    np.testing.assert_allclose(s1, s2[::-1], atol=1e-5)  # batching/padding does not change an example's score
    # a random model never writes "Rating: [[x]]": generate mode then scores -1, AxBench's failure value
    g = get("prompt")({"mode": "generate", "max_new_tokens": 8})
    assert list(g.score_examples(art, "bananas", [""], outs[:1], ctx)) == [-1.0]
