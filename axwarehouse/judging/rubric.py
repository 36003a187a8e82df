"""Which rubric the LLM judge asks with: our own wording (default) or AxBench's, read from a user's checkout.

AxBench keeps its three judge templates as module-level string constants in
``axbench/evaluators/prompt_templates.py`` (``UNIDIRECTIONAL_PAIRWISE_EVALUATION_CONCEPT_RELEVANCE_TEMPLATE``,
``…_INSTRUCTION_RELEVANCE_TEMPLATE``, ``…_FLUENCY_TEMPLATE``) and fills them with ``str.format(concept=…,
instruction=…, sentence=…)`` (``axbench/evaluators/lm_judge.py``). We do not ship that prose: ``axw judge
--rubric-from PATH`` reads the file as *data* — parsed with :mod:`ast`, never imported or executed, so nothing in
the checkout runs — and uses the three strings verbatim, filling the same placeholders.

A rubric has a name stored in ``judge_scores.rubric``: ``axw-v1`` for ours, ``axbench:<12 hex>`` (hash of the
three templates) for AxBench's as read from a checkout, so two different checkouts never share a name.
"""

from __future__ import annotations

import ast
import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from axwarehouse.errors import AxwError
from axwarehouse.judging.llm_judge import CRITERIA, PROMPTS

OURS = "axw-v1"
#: the file inside an AxBench checkout, and the constant holding each criterion's template there
TEMPLATE_FILE = Path("axbench") / "evaluators" / "prompt_templates.py"
AXBENCH_NAMES = {
    "concept": "UNIDIRECTIONAL_PAIRWISE_EVALUATION_CONCEPT_RELEVANCE_TEMPLATE",
    "instruction": "UNIDIRECTIONAL_PAIRWISE_EVALUATION_INSTRUCTION_RELEVANCE_TEMPLATE",
    "fluency": "UNIDIRECTIONAL_PAIRWISE_EVALUATION_FLUENCY_TEMPLATE",
}
#: placeholders each template must contain (AxBench names the generation ``sentence``)
_REQUIRED = {"concept": {"concept", "sentence"}, "instruction": {"instruction", "sentence"},
             "fluency": {"sentence"}}
_ALLOWED = {"concept", "instruction", "sentence"}


@dataclass(frozen=True)
class Rubric:
    name: str  # axw-v1 | axbench:<hash>
    templates: dict[str, str]  # criterion -> template
    source: str | None = None  # the file read (None for ours)

    @property
    def is_ours(self) -> bool:
        return self.name == OURS

    def prompt(self, criterion: str, concept: str, instruction: str, generation: str) -> str:
        """The filled template (ours names the generation ``generation``, AxBench's ``sentence``)."""
        return self.templates[criterion].format(concept=concept, instruction=instruction, sentence=generation,
                                                generation=generation)


def ours() -> Rubric:
    return Rubric(OURS, dict(PROMPTS))


def _template_file(path: Path) -> Path:
    """The templates file from a checkout root, its ``axbench`` package folder, or the file itself."""
    path = path.expanduser()
    if path.is_file():
        return path
    for candidate in (path / TEMPLATE_FILE, path / TEMPLATE_FILE.relative_to("axbench")):
        if candidate.is_file():
            return candidate
    raise AxwError(f"--rubric-from {path}: no {TEMPLATE_FILE} there (give an AxBench checkout or that file)")


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def read_axbench_rubric(path: str | Path) -> Rubric:
    """AxBench's three judge templates from ``path`` (checkout root, package folder or the file), parsed with
    :mod:`ast` — module-level ``NAME = "..."`` assignments of plain string literals only; nothing is executed."""
    file = _template_file(Path(path))
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise AxwError(f"--rubric-from {file}: cannot parse as Python source ({exc.__class__.__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    found: dict[str, str] = {}
    wanted = {v: k for k, v in AXBENCH_NAMES.items()}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        if name not in wanted:
            continue
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            raise AxwError(f"--rubric-from {file}: {name} is not a plain string literal (line {node.lineno}); "
                           "only literal templates are read, nothing is evaluated")
        found[wanted[name]] = value.value  # a later assignment wins, as it would on import
    missing = [AXBENCH_NAMES[c] for c in CRITERIA if c not in found]
    if missing:
        raise AxwError(f"--rubric-from {file}: missing {', '.join(missing)}")
    for crit in CRITERIA:
        try:
            fields = _fields(found[crit])
        except ValueError as exc:
            raise AxwError(f"--rubric-from {file}: {AXBENCH_NAMES[crit]} is not a format template ({exc})") from None
        if fields - _ALLOWED or not _REQUIRED[crit] <= fields:
            raise AxwError(f"--rubric-from {file}: {AXBENCH_NAMES[crit]} has placeholders {sorted(fields)}; "
                           f"expected {sorted(_REQUIRED[crit])}")
    templates = {c: found[c] for c in CRITERIA}
    digest = hashlib.sha256("\x00".join(templates[c] for c in CRITERIA).encode()).hexdigest()[:12]
    return Rubric(f"axbench:{digest}", templates, str(file.resolve()))

