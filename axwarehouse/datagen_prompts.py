"""Prompts and answer parsers of `axw generate` (docs/axbench-recipes.md §1.3–§1.5), written for axwarehouse.

Every prompt is one user message (no system message), as AxBench sends them. Each structured prompt starts with a
capitalised marker (``GENRE:``, ``RELATED WORDS:``, ...) so logs, the ``llm_calls`` ledger and test servers can
tell the steps apart. Parsers return ``(value, error)``; an error makes the client draw again, and the last error is
recorded in ``generation_failures``.
"""

from __future__ import annotations

import re

from axwarehouse.llm.client import check_answer
from axwarehouse.llm.types import Completion

GENRES = ("text", "code", "math")
EMPTY_CONCEPT = "EEEEE"  # AxBench's output_concept of shared negatives

GENRE_PROMPT = """GENRE: Decide which single genre fits the concept below best: Text, Code or Math.
Examples: "words about rivers and lakes" -> Text; "Python list comprehensions" -> Code; \
"fractions and ratios" -> Math; "error messages printed by compilers" -> Code.
Concept: {concept}
Reply with only one word (Text, Code or Math), or <NONE> if no genre fits."""

POSITIVE_PROMPT = """Answer the instruction below, and weave elements of this concept into the answer: "{concept}".
Avoid copying words from the concept description where you can. Keep the answer about the concept even if that \
makes it less coherent. Return only the plain-text answer.

Instruction: {instruction}"""

NEGATIVE_PROMPT = """Answer the instruction below naturally. Do not mention or allude to this concept in any way: \
"{concept}". Return only the plain-text answer.

Instruction: {instruction}"""

WORDS_PROMPT = """RELATED WORDS: List up to 10 common single English words that are closely related to the concept \
"{concept}", one word per line, with no numbering and no other text.
If the concept is overly broad (such as "any English word") or is about a specific technical term, program or fact, \
output only <NONE>."""

MEANING_PROMPT = """OTHER MEANING: The word below is related to the concept "{concept}". Give one other common \
meaning of the word that has nothing to do with that concept, as a short plain description. If it has no such \
meaning, output only <NONE>.
Word: {word}"""

JUDGE_PROMPT = """UNRELATED CHECK: Is the meaning below entirely unrelated to the concept "{concept}"? Any overlap, \
subset or instance relation counts as related. Reason briefly first, then finish with exactly "Answer: <YES>" \
(unrelated) or "Answer: <NO>" (related).
Meaning of "{word}": {meaning}"""

HARD_NEGATIVE_PROMPT = """Answer the instruction below. Use the word "{word}" in the middle of your answer (not at \
its start or end), in this sense: {meaning}. Do not mention or allude to the concept "{concept}". Keep the answer \
grammatical (syntactically valid if it is code). Begin your answer with the tag <FINAL>.

Instruction: {instruction}
Word: {word}"""

_LEADING_TAGS = re.compile(r"^(<[^>]*>\s*)+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*$")


def clean_instruction(text: str) -> str:
    """AxBench's instruction clean-up: strip spaces, periods and single quotes, then double quotes."""
    return text.strip(" .'").strip('"')


def clean_answer(text: str) -> str:
    """AxBench's answer clean-up: strip spaces and single quotes, then double quotes."""
    return text.strip(" '").strip('"')


def _structured(comp: Completion, parsed: tuple) -> tuple:
    """A structured answer that did not parse is 'truncated' if it hit the token limit, else 'malformed'."""
    value, err = parsed
    if err and comp.finish_reason == "length":
        return None, "truncated"
    return value, err


def parse_genre(comp: Completion) -> tuple[list[str] | None, str | None]:
    """docs/axbench-recipes.md §1.3: 'none' → [text]; else text/code/math in that order if each occurs. No genre word → malformed."""
    err = check_answer(comp, allow_truncation=True)
    if err:
        return None, err
    low = comp.text.lower()
    if "none" in low:
        return ["text"], None
    found = [g for g in GENRES if g in low]
    return _structured(comp, (found, None) if found else (None, "malformed: no genre named"))


def parse_text(comp: Completion) -> tuple[str | None, str | None]:
    """Free-text answers (positives, negatives). Hitting the token limit is fine: texts are cut to
    ``output_length`` target tokens anyway."""
    err = check_answer(comp, allow_truncation=True)
    if err:
        return None, err
    text = clean_answer(comp.text)
    return (text, None) if text else (None, "empty")


def parse_hard_negative(comp: Completion) -> tuple[str | None, str | None]:
    """Hard negatives: drop the leading <FINAL> (any leading tags), then as :func:`parse_text`."""
    err = check_answer(comp, allow_truncation=True)
    if err:
        return None, err
    text = clean_answer(_LEADING_TAGS.sub("", comp.text.strip()))
    return (text, None) if text else (None, "empty")


def parse_words(comp: Completion, limit: int = 10) -> tuple[list[str] | None, str | None]:
    """Related words, one per line (bullets/numbers and comma lists tolerated); <NONE> → []."""
    err = check_answer(comp, allow_truncation=True)
    if err:
        return None, err
    words: list[str] = []
    for line in comp.text.splitlines():
        for part in _BULLET.sub("", line).split(","):
            w = part.strip().strip(".").strip()
            if _WORD.match(w) and w.lower() not in (x.lower() for x in words):
                words.append(w)
    if words:
        return words[:limit], None
    if "<none>" in comp.text.lower() or comp.text.strip().lower() == "none":
        return [], None
    return _structured(comp, (None, "malformed: no single-word lines"))


def parse_meaning(comp: Completion) -> tuple[str | None, str | None]:
    """Another meaning of a word. A '<NONE>' or one-word meaning is a valid answer that drops the pair (docs/axbench-recipes.md §1.5
    step 3), returned as ''."""
    err = check_answer(comp, allow_truncation=True)
    if err:
        return None, err
    text = comp.text.strip()
    if "none" in text.lower() or len(text.split()) <= 1:
        return "", None
    return text, None


def parse_judge(comp: Completion) -> tuple[bool | None, str | None]:
    """Keep the pair when 'yes' occurs after the last 'Answer' (case-insensitive). No 'Answer' → malformed."""
    err = check_answer(comp, allow_truncation=True)
    if err:
        return None, err
    low = comp.text.lower()
    pos = low.rfind("answer")
    if pos < 0:
        return _structured(comp, (None, "malformed: no 'Answer:' verdict"))
    return "yes" in low[pos:], None
