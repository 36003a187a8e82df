"""Steering on a tiny random-init Llama: the planted-direction sweep, factor 0 = unsteered bit for bit, batched =
one-at-a-time, pyvene = plain forward hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axwarehouse.model.chat import ChatFormat
from axwarehouse.model.loader import LoadedModel
from axwarehouse.steering import GenRow, Steerer, generate_rows
from axwarehouse.steering.generate import CounterSampler, left_pad

INSTRUCTIONS = ["Tell me a joke.", "What is the capital of France?", "List three colours.",
                "Write a poem about rain.", "hello there", "Explain tides.", "Name a fruit.", "Why is the sky blue?"]
LAYER = 2


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    """A private copy of the tiny model with its (tied) embeddings scaled up 40x, never the loader's cached instance.

    A random init with std 0.02 gives near-uniform next-token distributions, where sampling ignores any edit; the
    scaled copy has peaked logits like a trained model."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(40.0)
    return LoadedModel("sharp-tiny", model, tok, 4, 32)


@pytest.fixture(scope="module")
def prompts(tiny) -> list[tuple[int, ...]]:
    chat = ChatFormat.of(tiny.tokenizer)
    return [tuple(chat.prompt_ids(s)) for s in INSTRUCTIONS]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_planted_direction_raises_token_frequency_monotonically(tiny, prompts):
    """Add factor x (unit embedding of ' cat') at layer 2: the share of ' cat' among sampled tokens rises with the
    factor."""
    lm, tok, model = tiny, tiny.tokenizer, tiny.model
    target = tok.encode(" cat", add_special_tokens=False)[0]
    w = _unit(model.get_input_embeddings().weight[target].detach().numpy())
    steerer = Steerer(model, LAYER)
    assert steerer.backend == "pyvene"
    freqs = []
    for factor in (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0):
        rows = [GenRow(p, w, factor, seed=k) for k, p in enumerate(prompts)]
        outs = generate_rows(lm, steerer, rows, max_new_tokens=16, temperature=1.0, batch_size=8)
        toks = [t for o in outs for t in o.token_ids]
        freqs.append(sum(t == target for t in toks) / len(toks))
    assert freqs[0] == 0.0
    assert all(b >= a for a, b in zip(freqs, freqs[1:])), freqs
    assert freqs[-1] > 0.5, freqs


def _plain_generate(lm: LoadedModel, prompt: tuple[int, ...], seed: int, temperature: float, n: int) -> list[int]:
    """The unsteered model through plain ``model.generate`` (no pyvene, no hook), one prompt at a time."""
    from transformers import LogitsProcessorList

    inputs = left_pad([prompt], lm.tokenizer.pad_token_id)
    kwargs = {"max_new_tokens": n, "do_sample": False, "pad_token_id": lm.tokenizer.pad_token_id,
              "temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        kwargs["logits_processor"] = LogitsProcessorList([CounterSampler([seed], temperature,
                                                                         inputs["input_ids"].shape[1])])
    with torch.inference_mode():
        out = lm.model.generate(**inputs, **kwargs)[0, inputs["input_ids"].shape[1]:].tolist()
    eos = lm.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) | {lm.tokenizer.eos_token_id}
    end = next((k for k, t in enumerate(out) if t in eos), None)
    return out if end is None else out[:end]


@pytest.mark.parametrize("engine", ["continuous", "hf"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_factor_zero_is_the_unsteered_model_bit_for_bit(tiny, prompts, temperature, engine):
    """Factor-0 rows share a batch with strongly steered rows and still equal plain unsteered generation."""
    rng = np.random.default_rng(0)
    w = _unit(rng.standard_normal(32))
    rows = [GenRow(p, w, f, seed=100 + k) for k, p in enumerate(prompts[:4]) for f in (0.0, 30.0)]
    outs = generate_rows(tiny, Steerer(tiny.model, LAYER), rows, max_new_tokens=8, temperature=temperature,
                         batch_size=8, engine=engine)
    for row, out in zip(rows, outs):
        plain = _plain_generate(tiny, row.prompt_ids, row.seed, temperature, 8)
        if row.strength == 0.0:
            assert out.token_ids == plain
        else:
            assert out.token_ids != plain  # the steered rows of the same batch did change


def _sweep_rows(prompts) -> list[GenRow]:
    rng = np.random.default_rng(1)
    dirs = [_unit(rng.standard_normal(32)) for _ in range(2)]  # two "concepts"
    return [GenRow(p, d, f, seed=7 * k) for k, p in enumerate(prompts[:3]) for d in dirs for f in (0.0, 4.0, 16.0)]


def test_batched_sweep_equals_one_at_a_time_greedy(tiny, prompts):
    rows = _sweep_rows(prompts)
    steerer = Steerer(tiny.model, LAYER)
    batched = generate_rows(tiny, steerer, rows, max_new_tokens=8, temperature=0.0, batch_size=18)
    single = generate_rows(tiny, steerer, rows, max_new_tokens=8, temperature=0.0, batch_size=1)
    assert [o.token_ids for o in batched] == [o.token_ids for o in single]
    assert len({tuple(o.token_ids) for o in batched}) >= 3  # the sweep produced genuinely different outputs


def test_batched_sampling_is_independent_of_batch_composition(tiny, prompts):
    rows = _sweep_rows(prompts)
    steerer = Steerer(tiny.model, LAYER)
    a = generate_rows(tiny, steerer, rows, max_new_tokens=8, temperature=1.0, batch_size=18)
    b = generate_rows(tiny, steerer, rows[::-1], max_new_tokens=8, temperature=1.0, batch_size=5)[::-1]
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


def test_pyvene_intervention_equals_forward_hook(tiny, prompts):
    """pyvene edits every position of the prompt and of every decoding step, exactly as a plain block hook does."""
    rows = _sweep_rows(prompts)
    via_pyvene = Steerer(tiny.model, LAYER)
    via_hook = Steerer(tiny.model, LAYER, prefer="hook")
    assert via_pyvene.backend == "pyvene" and via_hook.backend == "hook"
    a = generate_rows(tiny, via_pyvene, rows, max_new_tokens=8, temperature=1.0, batch_size=18, engine="hf")
    b = generate_rows(tiny, via_hook, rows, max_new_tokens=8, temperature=1.0, batch_size=18, engine="hf")
    assert [o.token_ids for o in a] == [o.token_ids for o in b]


def test_pyvene_covers_gemma3_like_the_hook(tiny, prompts):
    """Gemma-3 is not in pyvene's model cards; its blocks sit where Llama's do, so it steers through pyvene (with
    Llama's mapping) and generates the same tokens as the plain hook."""
    import transformers

    tok = tiny.tokenizer
    cfg = transformers.Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                        max_position_embeddings=2048, sliding_window=16,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(40.0)
    lm = LoadedModel("tiny-gemma3", model, tok, 4, 32)
    rows = _sweep_rows(prompts)
    via_pyvene = Steerer(model, LAYER)
    via_hook = Steerer(model, LAYER, prefer="hook")
    assert via_pyvene.backend == "pyvene", via_pyvene.fallback_reason
    a = generate_rows(lm, via_pyvene, rows, max_new_tokens=8, temperature=1.0, batch_size=18, engine="hf")
    b = generate_rows(lm, via_hook, rows, max_new_tokens=8, temperature=1.0, batch_size=18, engine="hf")
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    plain = generate_rows(lm, via_pyvene, [GenRow(r.prompt_ids, None, 0.0, r.seed) for r in rows], max_new_tokens=8,
                          engine="hf")
    same = [x.token_ids == y.token_ids for x, y in zip(a, plain)]
    assert all(k for k, r in zip(same, rows) if r.strength == 0.0)  # factor 0: the unsteered text
    assert not all(k for k, r in zip(same, rows) if r.strength > 0.0)  # the pyvene edit does steer


def test_conditional_perplexity_equals_one_row_at_a_time_over_the_full_logits(tiny, prompts):
    """Batched (right-padded, logits only where a generation token is predicted) = each row alone through the
    model's full logits; rows of different prompt and generation lengths, one empty generation."""
    import math

    from axwarehouse.judging.conditional_perplexity import conditional_perplexity

    rng = np.random.default_rng(0)
    gens = [rng.integers(5, 120, size=n).tolist() for n in (7, 1, 0, 19, 4, 11, 3, 8)]
    got = conditional_perplexity(tiny, prompts, gens, batch_tokens=64)
    want = []
    for p, g in zip(prompts, gens):
        if not g:
            want.append(None)
            continue
        ids = torch.tensor([list(p) + g])
        with torch.no_grad():
            logp = torch.log_softmax(tiny.model(input_ids=ids).logits[0].float(), -1)
        nll = -sum(float(logp[len(p) - 1 + k, t]) for k, t in enumerate(g)) / len(g)
        want.append(math.exp(nll))
    assert got[2] is None and want[2] is None
    assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], rel=1e-5)
    assert len(set(round(w, 3) for w in want if w is not None)) > 3  # rows differ: a row mix-up would show


@pytest.mark.parametrize("bool_mask", [True, False])
def test_kept_logits_are_the_full_logits_at_the_kept_positions(tiny, monkeypatch, bool_mask):
    """The head's logits at scattered positions of a padded batch, in row-major order, equal the full forward's at
    those positions — through transformers' boolean ``logits_to_keep`` and through the 1-D column index that
    transformers without it take (vLLM's CPU build pins one), forced here on the installed transformers."""
    from axwarehouse.model import token_nll

    if bool_mask and not token_nll._bool_logits_to_keep():
        pytest.skip("the installed transformers takes no boolean logits_to_keep")
    monkeypatch.setattr(token_nll, "_bool_logits_to_keep", lambda: bool_mask)
    ids = torch.randint(5, 120, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[0, [2, 8]] = True
    keep[1, [0, 5]] = True
    keep[2, 4] = True
    with torch.no_grad():
        full = tiny.model(input_ids=ids, attention_mask=mask).logits
        got = token_nll.kept_logits(tiny.model, keep, input_ids=ids, attention_mask=mask)
    assert got.shape == (5, full.shape[-1])
    assert torch.allclose(got, full[keep], atol=1e-5)
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # positions differ: a mix-up of rows or order would show


def test_the_head_gets_a_contiguous_input_in_steered_generation(tiny_model_dir, monkeypatch):
    """Generation's first step applies the head to the last position sliced out of the hidden states; on that
    strided slice torch copies the head's weight once per row (model/loader.contiguous_head_input). The loaded model's
    head must see contiguous rows as one matrix on every step, also under pyvene (which removes hooks), and give the
    same logits."""
    from axwarehouse.model.loader import load
    from axwarehouse.steering.intervention import AdditionEdit

    lm = load(str(tiny_model_dir), "float32")
    head = lm.model.get_output_embeddings()
    assert isinstance(head, torch.nn.Linear) and head.state_dict().keys() == {"weight"}
    seen = []
    real_linear = torch.nn.functional.linear

    def spy(x, weight, bias=None):
        if weight is head.weight:
            seen.append((tuple(x.shape), x.is_contiguous()))
        return real_linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    chat = ChatFormat.of(lm.tokenizer)
    batch = left_pad([chat.prompt_ids(s) for s in INSTRUCTIONS[:3]], lm.tokenizer.pad_token_id)
    edit = AdditionEdit.of(torch.randn(3, lm.hidden_size), torch.ones(3))
    steerer = Steerer(lm.model, LAYER)
    assert steerer.backend == "pyvene"
    steerer.generate(batch, edit, max_new_tokens=3, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    # the prompt's last position, then 2 steps: each as one [rows, d] matrix
    assert [shape for shape, _ in seen] == [(3, lm.hidden_size)] * 3
    assert all(contiguous for _, contiguous in seen), seen
    # one row: the [1, 1, d] slice keeps its parent's strides on the size-1 dims (torch calls it contiguous and
    # still expands the weight into a batched product); the head must see a [1, d] matrix there too
    seen.clear()
    with torch.no_grad():
        lm.model(input_ids=batch["input_ids"][:1], logits_to_keep=1)
    assert seen == [((1, lm.hidden_size), True)]

    monkeypatch.setattr(torch.nn.functional, "linear", real_linear)
    with torch.no_grad():
        last = lm.model(**batch, logits_to_keep=1).logits[:, -1]
        full = lm.model(**batch).logits[:, -1]
    assert torch.allclose(last, full, atol=1e-5)
