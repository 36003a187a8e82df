"""The offline inputs upstream AxBench needs for the matched workload, written into a workdir (nothing else is touched).

Why each piece:

1. A Hugging Face hub cache (``<workdir>/hf_home``) holding ``HuggingFaceTB/SmolLM2-135M-Instruct``, since upstream
   loads models by hub name and the machine is offline. It is built from the project's converted copy of the
   embedded model (a transformers-5 layout): ``config.json`` rewritten for transformers 4.45 (``rope_parameters`` ->
   ``rope_theta``, ``dtype`` -> ``torch_dtype``), a 4.x ``tokenizer_config.json`` with the chat template inlined and
   ``GPT2Tokenizer`` as its class (as on the hub), and ``vocab.json`` + ``merges.txt`` taken from ``tokenizer.json``
   (upstream's steering path loads the slow tokenizer, ``use_fast=False``). The weights and ``tokenizer.json``
   are symlinks to the copy.
2. ``<workdir>/data/alpaca_eval.json``: AlpacaEval is not reachable offline; the stand-in holds the 80 instructions
   the project draws from, so upstream's ``alpaca_eval_df.sample(n, random_state=concept_id)`` picks the rows
   ``bench/steer.py`` uses. Empty ``seed_sentences`` / ``seed_instructions`` datasets, which upstream's dataset
   factory loads unconditionally (unused once the latent data exist).
3. ``<workdir>/run/generate/metadata.jsonl``: the first concepts of upstream's shipped Concept10.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from run_config import CONCEPT10, CONCEPTS, MODEL

SNAPSHOT = "0" * 40  # any commit name: the cache is only ever read offline
HF_VERSION = "4.45.1"  # the transformers upstream pins
INSTRUCTIONS = 80  # the project's instruction file minus its 20 judge-calibration instructions (its default set)


def snapshot_dir(workdir: Path) -> Path:
    return workdir / "hf_home" / "hub" / ("models--" + MODEL.replace("/", "--")) / "snapshots" / SNAPSHOT


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False))


def _config(src: dict[str, Any]) -> dict[str, Any]:
    """transformers-5 ``config.json`` -> the 4.45 one."""
    cfg = dict(src)
    rope = cfg.pop("rope_parameters")
    if rope.get("rope_type") != "default":
        raise ValueError(f"unexpected rope parameters {rope}")
    cfg.update(rope_theta=rope["rope_theta"], rope_scaling=None, torch_dtype=cfg.pop("dtype"),
               architectures=["LlamaForCausalLM"], transformers_version=HF_VERSION)
    return cfg


def _tokenizer_config(src_tc: dict[str, Any], tok: dict[str, Any], chat_template: str) -> dict[str, Any]:
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in keys} for a in tok["added_tokens"]},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        **{k: src_tc[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")},
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tok["model"]["vocab"]),
    }


def write_model(model_dir: Path, workdir: Path) -> Path:
    """The hub-cache entry of the model, built from ``model_dir`` (the converted transformers-5 copy)."""
    snap = snapshot_dir(workdir)
    snap.mkdir(parents=True, exist_ok=True)
    (snap.parents[1] / "refs").mkdir(exist_ok=True)
    (snap.parents[1] / "refs" / "main").write_text(SNAPSHOT)
    cfg = _config(json.loads((model_dir / "config.json").read_text()))
    _write_json(snap / "config.json", cfg)
    _write_json(snap / "generation_config.json", {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
                | {"transformers_version": HF_VERSION})
    for name in ("model.safetensors", "tokenizer.json"):
        link = snap / name
        link.unlink(missing_ok=True)
        link.symlink_to((model_dir / name).resolve())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    (snap / "vocab.json").write_text(json.dumps(tok["model"]["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    (snap / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tc = _tokenizer_config(json.loads((model_dir / "tokenizer_config.json").read_text()), tok,
                           (model_dir / "chat_template.jinja").read_text())
    _write_json(snap / "tokenizer_config.json", tc)
    _write_json(snap / "special_tokens_map.json", {k: tc[k] for k in ("additional_special_tokens", "bos_token",
                                                                     "eos_token", "pad_token", "unk_token")})
    return snap


def write_data(instructions_file: Path, workdir: Path) -> Path:
    """The AlpacaEval stand-in and the empty seed datasets."""
    import datasets

    datasets.disable_progress_bars()

    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = [json.loads(line)["instruction"].strip() for line in instructions_file.read_text().splitlines() if line]
    if len(lines) != INSTRUCTIONS + 20:
        raise ValueError(f"{instructions_file}: expected {INSTRUCTIONS + 20} instructions, found {len(lines)}")
    _write_json(data / "alpaca_eval.json", [{"instruction": t, "output": "", "generator": "none",
                                             "dataset": "axw-neutral-80"} for t in lines[:INSTRUCTIONS]])
    for name in ("seed_sentences", "seed_instructions"):
        if not (data / name).exists():
            datasets.Dataset.from_dict({"input": []}).save_to_disk(str(data / name))
    return data


def write_metadata(upstream: Path, workdir: Path) -> Path:
    """Concept10's metadata cut to the workload's concepts (ids 0 and 1), where upstream's scripts look for it."""
    lines = (upstream / CONCEPT10 / "generate" / "metadata.jsonl").read_text().splitlines()[:CONCEPTS]
    if [json.loads(line)["concept_id"] for line in lines] != list(range(CONCEPTS)):
        raise ValueError("Concept10's metadata does not start with concepts 0, 1")
    path = workdir / "run" / "generate" / "metadata.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare(upstream: Path, workdir: Path, model_dir: Path, instructions_file: Path) -> None:
    print(f"prepared {write_model(model_dir, workdir)}, {write_data(instructions_file, workdir)}, "
          f"{write_metadata(upstream, workdir)}")
