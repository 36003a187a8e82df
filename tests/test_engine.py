"""The continuous-batching engine steers exactly as the ``hf`` reference (pyvene on ``model.generate``): same greedy
tokens for sweeps of directions and strengths over prompts of different lengths, rows finishing at different times
and slots refilled mid-run; seeded sampling independent of batch composition; the counter-based sampler draws from
the distribution it is given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axwarehouse.model.chat import ChatFormat
from axwarehouse.model.loader import LoadedModel
from axwarehouse.steering import GenRow, Steerer, generate_rows
from axwarehouse.steering import engine as engine_mod
from axwarehouse.steering.engine import generate_slots
from axwarehouse.steering.sampling import sample_tokens, uniforms

INSTRUCTIONS = ["Tell me a joke.", "What is the capital of France? Answer in one word, please, and be brief.",
                "List three colours.", "Write a poem about rain falling on a tin roof at night in the city.", "hi",
                "Explain tides.", "Name a fruit.", "Why is the sky blue? Give the physical reason in two sentences."]
LAYER = 2
NEW = 32


def _random_model(tok, family: str = "llama"):
    """A random 4-block model with hidden size 32, untied head and weights of std 0.3: its greedy continuations are
    varied token chains (the suite's tiny model, tied at std 0.02, repeats one token forever)."""
    import transformers

    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  tie_word_embeddings=False, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if family == "gemma3":  # sliding-window layers, window 16 < prompt + 32 new tokens
        cfg = transformers.Gemma3TextConfig(**common, head_dim=8, sliding_window=16)
        return transformers.Gemma3ForCausalLM(cfg).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()


def _stop_early(lm, rows) -> None:
    """Add end-of-turn ids taken from every other row's greedy reference at varied steps, so rows stop at many
    different steps (the engine retires and refills slots; ``generate`` pads finished rows)."""
    ref = _tokens(_reference(lm, rows))
    stops = {ref[r][(3 * r) % (NEW - 1) + 1] for r in range(0, len(rows), 2)}
    lm.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id, *sorted(stops)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = LoadedModel("random-llama", _random_model(tok), tok, 4, 32)
    _stop_early(lm, _rows(lm))
    return lm


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _rows(lm, seed: int = 1) -> list[GenRow]:
    """8 prompts of 9-28 tokens x 2 directions x strengths 0 / 4 / 16 (factor-0 rows share batches with steered
    ones): 48 rows."""
    chat = ChatFormat.of(lm.tokenizer)
    prompts = [tuple(chat.prompt_ids(s)) for s in INSTRUCTIONS]
    rng = np.random.default_rng(seed)
    dirs = [_unit(rng.standard_normal(lm.hidden_size)) for _ in range(2)]
    return [GenRow(p, d, f, seed=7 * k + 1) for k, p in enumerate(prompts) for d in dirs for f in (0.0, 4.0, 16.0)]


def _tokens(outs) -> list[list[int]]:
    return [o.token_ids for o in outs]


def _reference(lm, rows, temperature=0.0, batch_size=16):
    return generate_rows(lm, Steerer(lm.model, LAYER), rows, max_new_tokens=NEW, temperature=temperature,
                         batch_size=batch_size, engine="hf")


@pytest.fixture(scope="module")
def greedy_reference(tiny):
    return _reference(tiny, _rows(tiny))


def test_greedy_tokens_equal_the_hf_reference(tiny, greedy_reference):
    """48 rows through 5 slots (waves refill freed slots, live rows move into holes) and through one batch of all
    rows: the first 32 new tokens of every row equal the padded ``generate`` reference with pyvene."""
    rows = _rows(tiny)
    ref = _tokens(greedy_reference)
    lengths = [len(t) for t in ref]
    assert len(set(lengths)) >= 4 and min(lengths) < NEW // 2 and max(lengths) == NEW  # rows stop at many steps
    assert len({tuple(t) for t in ref}) >= 24  # the sweep's rows genuinely differ
    for slots in (5, 64):
        outs, stats = generate_slots(tiny, rows, layer=LAYER, max_new_tokens=NEW, temperature=0.0, slots=slots)
        assert _tokens(outs) == ref, f"slots={slots}"
        assert [o.finished for o in outs] == [o.finished for o in greedy_reference]
        assert [o.text for o in outs] == [o.text for o in greedy_reference]
        assert stats.new_tokens == sum(lengths)
    assert stats.prefill_waves == 1
    _, small = generate_slots(tiny, rows, layer=LAYER, max_new_tokens=NEW, temperature=0.0, slots=5)
    assert small.prefill_waves > 5  # slots were refilled as rows finished


def test_the_comparison_sees_a_wrong_layer(tiny, greedy_reference):
    """The same rows steered one block later are not the reference: the equality above pins the layer."""
    rows = _rows(tiny)
    outs, _ = generate_slots(tiny, rows, layer=LAYER + 1, max_new_tokens=NEW, temperature=0.0, slots=8)
    steered = [k for k, r in enumerate(rows) if r.strength > 0]
    differ = sum(_tokens(outs)[k] != greedy_reference[k].token_ids for k in steered)
    assert differ >= len(steered) // 2


def test_the_comparison_sees_the_prompt_left_unsteered(tiny, greedy_reference, monkeypatch):
    """The delta added on decoding steps only (not on the prompt's prefill) is not the reference either."""
    real = engine_mod._SteeringHook.__call__

    def decode_only(self, module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        return output if hidden.shape[1] > 1 else real(self, module, inputs, output)

    monkeypatch.setattr(engine_mod._SteeringHook, "__call__", decode_only)
    rows = _rows(tiny)
    outs, _ = generate_slots(tiny, rows, layer=LAYER, max_new_tokens=NEW, temperature=0.0, slots=8)
    steered = [k for k, r in enumerate(rows) if r.strength > 0]
    differ = sum(_tokens(outs)[k] != greedy_reference[k].token_ids for k in steered)
    assert differ >= len(steered) // 2
    unsteered = [k for k, r in enumerate(rows) if r.strength == 0]
    assert all(_tokens(outs)[k] == greedy_reference[k].token_ids for k in unsteered)


@pytest.fixture(scope="module")
def peaked(tiny_model_dir) -> LoadedModel:
    """The suite's tiny model with its tied embeddings scaled 40x: peaked next-token distributions like a trained
    model's. (On the std-0.3 model, whose distributions are flat over 49k tokens, the ``hf`` reference itself gives
    one of 48 sampled rows a different token at batch 48 than at batch 1: the logits differ in their last bits with
    the batch's padded width, and that draw fell within that distance of a CDF step.)"""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(40.0)
    return LoadedModel("peaked-tiny", model, tok, 4, 32)


def test_sampled_rows_do_not_depend_on_batch_composition_or_engine(peaked):
    """Temperature 1: the same row gives the same tokens in 3 slots, in 48 slots in reverse order, among other
    rows, and through the ``hf`` engine (the same counter-based draws)."""
    rows, lm = _rows(peaked), peaked
    a, _ = generate_slots(lm, rows, layer=LAYER, max_new_tokens=NEW, temperature=1.0, slots=3)
    b, _ = generate_slots(lm, rows[::-1], layer=LAYER, max_new_tokens=NEW, temperature=1.0, slots=48)
    c, _ = generate_slots(lm, rows[5:9] + _rows(lm, seed=9)[:7], layer=LAYER, max_new_tokens=NEW,
                          temperature=1.0, slots=4)
    ref = _reference(lm, rows, temperature=1.0)
    assert _tokens(a) == _tokens(b[::-1]) == _tokens(ref)
    assert _tokens(c)[:4] == _tokens(a)[5:9]
    greedy, _ = generate_slots(lm, rows, layer=LAYER, max_new_tokens=NEW, temperature=0.0, slots=48)
    assert sum(x != y for x, y in zip(_tokens(a), _tokens(greedy))) >= len(rows) // 2  # it did sample
    seeds_differ = [GenRow(r.prompt_ids, r.direction, r.strength, r.seed + 1) for r in rows]
    d, _ = generate_slots(lm, seeds_differ, layer=LAYER, max_new_tokens=NEW, temperature=1.0, slots=48)
    assert sum(x != y for x, y in zip(_tokens(a), _tokens(d))) >= len(rows) // 2  # the seed drives the draws


def test_sliding_window_model_equals_the_reference(tiny):
    """Gemma-3 (sliding-window layers, window 16 < prompt + 32 new tokens) through the engine's per-layer-type
    masks: greedy tokens equal ``generate``'s."""
    import transformers

    lm = LoadedModel("random-gemma3", _random_model(tiny.tokenizer, "gemma3"), tiny.tokenizer, 4, 32)
    model, cfg, tok = lm.model, lm.model.config, tiny.tokenizer
    rows = _rows(lm)[::3]
    ref = _reference(lm, rows)
    outs, _ = generate_slots(lm, rows, layer=LAYER, max_new_tokens=NEW, temperature=0.0, slots=4)
    assert _tokens(outs) == _tokens(ref)
    assert any(len(r.prompt_ids) + len(t) > 16 for r, t in zip(rows, _tokens(ref)))  # the window was exceeded
    wide = dict(cfg.to_dict(), sliding_window=4096)
    full = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**wide)).eval()
    full.load_state_dict(model.state_dict())
    unwindowed, _ = generate_slots(LoadedModel("tiny-gemma3-full", full, tok, 4, 32), rows, layer=LAYER,
                                   max_new_tokens=NEW, temperature=0.0, slots=4)
    assert _tokens(unwindowed) != _tokens(outs)  # the window did change the result, so the masks mattered


def test_counter_sampler_draws_from_the_given_distribution():
    """40,000 draws (2,000 seeds x 20 steps) from a fixed 5-token distribution land within 4 standard errors of
    each probability; the draws are uniform on [0, 1) in tenths likewise."""
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03], dtype=torch.float64)
    seeds = torch.arange(2000).repeat_interleave(20) * 7919 + 12345
    steps = torch.arange(20).repeat(2000)
    logits = probs.log().float().expand(len(seeds), -1)
    picked = sample_tokens(logits, seeds, steps, 1.0)
    freq = torch.bincount(picked, minlength=5).double() / len(seeds)
    se = (probs * (1 - probs) / len(seeds)).sqrt()
    assert ((freq - probs).abs() < 4 * se).all(), freq
    tenths = torch.bincount((uniforms(seeds, steps) * 10).long(), minlength=10).double() / len(seeds)
    assert ((tenths - 0.1).abs() < 4 * (0.09 / len(seeds)) ** 0.5).all(), tenths
    assert torch.equal(sample_tokens(logits[:3], seeds[:3], steps[:3], 0.0), torch.zeros(3, dtype=torch.long))
