"""Model runtime: spec resolution, default layers, AxBench's chat renderings, length-sorted batching."""

from __future__ import annotations

import pytest

from axwarehouse.errors import AxwError
from axwarehouse.model.capture import length_batches
from axwarehouse.model.chat import MAX_LENGTH, ChatFormat
from axwarehouse.model.info import model_info
from axwarehouse.model.loader import default_layer, resolve


def test_resolve_specs(tmp_path, tiny_model_dir):
    src = resolve("embedded:smollm2")
    assert src.gguf_file and src.gguf_file.endswith(".gguf")
    assert resolve(str(tiny_model_dir)).name == str(tiny_model_dir.resolve())
    assert resolve("org/model").path == "org/model"
    (tmp_path / "notamodel").mkdir()
    for bad, msg in [("embedded:nope", "unknown embedded model"), (str(tmp_path / "notamodel"), "no config.json"),
                     (str(tmp_path / "x.gguf"), "GGUF file not found"), ("", "empty model name")]:
        with pytest.raises(AxwError, match=msg):
            resolve(bad)


def test_uncached_hub_id_fails_offline_with_one_line():
    with pytest.raises(AxwError, match="offline"):
        model_info("axwarehouse-test/definitely-not-cached")


def test_default_layers(tiny_model_dir):
    info = model_info("embedded:smollm2")
    assert (info.n_layers, info.hidden_size) == (30, 576)
    assert info.default_layer == 21  # configured default, chosen on the held-out quarter of train
    assert default_layer(18, "embedded:gemma3-270m") == 15  # configured (measured) default of Gemma-3-270M
    assert model_info(str(tiny_model_dir)).default_layer == 2  # round(0.4 * 4)
    assert default_layer(26) == 10  # AxBench's Gemma-2-2B L10 is ~40 % depth
    with pytest.raises(AxwError, match="out of range"):
        info.check_layer(30)


def test_chat_renderings_follow_axbench(tiny_model_dir):
    from axwarehouse.model.loader import load

    tok = load(str(tiny_model_dir)).tokenizer
    chat = ChatFormat.of(tok)
    assert (chat.prefix_len, chat.suffix_len) == (24, 2)  # SmolLM2: system prompt + role header; <|im_end|>\n
    train = tok.convert_ids_to_tokens(chat.train_ids("Hi there", "Hello world"))
    evald = tok.convert_ids_to_tokens(chat.eval_ids("Hi there", "Hello world"))
    # train: generation prompt `<|im_start|>assistant\n` appended, then the last S = 2 tokens cut, literally as
    # AxBench does (for Gemma that removes `model\n`; SmolLM2 splits "assistant" in two, so "ass" survives)
    assert train[-4:] == ["<|im_end|>", "Ċ", "<|im_start|>", "ass"]
    # eval: no generation prompt, S tokens cut -> ends right after the response
    assert tok.convert_tokens_to_string(evald[-2:]).strip() == "Hello world"
    assert train[: chat.prefix_len] == evald[: chat.prefix_len]
    assert len(chat.eval_ids("x " * 3000, "y")) == MAX_LENGTH


def test_length_batches_respect_budget_and_cover_everything():
    lengths = [5, 100, 7, 64, 64, 3, 250, 90, 12, 33]
    batches = length_batches(lengths, batch_tokens=256, max_batch=4)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 256


def test_model_load_shows_no_progress_bars(tiny_model_dir, capfd):
    """transformers' "Loading weights" bar and the GGUF de-quantisation bar stay off the terminal on a load."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from axwarehouse.model.loader import load, quiet_loading

    capfd.readouterr()
    lm = load.__wrapped__(str(tiny_model_dir))  # past the per-process cache: a real load
    assert lm.n_layers == 4
    with quiet_loading():
        list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "de-quantizing" not in err, err
    list(gguf_utils.tqdm(range(3), desc="de-quantizing"))  # restored after the load: the bar is back
    assert "de-quantizing" in capfd.readouterr().err
