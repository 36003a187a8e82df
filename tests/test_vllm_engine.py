"""``--engine vllm`` steers as the ``hf`` reference does: on a tiny random model saved as a Hugging Face folder, the
same greedy tokens for a sweep of directions and strengths, the same counter-based draws when sampling; and the
comparison sees a vector added one block late or left off the prompt.

Runs only where vLLM is installed (its own environment, see :mod:`axwarehouse.steering.vllm_engine`); the project's
CI does not install it. The engine process runs inside the test process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so
the prompt-skipping check can patch the worker's steering.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("vllm")

from axwarehouse.model.chat import ChatFormat  # noqa: E402
from axwarehouse.model.loader import LoadedModel  # noqa: E402
from axwarehouse.steering import GenRow, Steerer, generate_rows  # noqa: E402
from axwarehouse.steering import vllm_engine, vllm_worker  # noqa: E402

LAYER = 2
NEW = 32
PROMPTS = ["Tell me a joke.", "What is the capital of France? Answer in one word, please.", "List three colours.",
           "Write a poem about rain falling on a tin roof at night.", "hi", "Explain tides."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tmp_path_factory) -> LoadedModel:
    """A random 4-block Llama (hidden 128, head size 32, weights of std 0.3, untied head scaled 4x) saved where vLLM
    can load it: varied greedy chains, a head size vLLM's CPU attention takes, and next-token distributions peaked
    enough that a draw rarely falls within last-bit distance of a CDF step (flat ones over 49k tokens let the
    kernels' float differences flip one draw in a few hundred, and the row then goes its own way)."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                   tie_word_embeddings=False, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    folder = tmp_path_factory.mktemp("vllm-tiny")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return LoadedModel(str(folder), model, tok, 4, 128)


@pytest.fixture(autouse=True, scope="module")
def _in_process():
    mp = pytest.MonkeyPatch()
    mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    yield
    vllm_engine.close_engines()
    mp.undo()


def _rows(lm) -> list[GenRow]:
    """6 prompts x 2 directions x strengths 0 / 8 / 32: 36 rows, steered and unsteered in the same batch."""
    chat = ChatFormat.of(lm.tokenizer)
    rng = np.random.default_rng(1)
    dirs = [(v / np.linalg.norm(v)).astype(np.float32) for v in rng.standard_normal((2, lm.hidden_size))]
    return [GenRow(tuple(chat.prompt_ids(p)), d, f, seed=7 * k + 1)
            for k, p in enumerate(PROMPTS) for d in dirs for f in (0.0, 8.0, 32.0)]


def _hf(lm, rows, temperature=0.0):
    return [o.token_ids for o in generate_rows(lm, Steerer(lm.model, LAYER), rows, max_new_tokens=NEW,
                                               temperature=temperature, batch_size=len(rows), engine="hf")]


def _vllm(lm, rows, layer=LAYER, temperature=0.0, max_rows=None):
    return [o.token_ids for o in vllm_engine.generate_vllm(lm, lm.name, rows, layer=layer, max_new_tokens=NEW,
                                                           temperature=temperature, eager=True, max_rows=max_rows)]


@pytest.fixture(scope="module")
def reference(tiny):
    return _hf(tiny, _rows(tiny))


def _steered_differ(rows, got, ref) -> int:
    return sum(got[k] != ref[k] for k, r in enumerate(rows) if r.strength > 0)


def test_greedy_tokens_equal_the_hf_reference(tiny, reference):
    rows = _rows(tiny)
    assert len({tuple(t) for t in reference}) >= 18  # the sweep's rows genuinely differ
    assert _vllm(tiny, rows) == reference


def test_sampled_tokens_equal_the_hf_reference(tiny):
    """Temperature 1: vLLM's greedy sampler takes the token the logits processor drew with the row's seed."""
    rows = _rows(tiny)
    got, ref = _vllm(tiny, rows, temperature=1.0), _hf(tiny, rows, temperature=1.0)
    assert got == ref
    assert sum(a != b for a, b in zip(ref, _hf(tiny, rows))) >= len(rows) // 2  # it did sample


def test_sampled_rows_do_not_depend_on_batch_composition(tiny):
    """Temperature 1: each row's tokens are the same in one batch of all 36 rows and, in reverse order, 4 rows at a
    time (rows joining as others finish)."""
    rows = _rows(tiny)
    together = _vllm(tiny, rows, temperature=1.0)
    assert _vllm(tiny, rows[::-1], temperature=1.0, max_rows=4)[::-1] == together


def test_the_comparison_sees_a_wrong_layer(tiny, reference):
    rows = _rows(tiny)
    assert _steered_differ(rows, _vllm(tiny, rows, layer=LAYER + 1), reference) >= len(rows) // 3


def test_the_comparison_sees_the_prompt_left_unsteered(tiny, reference, monkeypatch):
    """The worker's delta zeroed on every step that schedules more than one token for some request (the prompts'
    prefill) is not the reference: the equality above pins steering on the prompt."""
    real = vllm_worker._Steering._fill

    def decode_only(self):
        real(self)
        n = self.runner.input_batch.num_reqs
        if (np.diff(self.runner.query_start_loc.np[: n + 1]) > 1).any():
            self.delta.zero_()

    monkeypatch.setattr(vllm_worker._Steering, "_fill", decode_only)
    rows = _rows(tiny)
    got = _vllm(tiny, rows)
    assert _steered_differ(rows, got, reference) >= len(rows) // 6  # a quarter of the 24 steered rows
    assert all(got[k] == reference[k] for k, r in enumerate(rows) if r.strength == 0)


def test_the_stage_writes_the_same_rows_through_either_engine(tiny, small_release, tmp_path):
    """`axw steer --engine vllm` and `--engine hf` on copies of one warehouse (DiffMean trained and scored on the
    tiny model, greedy, float32): the same rows with the same texts, and the summary names vLLM's hook."""
    import shutil

    from axwarehouse.catalog import Catalog
    from conftest import axw

    first = tmp_path / "hf" / "catalog.duckdb"
    first.parent.mkdir(parents=True)
    common = ["-c", "s3", "--model", tiny.name, "--layer", str(LAYER), "--dtype", "float32"]
    assert axw("--catalog", first, "import-axbench", small_release, "-c", "s3")[0] == 0
    assert axw("--catalog", first, "activations", *common)[0] == 0
    for stage in ("train", "latent"):
        assert axw("--catalog", first, stage, *common, "--method", "diffmean")[0] == 0
    shutil.copytree(first.parent, tmp_path / "vllm")
    texts = {}
    for engine in ("hf", "vllm"):
        catalog = tmp_path / engine / "catalog.duckdb"
        code, out, err = axw("--catalog", catalog, "steer", *common, "--method", "diffmean", "--factors", "0,2,8",
                             "--instructions", "4", "--max-new-tokens", "12", "--temperature", "0",
                             "--engine", engine, "--no-progress")
        assert code == 0, err
        with Catalog(catalog, read_only=True) as cat:
            texts[engine] = cat.sql("SELECT concept_id, factor, input_id, generation FROM steering_outputs "
                                    "ORDER BY ALL").fetchall()
    assert "forward hook in vLLM's worker" in out
    assert len(texts["hf"]) == 36 and len({t[3] for t in texts["hf"]}) >= 12
    assert texts["vllm"] == texts["hf"]
