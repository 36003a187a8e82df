"""The three edits upstream AxBench needs to run offline on a CPU, applied to a checkout by exact string replacement.

Why: upstream's ``train.py`` and ``inference.py`` start a NCCL process group and pin a CUDA device unconditionally;
``train.py`` prunes GemmaScope SAE weights through neuronpedia.org and the Hugging Face hub on every run (only its
GemmaScopeSAE method uses them); and its chat-model list decides whether prompts get the chat template, so
SmolLM2-135M-Instruct has to be in it. Everything else of upstream runs as it is.

Written against stanfordnlp/axbench @ e9b8cd4783c983e350d78af76f3fb2b8b15fc7d3. Each edit replaces one snippet that
must occur exactly once; a file whose edit is already there is left alone. If upstream's text differs, nothing is
written and :class:`UpstreamChanged` names the file and snippet.
"""

from __future__ import annotations

from pathlib import Path

UPSTREAM_COMMIT = "e9b8cd4783c983e350d78af76f3fb2b8b15fc7d3"
MARK = "# axw-bench:"  # tags every edited line, so a reader of the checkout sees what is not upstream's

_DIST = ("dist.init_process_group(backend='nccl', init_method='env://')",
         "dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo', init_method='env://')"
         f"  {MARK} gloo on a CPU")
_DEVICE = ("    device = torch.device(f'cuda:{local_rank}')\n    torch.cuda.set_device(device)\n",
           f"    device = torch.device(f'cuda:{{local_rank}}' if torch.cuda.is_available() else 'cpu')  {MARK} CPU\n"
           "    if device.type == 'cuda':\n        torch.cuda.set_device(device)\n")
_SAE = ("    if rank == 0:\n        sae_params = save_pruned_sae(",
        f"    if rank == 0 and not os.environ.get('HF_HUB_OFFLINE'):  {MARK} needs neuronpedia.org; GemmaScopeSAE only\n"
        "        sae_params = save_pruned_sae(")
_CHAT = ("CHAT_MODELS = {\n",
         f'CHAT_MODELS = {{\n    "HuggingFaceTB/SmolLM2-135M-Instruct",  {MARK} the matched workload\'s chat model\n')

EDITS: dict[str, list[tuple[str, str]]] = {
    "axbench/scripts/train.py": [_DIST, _DEVICE, _SAE],
    "axbench/scripts/inference.py": [_DIST, _DEVICE],
    "axbench/utils/constants.py": [_CHAT],
}


class UpstreamChanged(RuntimeError):
    """The checkout's text is not the one the edits were written against."""


def edited(path: Path, text: str, edits: list[tuple[str, str]]) -> str:
    """``text`` with ``edits`` applied; an edit whose new text is present already counts as applied."""
    for old, new in edits:
        if text.count(new) == 1:
            continue
        if text.count(old) != 1:
            raise UpstreamChanged(f"{path}: expected exactly one occurrence of {old!r} (found {text.count(old)}); "
                                  f"the edits were written against axbench @ {UPSTREAM_COMMIT}")
        text = text.replace(old, new)
    return text


def apply(upstream: Path) -> list[str]:
    """Apply every edit to the checkout at ``upstream``; returns the files changed now (all checked before any
    is written)."""
    pending = {}
    for rel, edits in EDITS.items():
        path = upstream / rel
        text = path.read_text()
        new = edited(path, text, edits)
        if new != text:
            pending[path] = new
    for path, text in pending.items():
        path.write_text(text)
    return [str(p.relative_to(upstream)) for p in pending]
