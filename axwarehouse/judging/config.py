"""What a judge run is asked (:class:`JudgeConfig`), what defines its ratings (:func:`judge_hash`) and what it
reports (:class:`JudgeResult`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from axwarehouse.lineage import config_hash
from axwarehouse.judging.llm_judge import CRITERIA
from axwarehouse.judging.rubric import Rubric, ours, read_axbench_rubric

DEFAULT_JUDGE = "proxy"  # offline, measured (stages/judge_proxy.py); embedded:smollm2 is the offline LLM judge
AXBENCH_JUDGE = "openai:gpt-4o-mini"


@dataclass(frozen=True)
class JudgeConfig:
    """The options of `axw judge` and `axw judge validate` (which outputs, which judge, how it samples)."""

    judge: str = DEFAULT_JUDGE
    base_url: str | None = None
    concept_set: str | None = None  # None = every concept set
    methods: tuple[str, ...] = ()  # empty = every method with outputs
    criteria: tuple[str, ...] = CRITERIA
    temperature: float = 0.7  # AxBench's judge temperature
    max_tokens: int = 256
    seed: int = 42
    concurrency: int = 8
    timeout: float = 60.0
    chunk: int = 96  # ratings per written file
    batch_size: int = 16  # embedded judge: ratings per generate batch
    perplexity: bool = True
    device: str = "cpu"  # where embedded models run: the embedded judge and the perplexity model (not hashed)
    dtype: str = "auto"  # their dtype (auto = bfloat16 where native | bfloat16 | float32)
    concepts: tuple[int, ...] = ()  # only outputs of these concepts (a distributed shard; needs concept_set)
    rubric_from: str | None = None  # an AxBench checkout (or its prompt_templates.py) to read the rubric from

    def rubric(self) -> Rubric:
        """The rubric the LLM judge asks with: ours, or AxBench's read from ``rubric_from``."""
        return read_axbench_rubric(self.rubric_from) if self.rubric_from else ours()


def judge_hash(cfg: JudgeConfig, rubric: Rubric | None = None) -> str:
    """What defines an LLM rating besides the output: the rubric texts and the sampling parameters. The rubric's
    name joins the hash only when it is not ours, so ratings made with our wording before rubrics were named keep
    their hash (their templates are the same)."""
    rubric = rubric or ours()
    spec = {"prompts": {k: rubric.templates[k] for k in sorted(rubric.templates)}, "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    if not rubric.is_ours:
        spec["rubric"] = rubric.name
    return config_hash(spec)


@dataclass
class JudgeResult:
    """What an `axw judge` run did: ratings written, failures by kind, perplexities, calls and cache hits."""

    judge: str = ""
    rubric: str = ""
    rated: int = 0
    skipped: int = 0
    parse_failures: dict[str, int] = field(default_factory=dict)
    transport_failures: int = 0
    expected: int = 0
    constrained: int = 0
    failed: int = 0  # ratings written with no score (parse failure not rescued by constrained decoding)
    perplexities: int = 0
    seconds: float = 0.0
    calls: int = 0
    cache_hits: int = 0

    def summary(self) -> str:
        """The lines `axw judge` prints."""
        if not self.rated and not self.perplexities:
            return f"judge {self.judge}: all {self.skipped} ratings present, nothing to do"
        fails = sum(self.parse_failures.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(self.parse_failures.items()))
        lines = [f"judge {self.judge} (rubric {self.rubric}): {self.rated} ratings in {self.seconds:.1f}s "
                 f"({self.calls} calls, {self.cache_hits} cache hits), {self.skipped} already present; "
                 f"parse failures {fails}" + (f" ({detail})" if detail else "")
                 + f"; constrained ratings {self.constrained}; expected scores {self.expected}"]
        if self.rated:
            lines.append(failed_line(self.failed))
        if self.transport_failures:
            lines.append(f"judge: {self.transport_failures} calls failed in transport (no row written; re-run to "
                         "retry)")
        if self.perplexities:
            lines.append(f"perplexity: {self.perplexities} outputs")
        return "\n".join(lines)


def failed_line(n: int) -> str:
    """The status line for ratings without a score, saying what the leaderboard does with them."""
    return (f"judge failures: {n} ratings without a valid rating (scored 0 on the steering leaderboard, AxBench's "
            "rule; `axw leaderboard steering --judge-failures drop` leaves them out)")
