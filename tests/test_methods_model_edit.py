"""LoReFT, LoRA and SFT (steering-only methods that change the model) on a tiny random-init Llama: each test fails if
the method's math, its positions or its storage were wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axwarehouse.methods import get
from axwarehouse.methods.base import Artifact, Context


@pytest.fixture(scope="module")
def ctx(tiny_model_dir, tmp_path_factory):
    return Context(str(tiny_model_dir), 2, warehouse=tmp_path_factory.mktemp("wh"))


def _data(ctx, n=8, word="banana"):
    from axwarehouse.activation_store import TokenMatrix
    from axwarehouse.methods import ConceptData

    labels = np.array([1, 0] * (n // 2))
    inputs = [f"Tell me something number {i}." for i in range(n)]
    outputs = [(f"{word} " * 10).strip() if y else "The weather is mild and the river is calm today." for y in labels]
    d = ctx.lm.hidden_size
    tokens = TokenMatrix(torch.zeros(n, d), np.arange(n), np.arange(n + 1), np.zeros(n, np.int32), np.zeros(n, bool))
    return ConceptData(0, word, tokens, labels, inputs, outputs, ctx)


def _batch(ctx, data):
    from axwarehouse.methods.lm_objective import collate, lm_examples

    pos = [i for i, y in enumerate(data.labels) if y == 1]
    ex = lm_examples(ctx.chat, [data.inputs[i] for i in pos], [data.outputs[i] for i in pos], data.labels[pos])
    return collate(ex, ctx.lm.tokenizer.pad_token_id, ctx.chat.prefix_len)


def _forward(ctx, batch):
    with torch.no_grad():
        return ctx.lm.model(input_ids=batch.ids, attention_mask=batch.attention_mask, labels=batch.labels,
                            output_hidden_states=True)


def _state(ctx):
    return {k: v.clone() for k, v in ctx.lm.model.state_dict().items()}


def _same_state(ctx, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in ctx.lm.model.state_dict().items())


def _save(ctx, art: Artifact, name: str) -> Artifact:
    from axwarehouse.weights import save_weights

    art.weights_path = save_weights(ctx.warehouse, f"{name}.safetensors", art.weights, art.weights_meta)
    return art


# ---------------------------------------------------------------------------------------------------------- LoRA

def test_lora_with_zero_B_is_the_base_model_bit_for_bit_and_edits_only_its_layers(ctx):
    from axwarehouse.methods.lora import lora_hooks

    batch = _batch(ctx, _data(ctx))
    base = _forward(ctx, batch)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 32, generator=g)
    with lora_hooks(ctx.lm, {1: (a, torch.zeros(32, 4)), 3: (a, torch.zeros(32, 4))}, "self_attn.o_proj", 16.0):
        zero = _forward(ctx, batch)
    assert torch.equal(zero.logits, base.logits)
    with lora_hooks(ctx.lm, {1: (a, torch.randn(32, 4, generator=g))}, "self_attn.o_proj", 16.0):
        edited = _forward(ctx, batch)
    # hidden_states[i + 1] = output of block i: blocks 0 untouched, block 1's o_proj changes block 1's output
    assert torch.equal(edited.hidden_states[1], base.hidden_states[1])
    assert not torch.allclose(edited.hidden_states[2], base.hidden_states[2])
    assert torch.equal(_forward(ctx, batch).logits, base.logits)  # hooks removed on exit


def test_lora_trains_o_proj_adapters_of_the_listed_layers_only(ctx):
    data = _data(ctx)
    batch = _batch(ctx, data)
    before = _state(ctx)
    base = _forward(ctx, batch)
    m = get("lora")({"layers": "1,3,40", "epochs": 12, "batch_size": 2, "grad_accum": 2, "lr": 1e-2}, seed=1)
    art = _save(ctx, m.fit(data), "lora")
    assert _same_state(ctx, before)  # the shared model is untouched
    assert set(art.weights) == {"layers.1.lora_A", "layers.1.lora_B", "layers.3.lora_A", "layers.3.lora_B"}
    assert art.extra["layers_dropped"] == [40] and art.extra["scale"] == pytest.approx(32 / 2)
    assert art.weights["layers.1.lora_A"].shape == (4, 32) and art.weights["layers.1.lora_B"].shape == (32, 4)
    assert float(art.weights["layers.1.lora_B"].abs().max()) > 0  # B left its zero init
    with m.steering_edit(ctx.lm, art, ctx):
        steered = _forward(ctx, batch)
    assert torch.equal(steered.hidden_states[1], base.hidden_states[1])  # below layer 1: unchanged
    assert not torch.allclose(steered.hidden_states[2], base.hidden_states[2])
    assert float(steered.loss) < float(base.loss) - 0.1
    assert torch.equal(_forward(ctx, batch).logits, base.logits)


def test_lora_is_unavailable_when_no_listed_layer_exists(ctx):
    assert "none of its layers" in get("lora")().unavailable(ctx)  # 5,10,15,20 in a 4-block model
    assert get("lora")({"layers": "1"}).unavailable(ctx) is None


# -------------------------------------------------------------------------------------------------------- LoReFT

def _orthonormal(d, r, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, r, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()  # [r, d], orthonormal rows


def test_loreft_is_the_identity_when_W_equals_R_and_b_is_zero(ctx):
    from axwarehouse.methods.loreft import f_l_positions, loreft, loreft_hooks

    r = _orthonormal(32, 4)
    h = torch.randn(3, 7, 32)
    torch.testing.assert_close(loreft(h, r, r, torch.zeros(4)), h, atol=1e-6, rtol=0)
    # and the edit moves h by Rᵀ(W h + b − R h): its component in the row space of R only
    w, b = torch.randn(4, 32), torch.randn(4)
    delta = loreft(h, r, w, b) - h
    torch.testing.assert_close(delta, (delta @ r.T) @ r, atol=1e-5, rtol=0)
    torch.testing.assert_close(h @ r.T + delta @ r.T, h @ w.T + b, atol=1e-5, rtol=0)  # R Φ(h) = W h + b
    batch = _batch(ctx, _data(ctx))
    base = _forward(ctx, batch)
    positions = {"mask": f_l_positions(batch.attention_mask, batch.prompt_len, 5, 5)}
    with loreft_hooks(ctx.lm, {1: (r, r, torch.zeros(4))}, positions):
        same = _forward(ctx, batch)
    torch.testing.assert_close(same.logits, base.logits, atol=1e-5, rtol=0)


def test_loreft_positions_are_the_first_and_last_five_prompt_tokens():
    from axwarehouse.methods.loreft import f_l_positions

    # right padding (training): row 0 = 12 prompt tokens + 3 response tokens, row 1 = 6 prompt tokens + 2 response
    mask = torch.tensor([[1] * 15, [1] * 8 + [0] * 7])
    got = f_l_positions(mask, torch.tensor([12, 6]), 5, 5)
    assert got[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert got[1].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]  # 6 tokens: f = l = min(6 // 2, 5) = 3
    # left padding (generation): the same prompts shifted right
    left = torch.tensor([[1] * 12, [0] * 6 + [1] * 6])
    got = f_l_positions(left, left.sum(1), 5, 5)
    assert got[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert got[1].nonzero().flatten().tolist() == [6, 7, 8, 9, 10, 11]


def test_loreft_edit_touches_only_the_f5_l5_positions(ctx):
    from axwarehouse.methods.loreft import f_l_positions, loreft_hooks

    batch = _batch(ctx, _data(ctx))
    mask = f_l_positions(batch.attention_mask, batch.prompt_len, 5, 5)
    g = torch.Generator().manual_seed(3)
    params = (_orthonormal(32, 4, 1), torch.randn(4, 32, generator=g), torch.randn(4, generator=g))
    block = ctx.lm.decoder_layers()[1]

    def block_output(edit: bool) -> torch.Tensor:
        seen = []
        with loreft_hooks(ctx.lm, {1: params} if edit else {}, {"mask": mask}):
            # registered after the edit's hook, so it sees the edited output of block 1
            handle = block.register_forward_hook(lambda _m, _i, o: seen.append(o[0] if isinstance(o, tuple) else o))
            try:
                out = _forward(ctx, batch)
            finally:
                handle.remove()
        return seen[0], out

    (h0, base), (h1, out) = block_output(False), block_output(True)
    assert torch.equal((h1 - h0).abs().amax(-1) > 0, mask)  # changed exactly at the f5+l5 prompt positions
    assert torch.equal(out.hidden_states[1], base.hidden_states[1])
    assert not torch.allclose(out.logits, base.logits)


def test_loreft_generate_edits_the_prompt_pass_only(ctx):
    from axwarehouse.methods.loreft import f_l_positions, prompt_positions
    from axwarehouse.steering.generate import left_pad

    lm = ctx.lm
    seqs = [ctx.chat.prompt_ids("Name a fruit."), ctx.chat.prompt_ids("Write a very long sentence about rivers.")]
    inputs = left_pad(seqs, lm.tokenizer.pad_token_id)
    seen: list = []
    positions: dict = {}
    handle = lm.decoder_layers()[1].register_forward_hook(lambda *_: seen.append(positions.get("mask")))
    try:
        with prompt_positions(lm, 5, 5, positions), torch.no_grad():
            lm.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    finally:
        handle.remove()
    assert len(seen) == 3 and seen[1] is None and seen[2] is None
    mask = inputs["attention_mask"]
    assert torch.equal(seen[0], f_l_positions(mask, mask.sum(1), 5, 5)) and int(seen[0].sum()) == 20
    assert positions["mask"] is None


def test_loreft_training_keeps_R_orthonormal_and_lowers_the_loss(ctx):
    data = _data(ctx)
    batch = _batch(ctx, data)
    before = _state(ctx)
    base = _forward(ctx, batch)
    m = get("loreft")({"layers": "1,2", "epochs": 8, "batch_size": 2, "grad_accum": 2, "lr": 2e-2}, seed=0)
    art = _save(ctx, m.fit(data), "loreft")
    assert _same_state(ctx, before)
    assert set(art.weights) == {f"layers.{layer}.{k}" for layer in (1, 2) for k in ("R", "W", "b")}
    for layer in (1, 2):
        r, w = art.weights[f"layers.{layer}.R"], art.weights[f"layers.{layer}.W"]
        assert r.shape == (4, 32) and w.shape == (4, 32)
        torch.testing.assert_close(r @ r.T, torch.eye(4), atol=1e-5, rtol=0)
        assert not torch.allclose(w, r, atol=1e-3)
    from axwarehouse.methods.loreft import f_l_positions, loreft_hooks

    layers = {layer: tuple(art.weights[f"layers.{layer}.{k}"] for k in ("R", "W", "b")) for layer in (1, 2)}
    with loreft_hooks(ctx.lm, layers, {"mask": f_l_positions(batch.attention_mask, batch.prompt_len, 5, 5)}):
        trained = _forward(ctx, batch)
    assert float(trained.loss) < float(base.loss) - 0.05
    # the steering edit loads the same tensors from the safetensors file
    with m.steering_edit(ctx.lm, art, ctx):
        pass
    assert _same_state(ctx, before)


# ----------------------------------------------------------------------------------------------------------- SFT

def test_sft_changed_selects_the_tensors_that_moved():
    from axwarehouse.methods.sft import changed

    a = {"x": torch.zeros(3), "y": torch.ones(2), "z": torch.arange(4.0)}
    b = {"x": torch.zeros(3), "y": torch.tensor([1.0, 1.5]), "z": torch.arange(4.0)}
    assert changed(a, b) == ["y"]


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-3)])
def test_sft_lowers_the_loss_stores_deltas_and_reloads_the_trained_model(ctx, monkeypatch, dtype, tol):
    import axwarehouse.methods.sft as sft

    data = _data(ctx)
    batch = _batch(ctx, data)
    before = _state(ctx)
    base = _forward(ctx, batch)
    seen = {}
    real = sft.train_lm

    def spy(lm, *args, **kwargs):  # the trained model's logits and parameters, before fit restores the base
        loss = real(lm, *args, **kwargs)
        seen["out"] = _forward(ctx, batch)
        seen["changed"] = {n for n, p in lm.model.named_parameters() if not torch.equal(p, before[n])}
        return loss

    monkeypatch.setattr(sft, "train_lm", spy)
    m = get("sft")({"epochs": 4, "batch_size": 2, "grad_accum": 2, "lr": 3e-3, "weights_dtype": dtype}, seed=0)
    art = _save(ctx, m.fit(data), f"sft-{dtype}")
    assert _same_state(ctx, before)  # fit restores the shared model exactly
    assert all(not p.requires_grad for p in ctx.lm.model.parameters())
    assert float(seen["out"].loss) < float(base.loss) - 0.1
    assert set(art.weights) == seen["changed"] and all(v.dtype == getattr(torch, dtype) for v in art.weights.values())
    assert "lm_head.weight" not in art.weights  # tied to the embeddings: stored once
    with m.steering_edit(ctx.lm, art, ctx):
        reloaded = _forward(ctx, batch)
    torch.testing.assert_close(reloaded.logits, seen["out"].logits, atol=tol, rtol=0)
    assert float(reloaded.loss) < float(base.loss) - 0.1
    assert _same_state(ctx, before)  # the edit restores the originals bit for bit


# ------------------------------------------------------------------------------------------------- the shared loop

def test_train_lm_accumulates_averaged_gradients_clips_and_decays_linearly(ctx, monkeypatch):
    """5 examples, batch 2, GA 2: steps after batches 2 and 3 of each epoch; schedule over epochs × (3 // 2) steps
    (transformers' linear schedule, held at 0 past its end); the first step's gradient = mean of two batches'."""
    from axwarehouse.methods.lm_objective import collate, lm_examples, train_lm
    from axwarehouse.methods.lora import lora_hooks

    data = _data(ctx, n=10)
    pos = [i for i, y in enumerate(data.labels) if y == 1]
    ex = lm_examples(ctx.chat, [data.inputs[i] for i in pos], [data.outputs[i] for i in pos], data.labels[pos])
    g = torch.Generator().manual_seed(0)
    a0, b0 = torch.randn(4, 32, generator=g), torch.randn(32, 4, generator=g) * 0.1
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())

    def around(_batch, _state):
        return lora_hooks(ctx.lm, {1: (a, b)}, "self_attn.o_proj", 2.0)

    def grads_of(idx: list[int]) -> torch.Tensor:
        a1, b1 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        batch = collate([ex[i] for i in idx], ctx.lm.tokenizer.pad_token_id, ctx.chat.prefix_len)
        with lora_hooks(ctx.lm, {1: (a1, b1)}, "self_attn.o_proj", 2.0):
            loss = ctx.lm.model(input_ids=batch.ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        return torch.cat([t.flatten() for t in torch.autograd.grad(loss, [a1, b1])])

    order = torch.randperm(5, generator=torch.Generator().manual_seed(7)).split(2)  # train_lm's first epoch
    expect = (grads_of(order[0].tolist()) + grads_of(order[1].tolist())) / 2
    created = []

    class SpyAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", SpyAdamW)
    grads, lrs = [], []

    def before_step():
        grads.append(torch.cat([a.grad.flatten(), b.grad.flatten()]).clone())
        lrs.append(created[-1].param_groups[0]["lr"])

    train_lm(ctx.lm, ex, ctx.chat.prefix_len, [a, b], around, lr=0.1, weight_decay=0.0, epochs=2, batch_size=2,
             seed=7, grad_accum=2, clip_norm=None, before_step=before_step)
    assert len(grads) == 4  # 2 optimizer steps per epoch
    torch.testing.assert_close(grads[0], expect, atol=1e-6, rtol=1e-4)
    assert lrs == pytest.approx([0.1, 0.05, 0.0, 0.0])
    # accum_mean=False (upstream LoReFT): the accumulated gradient is the sum
    grads.clear()
    with torch.no_grad():
        a.copy_(a0)
        b.copy_(b0)
    train_lm(ctx.lm, ex, ctx.chat.prefix_len, [a, b], around, lr=0.1, weight_decay=0.0, epochs=1, batch_size=2,
             seed=7, grad_accum=2, accum_mean=False, before_step=before_step)
    torch.testing.assert_close(grads[0], 2 * expect, atol=1e-6, rtol=1e-4)
    # clipping happens before before_step: every step's gradient has norm <= clip_norm
    grads.clear()
    train_lm(ctx.lm, ex, ctx.chat.prefix_len, [a, b], around, lr=0.1, weight_decay=0.0, epochs=1, batch_size=2,
             seed=7, grad_accum=2, clip_norm=1e-3, before_step=before_step)
    assert len(grads) == 2 and all(float(t.norm()) <= 1e-3 * (1 + 1e-5) for t in grads)
    assert float(expect.norm()) > 1e-2  # so clipping did act
