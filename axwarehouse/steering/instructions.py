"""The steering instruction set and AxBench's per-concept draw and selection/test split (docs/axbench-recipes.md §4.1, §5.3).

The shipped set (``axwarehouse/data/steering_instructions``, provenance in its NOTICE.md) stands in for AlpacaEval.
Per concept, AxBench takes ``alpaca_eval_df.sample(n, random_state=concept_id)``: pandas draws that as
``RandomState(concept_id).choice(N, n, replace=False)``, reproduced here; the i-th drawn row is input_id i.
Split: ``cut = n - round(0.5 n)``; input_id < cut is the factor-selection part, the rest the held-out test part.

The shipped file's last :data:`JUDGE_CALIBRATION_SIZE` instructions are held out of steering: the proxy judge
calibrates its instruction and fluency thresholds on unsteered answers to them (:func:`judge_calibration_set`), so
those thresholds never depend on which steered outputs are rated, and no rated output answers a calibration
instruction. ``axw steer`` draws from the rest (:data:`DEFAULT_SET`); a user's instruction file may not contain them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axwarehouse.errors import AxwError
from axwarehouse.lineage import config_hash

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "data" / "steering_instructions" / "instructions.jsonl"
DEFAULT_SET = "axw-neutral-80"  # the shipped file minus the judge's calibration instructions
JUDGE_CALIBRATION_SET = "axw-neutral-judge-20"
JUDGE_CALIBRATION_SIZE = 20
SPLIT_RATIO = 0.5  # AxBench winrate_split_ratio


@dataclass(frozen=True)
class InstructionSet:
    name: str
    instructions: tuple[str, ...]  # index = instruction_id
    source: str

    def draw(self, concept_id: int, n: int) -> list[tuple[int, int, str]]:
        """(input_id, instruction_id, split) of concept ``concept_id``'s n instructions."""
        if n < 1:
            raise AxwError("--instructions must be at least 1")
        if n > len(self.instructions):
            raise AxwError(f"instruction set {self.name} has only {len(self.instructions)} instructions, "
                           f"{n} asked per concept")
        ids = np.random.RandomState(concept_id).choice(len(self.instructions), size=n, replace=False)
        cut = selection_cut(n)
        return [(i, int(ids[i]), "selection" if i < cut else "test") for i in range(n)]


def selection_cut(n: int) -> int:
    """Number of selection-split inputs among n (AxBench: n - round(0.5 n); Python's round, as upstream)."""
    return n - round(SPLIT_RATIO * n)


def load_instructions(path: Path | None = None) -> InstructionSet:
    """The shipped set, or a user file: JSONL with ``instruction`` (and optional ``instruction_id``) or plain text,
    one instruction per line. Raises AxwError naming the problem."""
    if path is None:
        shipped = _shipped()
        return InstructionSet(DEFAULT_SET, shipped.instructions[:-JUDGE_CALIBRATION_SIZE], shipped.source)
    path = Path(path)
    if not path.is_file():
        raise AxwError(f"instructions file not found: {path}")
    items = _read(path, "", str(path))
    held_out = set(judge_calibration_set().instructions)
    clash = next((k for k, t in enumerate(items.instructions) if t in held_out), None)
    if clash is not None:
        raise AxwError(f"{path}: instruction {clash} ({items.instructions[clash][:40]!r}) is one of the judge's "
                       "held-out calibration instructions (the last 20 of the shipped set); remove them from the file")
    name = f"{path.stem}-{config_hash(list(items.instructions))[:8]}"
    return InstructionSet(name, items.instructions, items.source)


def _shipped() -> InstructionSet:
    return _read(DEFAULT_FILE, "axw-neutral-100", "axwarehouse/data/steering_instructions (Apache-2.0, written for "
                                                  "axwarehouse)")


def judge_calibration_set() -> InstructionSet:
    """The shipped instructions held out of steering, on which the proxy judge calibrates (never drawn by steer)."""
    shipped = _shipped()
    return InstructionSet(JUDGE_CALIBRATION_SET, shipped.instructions[-JUDGE_CALIBRATION_SIZE:], shipped.source)


def _read(path: Path, name: str, source: str) -> InstructionSet:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    out: list[str] = []
    for k, line in enumerate(lines, 1):
        if path.suffix == ".jsonl":
            try:
                obj = json.loads(line)
                text = obj["instruction"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise AxwError(f"{path}:{k}: expected a JSON object with an 'instruction' field") from exc
            if "instruction_id" in obj and obj["instruction_id"] != len(out):
                raise AxwError(f"{path}:{k}: instruction_id must be dense and 0-based (got {obj['instruction_id']})")
        else:
            text = line
        if not isinstance(text, str) or not text.strip():
            raise AxwError(f"{path}:{k}: empty instruction")
        out.append(text.strip())
    if not out:
        raise AxwError(f"{path} holds no instructions")
    return InstructionSet(name, tuple(out), source)
